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


def test_api_messages_use_the_python_names_and_the_cli_its_flags() -> None:
    """Errors raised through the Python API named CLI flags (--zero-variance drop,
    --control, --nan-policy, ...); they now follow the interface in use."""
    import numpy as np
    import pandas as pd

    import permenrich

    rng = np.random.default_rng(0)
    expr = pd.DataFrame(rng.normal(size=(30, 6)), index=[f"g{i}" for i in range(30)],
                        columns=[f"s{i}" for i in range(6)])
    expr.iloc[3] = 1.0  # constant gene
    labels = ["A", "A", "A", "B", "B", "B"]
    sets = {"S": [f"g{i}" for i in range(15)]}
    cases = [
        (dict(zero_variance="error"), "zero_variance='drop'", "--zero-variance drop"),
        (dict(control="C"), "control='C' is not a class", "--control C is not a class"),
        (dict(nan_policy="zero"), "nan_policy= must be one of", "--nan-policy must be one of"),
        (dict(memory="lots"), "memory= must look like", "--memory must look like"),
        (dict(min_size=0), "min_size= must be a positive integer", "--min-size must be a positive integer"),
    ]
    for options, python, cli in cases:
        kwargs = dict(case="A", permutations=10, device="cpu") | options
        with pytest.raises(permenrich.PermenrichError) as info:
            permenrich.gsea(expr, labels, sets, **kwargs)
        assert python in str(info.value) and "--" not in str(info.value), options
        with cli_option_names(), pytest.raises(permenrich.PermenrichError) as info:
            permenrich.gsea(expr, labels, sets, **kwargs)
        assert cli in str(info.value), options
