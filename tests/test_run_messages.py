"""What a run tells its user: that kernels are being compiled (first run), that a run
will take very long, and timings that keep one-time costs apart from permutation time."""

import logging
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


def _compile(module: str):
    """A fresh function of ``module`` (not cached: it compiles when called)."""
    import numba

    def probe(x):
        return x + 1

    probe.__module__ = module
    return numba.njit(cache=False)(probe)


def test_the_compile_notice_is_said_once_when_a_permenrich_kernel_compiles(monkeypatch, caplog):
    _pipeline.watch_compilation()
    _pipeline.watch_compilation()  # idempotent: one listener
    monkeypatch.setitem(_pipeline._compile_notice, "given", False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        _compile("numpy.probe")(1)  # another package's code: nothing to say
        assert not caplog.records
        _compile("permenrich.probe")(1)
        _compile("permenrich.probe")(1)
    notices = [r for r in caplog.records if r.getMessage() == _pipeline.COMPILE_NOTICE]
    assert len(notices) == 1


def test_a_run_with_its_kernels_compiled_says_nothing(monkeypatch, caplog):
    expr, labels = _study()
    permenrich.genes(expr, labels, case="a", control="b", permutations=50, device="cpu")  # compiles if need be
    monkeypatch.setitem(_pipeline._compile_notice, "given", False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        permenrich.genes(expr, labels, case="a", control="b", permutations=50, device="cpu")
    assert not any("compiling" in r.getMessage() for r in caplog.records)


def test_a_process_loading_cached_kernels_says_nothing(tmp_path):
    """A new process loads the kernels from Numba's cache: no compile, no notice (before,
    any of eight kernels missing from the cache, used by this run or not, said it)."""
    import subprocess
    import sys

    gct, cls = _study_files(tmp_path)
    command = [sys.executable, "-m", "permenrich.cli", "genes", "--expr", str(gct), "--cls", str(cls),
               "--permutations", "20", "--device", "cpu"]
    subprocess.run([*command, "--out", str(tmp_path / "first")], capture_output=True, check=True)
    second = subprocess.run([*command, "--out", str(tmp_path / "second")], capture_output=True, text=True, check=True)
    assert "compiling" not in second.stderr


def _study_files(tmp_path):
    expr, labels = _study()
    gct = tmp_path / "x.gct"
    gct.write_text("#1.2\n30\t12\nNAME\tDescription\t" + "\t".join(expr.columns) + "\n" + "".join(
        f"{g}\tna\t" + "\t".join(map(str, row.tolist())) + "\n" for g, row in zip(expr.index, expr.to_numpy())))
    cls = tmp_path / "x.cls"
    cls.write_text("12 2 1\n# a b\n" + " ".join(labels) + "\n")
    return gct, cls


def test_cli_shows_the_compile_notice_on_stderr(monkeypatch, tmp_path, capsys):
    """Numba starting to compile one of permenrich's kernels during a CLI run (simulated:
    the kernels are compiled by now) is a WARNING line on stderr."""
    from numba.core import event

    from permenrich.backends import cpu
    from permenrich.modes import _shared

    def watch_and_compile():
        _pipeline.watch_compilation()
        with event.trigger_event("numba:compile", data={"dispatcher": cpu.ks_scores}):
            pass

    monkeypatch.setattr(_shared, "watch_compilation", watch_and_compile)
    monkeypatch.setitem(_pipeline._compile_notice, "given", False)
    gct, cls = _study_files(tmp_path)
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


def test_garbage_collection_pauses_while_a_run_reads_and_resumes_after(monkeypatch):
    """Reading makes many small containers and no cycles: the cyclic collector is off
    while a run prepares (also when preparing fails) and back on afterwards; a caller that
    had it off keeps it off."""
    import gc

    from permenrich.modes import _shared

    states = []
    load_study = _shared.load_study

    def recording_load_study(*args, **kwargs):
        states.append(gc.isenabled())
        return load_study(*args, **kwargs)

    monkeypatch.setattr(_shared, "load_study", recording_load_study)
    expr, labels = _study()
    permenrich.genes(expr, labels, case="a", control="b", permutations=20, device="cpu")
    assert states == [False] and gc.isenabled()
    with pytest.raises(OptionError, match="no-such-group"):
        permenrich.genes(expr, labels, case="a", control="no-such-group", permutations=20, device="cpu")
    assert gc.isenabled()
    gc.disable()
    try:
        permenrich.genes(expr, labels, case="a", control="b", permutations=20, device="cpu")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_warnings_are_kept_in_run_json_and_listed_by_the_report(tmp_path, capsys):
    """What a run warns about (here: 20 permutations set a p-value floor) is kept in
    attrs["run"]["warnings"] and run.json, also under --quiet, which silences only the
    console; the report lists it."""
    expr, labels = _study()
    table = permenrich.genes(expr, labels, case="a", control="b", permutations=20, device="cpu")
    assert any("no p-value can fall below" in w for w in table.attrs["run"]["warnings"])
    gct, cls = _study_files(tmp_path)
    out = tmp_path / "quiet"
    assert permenrich.cli.main(["genes", "--expr", str(gct), "--cls", str(cls), "--permutations", "20",
                                "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    assert "WARNING" not in capsys.readouterr().err
    import json

    recorded = json.loads((out / "run.json").read_text())["warnings"]
    assert any("no p-value can fall below" in w for w in recorded)
    pytest.importorskip("matplotlib")
    from permenrich.report import report

    html = report(out).read_text()
    assert "no p-value can fall below" in html and "The run gave no warnings" not in html


def test_notices_about_the_process_are_not_kept_with_the_run():
    """Kernels compiling or a long run ahead are said on the console, not kept as the
    run's warnings; repeated warnings are kept once."""
    log = logging.getLogger("permenrich")
    with runner.WarningsRecorded() as recorded:
        log.warning(_pipeline.COMPILE_NOTICE, extra=_pipeline.CONSOLE_ONLY)
        log.warning("genes dropped")
        log.warning("genes dropped")
    assert recorded.messages == ["genes dropped"]


def test_plain_python_still_prints_a_runs_warnings(tmp_path):
    """Recording a run's warnings (a handler on the package logger) must not silence
    them in a plain Python session, where logging's last resort prints them."""
    import subprocess
    import sys

    gct, cls = _study_files(tmp_path)
    code = (f"import permenrich; t = permenrich.genes({str(gct)!r}, {str(cls)!r}, permutations=20, device='cpu'); "
            "print(len(t.attrs['run']['warnings']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "no p-value can fall below" in done.stderr and done.stdout.strip() == "1"


def test_the_p_floor_warning_states_the_attainable_floor(caplog):
    """The warning said 1/labellings everywhere: 3 vs 3 two-sided reaches only 2/20 (a
    labelling and its complement score alike), 7 pairs two-sided 2/128 (no warning was
    given), and GSEA's sign-specific p about twice the floor; checked against the p-values
    the runs reach."""
    import logging

    rng = np.random.default_rng(3)
    values = rng.normal(size=(30, 14))
    values[0, :7] += 50.0  # as extreme as a gene can be
    expr = pd.DataFrame(values, index=[f"g{i}" for i in range(30)], columns=[f"s{j}" for j in range(14)])
    six = expr.iloc[:, [0, 1, 2, 7, 8, 9]]
    sets = {"S": [f"g{i}" for i in range(8)]}

    def said(run):
        with caplog.at_level(logging.WARNING, logger="permenrich"):
            caplog.clear()
            table = run()
        floors = [r.getMessage() for r in caplog.records if "no p-value can fall below" in r.getMessage()]
        return table, floors

    table, floors = said(lambda: permenrich.genes(six, ["a"] * 3 + ["b"] * 3, permutations=100, device="cpu"))
    assert table.pval.min() == 0.1 and "below 0.1 (2 x 1/20: each labelling's complement" in floors[0]
    table, floors = said(lambda: permenrich.genes(six, ["a"] * 3 + ["b"] * 3, permutations=100, device="cpu",
                                                  alternative="greater"))
    assert table.pval.min() == 0.05 and "below 0.05 (1/20)" in floors[0]
    sheet = pd.DataFrame({"group": ["a"] * 7 + ["b"] * 7, "pair": [f"p{i % 7}" for i in range(14)]},
                         index=expr.columns)
    table, floors = said(lambda: permenrich.genes(expr, sheet, groupby="group", case="a", control="b", pairs="pair",
                                                  permutations=1000, device="cpu"))
    assert table.pval.min() == 2 / 128 and "below 0.0156 (2 x 1/128" in floors[0]
    table, floors = said(lambda: permenrich.gsea(six, ["a"] * 3 + ["b"] * 3, sets, min_size=5, permutations=100,
                                                 device="cpu"))
    assert "below about 0.1 (2 x 1/20: a set's p counts only the null scores of its sign)" in floors[0]
    assert table.pval.min() >= 1 / table.n_null_same_sign.max()
    # a ratio turns into its inverse, not its negative: 1/20 is reached
    positive = six - six.min().min() + 1.0
    table, floors = said(lambda: permenrich.genes(positive, ["a"] * 3 + ["b"] * 3, permutations=100, device="cpu",
                                                  metric="ratio_of_classes"))
    assert table.pval.min() == 0.05 and "below 0.05 (1/20)" in floors[0]
    # ORA of the genes most extreme either way: a complement selects the same genes
    table, floors = said(lambda: permenrich.ora(None, {"S": [f"g{i}" for i in range(10)]}, expr=six,
                                                phenotype=["a"] * 3 + ["b"] * 3, permutations=100, device="cpu",
                                                top=5, min_size=5))
    assert "below 0.1 (2 x 1/20" in floors[0]
