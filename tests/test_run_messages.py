"""What a run tells its user: that kernels are being compiled (first run), that a run
will take very long, and timings that keep one-time costs apart from permutation time."""

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import permenrich
import permenrich.cli
from permenrich import _pipeline, runner
from permenrich.errors import OptionError


def _study():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(30, 12))
    expr = pd.DataFrame(values, index=[f"g{i}" for i in range(30)], columns=[f"s{i}" for i in range(12)])
    return expr, ["a"] * 6 + ["b"] * 6


def _dispatcher(index):
    return SimpleNamespace(_cache=SimpleNamespace(_cache_file=SimpleNamespace(_load_index=lambda: index)))


def test_kernels_compiled_reads_numbas_cache_index():
    assert _pipeline.kernels_compiled([_dispatcher({"sig": 1}), _dispatcher({"sig": 2})])
    assert not _pipeline.kernels_compiled([_dispatcher({"sig": 1}), _dispatcher({})])  # stale or missing


def test_first_run_says_it_is_compiling(monkeypatch, caplog):
    monkeypatch.setattr(_pipeline, "kernels_compiled", lambda dispatchers: False)
    expr, labels = _study()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        permenrich.genes(expr, labels, case="a", control="b", permutations=50, device="cpu")
    assert any("compiling kernels (first run only" in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.setattr(_pipeline, "kernels_compiled", lambda dispatchers: True)
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        permenrich.genes(expr, labels, case="a", control="b", permutations=50, device="cpu")
    assert not any("compiling" in r.getMessage() for r in caplog.records)


def test_cli_shows_the_compile_notice_on_stderr(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(_pipeline, "kernels_compiled", lambda dispatchers: False)
    expr, labels = _study()
    gct = tmp_path / "x.gct"
    gct.write_text("#1.2\n30\t12\nNAME\tDescription\t" + "\t".join(expr.columns) + "\n" + "".join(
        f"{g}\tna\t" + "\t".join(map(str, row.tolist())) + "\n" for g, row in zip(expr.index, expr.to_numpy())))
    cls = tmp_path / "x.cls"
    cls.write_text("12 2 1\n# a b\n" + " ".join(labels) + "\n")
    assert permenrich.cli.main(["genes", "--expr", str(gct), "--cls", str(cls), "--permutations", "20",
                                "--device", "cpu", "--out", str(tmp_path / "out")]) == 0
    assert "permenrich: WARNING: compiling kernels (first run only" in capsys.readouterr().err


def test_long_run_is_announced_after_its_second_batch(monkeypatch, caplog):
    monkeypatch.setattr(runner, "LONG_RUN_SECONDS", 0.0)
    expr, labels = _study()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        result = permenrich.genes(expr, labels, case="a", control="b", permutations=300, batch_size=50,
                                  device="cpu")
    warnings = [r.getMessage() for r in caplog.records if "will take about" in r.getMessage()]
    assert len(warnings) == 1 and "300 permutations at" in warnings[0]
    timings = result.attrs["run"]["timings"]
    assert timings["first_batch_seconds"] >= 0 and timings["per_permutation_ms"] > 0
    assert result.attrs["run"]["per_permutation_ms"] == timings["per_permutation_ms"]


def test_absurd_permutation_counts_are_refused_before_reading():
    with pytest.raises(OptionError, match=r"permutations=1000000000000 is above the limit of 10,000,000,000"):
        permenrich.genes("no-such-file.gct", None, permutations=10**12)
