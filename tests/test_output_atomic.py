"""A run's output folder appears whole or not at all: one rename publishes it, an earlier
output is replaced as a whole, a user's folder is never touched, a busy folder is refused,
and a full disk or an interrupt leaves the previous output and no temporary folder."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.cli import main
from permenrich.errors import PermenrichError
from permenrich.io import check_output_dir
from permenrich.io import output as output_module


def _table(name: str = "first") -> pd.DataFrame:
    table = pd.DataFrame({"gene": ["G1", "G2"], "statistic": [1.5, -0.25]})
    table.attrs["run"] = {"command": name, "versions": {"permenrich": permenrich.__version__}}
    return table


def _with_contrasts(names: list[str]) -> pd.DataFrame:
    parts = {name: _table(name) for name in names}
    combined = pd.concat([part.assign(contrast=name) for name, part in parts.items()], ignore_index=True)
    combined.attrs["run"] = {"command": "contrasts"}
    combined.attrs["per_contrast"] = parts
    return combined


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _write_gct(path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(8, 1, size=(60, 8))
    values[:10, :4] += 2
    lines = ["#1.2", "60\t8", "\t".join(["NAME", "Description", *(f"S{i}" for i in range(8))])]
    lines += ["\t".join([f"G{g}", "na", *(f"{v:.6g}" for v in row)]) for g, row in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(autouse=True)
def python_handles_ctrl_c():
    """Python's own Ctrl-C handler, whatever the test runner inherited: a shell starts
    background jobs with SIGINT ignored, and an ignored Ctrl-C (rightly) stays ignored."""
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, saved)


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    _write_gct(data / "expr.gct")
    (data / "pheno.cls").write_text("8 2 1\n# a b\na a a a b b b b\n")
    (tmp_path / "work").mkdir()
    return tmp_path


def _genes(study: Path, *extra: str) -> list[str]:
    return ["genes", "--expr", str(study / "data" / "expr.gct"), "--cls", str(study / "data" / "pheno.cls"),
            "--permutations", "20", "--quiet", "--out", str(study / "work" / "out"), *extra]


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, list[str]]:
    status = main(args)
    return status, capsys.readouterr().err.strip().splitlines()


def test_publish_replaces_the_previous_output_as_a_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    permenrich.write_results(_with_contrasts(["A", "B"]), out)
    assert sorted(os.listdir(out)) == ["A.tsv", "B.tsv", "results.tsv", "run.json"]
    permenrich.write_results(_with_contrasts(["A"]), out)
    assert sorted(os.listdir(out)) == ["A.tsv", "results.tsv", "run.json"]  # no stale B.tsv
    run = json.loads((out / "run.json").read_text())
    assert run["output"] == {"written_by": "permenrich", "files": ["results.tsv", "A.tsv", "run.json"]}
    assert run["contrast_files"] == {"A": "A.tsv"}
    assert os.listdir(tmp_path) == ["out"]  # no temporary folder, no lock file
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # what mkdir gives, not mkdtemp's 0700


def test_a_folder_permenrich_did_not_write_is_refused_before_computing(study: Path, capsys, monkeypatch) -> None:
    out = study / "work" / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(permenrich.api, "genes", lambda *a, **k: pytest.fail("computed before checking --out"))
    status, lines = _run(capsys, _genes(study))
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("permenrich: error: --out ") and "'notes.txt'" in lines[0]
    assert _snapshot(out) == {"notes.txt": b"mine"}
    # An earlier permenrich output with a file the user added is not replaced either.
    out.joinpath("notes.txt").unlink()
    permenrich.write_results(_table(), out)
    (out / "plot.png").write_bytes(b"png")
    with pytest.raises(PermenrichError, match="'plot.png', which permenrich did not write"):
        check_output_dir(out, create=False)


def test_check_output_dir_accepts_empty_previous_and_legacy_outputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty") == (tmp_path / "empty").resolve()
    legacy = tmp_path / "legacy"  # written before run.json listed its files
    legacy.mkdir()
    (legacy / "run.json").write_text(json.dumps({"versions": {"permenrich": "0.1.0"}, "contrasts": {"x": {}}}))
    (legacy / "results.tsv").write_text("")
    (legacy / "x.tsv").write_text("")
    check_output_dir(legacy, create=False)
    permenrich.write_results(_table(), legacy)
    assert sorted(os.listdir(legacy)) == ["results.tsv", "run.json"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "run.json").write_text('{"tool": "not permenrich"}')
    with pytest.raises(PermenrichError, match="permenrich did not write"):
        check_output_dir(tmp_path / "other")
    with pytest.raises(PermenrichError, match="out_dir= is empty"):
        check_output_dir("")


def test_out_empty_string_is_one_line(study: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(study / "work")
    args = _genes(study)
    args[-1] = ""
    status, lines = _run(capsys, args)
    assert status == 2 and lines == ["permenrich: error: --out is empty; give an output folder, e.g. --out results"]
    assert os.listdir(study / "work") == []


@pytest.mark.parametrize("previous", [False, True])
def test_disk_full_is_one_line_and_leaves_the_previous_output(study: Path, capsys, monkeypatch, previous) -> None:
    out = study / "work" / "out"
    if previous:
        assert main(_genes(study)) == 0
        before = _snapshot(out)
    capsys.readouterr()
    real_write = output_module._write_file
    calls = []

    def full_disk(path: Path, content: object) -> None:
        calls.append(path.name)
        if len(calls) == 2:  # the first file is written: the temporary folder is not empty
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, content)

    monkeypatch.setattr(output_module, "_write_file", full_disk)
    status, lines = _run(capsys, _genes(study))
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"permenrich: error: cannot write the output to --out {str(out)!r}: "
                               "No space left on device while writing run.json; ")
    if previous:
        assert "the previous output in" in lines[0] and "is untouched" in lines[0]
        assert _snapshot(out) == before
        assert os.listdir(study / "work") == ["out"]
    else:
        assert "no output was written" in lines[0]
        assert os.listdir(study / "work") == []


def test_a_busy_output_folder_is_refused(study: Path, capsys, monkeypatch) -> None:
    fcntl = pytest.importorskip("fcntl", reason="flock is POSIX")
    lock = study / "work" / ".out.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another run holds it
    monkeypatch.setattr(permenrich.api, "genes", lambda *a, **k: pytest.fail("computed while --out is busy"))
    try:
        status, lines = _run(capsys, _genes(study))
    finally:
        os.close(fd)
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"permenrich: error: another permenrich run is writing to --out "
                               f"{str(study / 'work' / 'out')!r}")
    assert os.listdir(study / "work") == [".out.lock"]  # the other run's lock, left alone


@pytest.mark.parametrize("previous", [False, True])
def test_interrupt_between_files_leaves_the_previous_output(study: Path, capsys, monkeypatch, previous) -> None:
    out = study / "work" / "out"
    if previous:
        assert main(_genes(study)) == 0
        before = _snapshot(out)
    capsys.readouterr()
    real_write = output_module._write_file

    def interrupted(path: Path, content: object) -> None:
        if path.name == "run.json":
            raise KeyboardInterrupt
        real_write(path, content)

    monkeypatch.setattr(output_module, "_write_file", interrupted)
    status, lines = _run(capsys, _genes(study))
    assert status == 130
    if previous:
        assert lines == [f"permenrich: interrupted; no output was written; {out} is untouched"]
        assert _snapshot(out) == before
        assert os.listdir(study / "work") == ["out"]
    else:
        assert lines == ["permenrich: interrupted; no output was written"]
        assert os.listdir(study / "work") == []


def test_interrupt_during_publishing_waits_and_is_reported_truthfully(study: Path, capsys, monkeypatch) -> None:
    """Ctrl-C between the renames is held back until the new output is in place; the
    message then says the output is complete."""
    assert main(_genes(study)) == 0
    capsys.readouterr()
    real_swap = output_module._swap_in

    def swap_with_ctrl_c(tmp: Path, out: Path, replace: bool) -> None:
        signal.raise_signal(signal.SIGINT)  # deferred: must not split the renames
        real_swap(tmp, out, replace)

    monkeypatch.setattr(output_module, "_swap_in", swap_with_ctrl_c)
    status, lines = _run(capsys, _genes(study, "--seed", "7"))
    out = study / "work" / "out"
    assert status == 130 and lines == [f"permenrich: interrupted after the output was complete; wrote {out}"]
    assert json.loads((out / "run.json").read_text())["parameters"]["seed"] == 7
    assert os.listdir(study / "work") == ["out"]


def test_what_a_killed_run_left_is_recovered(tmp_path: Path) -> None:
    """Killed between its two renames, a run leaves no OUT, its previous output in
    .OUT.old-* and its new one in .OUT.tmp-*: the next run restores, then replaces."""
    out = tmp_path / "out"
    permenrich.write_results(_table("previous"), out)
    os.rename(out, tmp_path / ".out.old-0123abcd")
    (tmp_path / ".out.tmp-89abcdef").mkdir()
    (tmp_path / ".out.tmp-89abcdef" / "results.tsv").write_text("half")
    (tmp_path / ".outer.tmp-89abcdef").mkdir()  # another folder's: left alone

    def no_space(path: Path, content: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    real_write = output_module._write_file
    output_module._write_file = no_space
    try:
        with pytest.raises(PermenrichError, match="the previous output in .* is untouched"):
            permenrich.write_results(_table("new"), out)
    finally:
        output_module._write_file = real_write
    assert json.loads((out / "run.json").read_text())["command"] == "previous"  # restored
    assert sorted(os.listdir(tmp_path)) == [".outer.tmp-89abcdef", "out"]
    permenrich.write_results(_table("new"), out)
    assert json.loads((out / "run.json").read_text())["command"] == "new"


def test_failed_run_removes_the_parent_folders_it_created(study: Path, capsys) -> None:
    args = _genes(study, "--metric", "no_such_metric")
    args[args.index("--out") + 1] = str(study / "work" / "a" / "b" / "out")
    status, lines = _run(capsys, args)
    assert status == 2 and "no_such_metric" in lines[0]
    assert os.listdir(study / "work") == []


def test_interrupts_are_deferred_inside_the_publishing_block() -> None:
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with output_module._interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            steps.append("after the signal")
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_lock_is_reentrant_in_its_thread_and_refuses_another(tmp_path: Path) -> None:
    import threading

    out = tmp_path / "out"
    errors = []
    with output_module.output_lock(out):
        permenrich.write_results(_table(), out)  # the holder itself may publish
        thread = threading.Thread(target=lambda: errors.append(_refusal(out)))
        thread.start()
        thread.join()
    assert errors == ["another permenrich run in this process is writing to out_dir"]
    assert os.listdir(tmp_path) == ["out"]  # the lock file is gone with the lock


def _refusal(out: Path) -> str:
    try:
        permenrich.write_results(_table(), out)
    except PermenrichError as error:
        return str(error).split(" '")[0].split("='")[0]
    return "written"


def test_an_out_name_too_long_for_the_file_system_is_refused_before_computing(tmp_path):
    """A 245-character --out fitted the file system but '.OUT.tmp-XXXXXXXX' beside it did
    not: a traceback after all the computing (300 characters: one at the start)."""
    from permenrich.errors import OptionError
    from permenrich.io.output import check_output_dir

    for length, said in ((245, "its name is too long for the file system (259 bytes with the temporary folder"),
                         (300, "its name is too long for the file system (314 bytes")):
        with pytest.raises(OptionError, match=re.escape(said)):
            check_output_dir(tmp_path / ("y" * length))
    with pytest.raises(OptionError, match=r"the folder name 'xxxx.*is too long for the file system \(300 bytes"):
        check_output_dir(tmp_path / ("x" * 300) / "out")
    assert check_output_dir(tmp_path / ("z" * 200)).is_dir()
    assert not any(p.name.startswith(("y", "x")) for p in tmp_path.iterdir())
