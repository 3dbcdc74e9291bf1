"""Options named in the words of the interface in use (:func:`permenrich.errors.option`)."""

from __future__ import annotations

import pytest

from permenrich.errors import cli_option_names, option


def test_option_python_and_cli_spellings() -> None:
    assert option("control") == "control="
    assert option("zero_variance", "drop") == "zero_variance='drop'"
    assert option("top", 20) == "top=20"
    with cli_option_names():
        assert option("control") == "--control"
        assert option("zero_variance", "drop") == "--zero-variance drop"
        assert option("top", 20) == "--top 20"
        assert option("phenotype") == "--cls/--sample-sheet"
    assert option("nan_policy") == "nan_policy="  # restored on exit


def test_cli_spelling_is_restored_after_an_error() -> None:
    with pytest.raises(RuntimeError), cli_option_names():
        raise RuntimeError
    assert option("memory") == "memory="
