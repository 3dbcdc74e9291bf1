"""Output directory checks and atomic writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from permenrich.errors import PermenrichError
from permenrich.io import atomic_write_table, atomic_write_text, check_output_dir


def test_check_output_dir_creates_parents(tmp_path: Path) -> None:
    out = check_output_dir(tmp_path / "a" / "b")
    assert out.is_dir() and out.is_absolute()
    assert os.listdir(out) == []  # the write probe leaves nothing behind
    assert check_output_dir(out) == out  # existing directory is fine


def test_check_output_dir_rejects_a_file(tmp_path: Path) -> None:
    file = tmp_path / "results"
    file.write_text("x")
    with pytest.raises(PermenrichError, match="results.*is a file"):
        check_output_dir(file)
    with pytest.raises(PermenrichError, match="cannot create"):
        check_output_dir(file / "sub")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to read-only directories")
def test_check_output_dir_rejects_unwritable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermenrichError, match="locked.*not writable"):
            check_output_dir(locked)
    finally:
        locked.chmod(0o700)


def test_atomic_write_text_replaces(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "second\r\n")
    assert target.read_bytes() == b"second\r\n"
    assert os.listdir(tmp_path) == ["run.json"]
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_leaves_no_temp_file_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.tsv"
    target.write_text("old")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    with pytest.raises(TypeError):
        atomic_write_text(target, 123)  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == ["out.tsv"]
    assert target.read_text() == "old"


def test_atomic_write_table_round_trips_floats(tmp_path: Path) -> None:
    df = pd.DataFrame({"name": ["a", "b"], "nes": [1 / 3, -2.5e-17], "n": [1, 2]})
    path = tmp_path / "t.tsv"
    atomic_write_table(df, path)
    back = pd.read_csv(path, sep="\t")
    pd.testing.assert_frame_equal(back, df)
    assert np.array_equal(back["nes"].to_numpy(), df["nes"].to_numpy())
    assert path.read_text().splitlines()[0] == "name\tnes\tn"


def test_check_output_dir_reports_failed_write_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(PermenrichError, match="'.*ro' is not writable.*Permission denied.*out_dir="):
        check_output_dir(tmp_path / "ro")
