"""Output directory checks and atomic writers.

Results are written to a temporary file in the destination directory and renamed over
the target, so a crash or a full disk never leaves a half-written table behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from permenrich.errors import OptionError

__all__ = ["check_output_dir", "atomic_write_text", "atomic_write_table"]


def check_output_dir(path: str | Path, *, create: bool = True) -> Path:
    """Make sure results can be written to ``path``, before any computing starts.

    Parameters
    ----------
    path : str or Path
        Output directory.
    create : bool
        Create it (with its parents) if missing. With ``create=False`` nothing is
        created: the directory, or its nearest existing parent, is only checked, so that
        a run that fails later leaves no trace.

    Returns
    -------
    pathlib.Path
        The directory, absolute.

    Raises
    ------
    OptionError
        ``path`` exists and is not a directory, cannot be created, or is not writable
        (a :class:`~permenrich.errors.PermenrichError`).
    """
    directory = Path(path).expanduser()
    if directory.exists() and not directory.is_dir():
        raise OptionError(
            f"output directory {str(path)!r} exists and is a file; choose another --out or remove the file"
        )
    probe = directory
    if create:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OptionError(
                f"cannot create output directory {str(path)!r} ({exc.strerror or exc}); choose another --out"
            ) from exc
    else:
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise OptionError(f"cannot create output directory {str(path)!r}: {str(probe)!r} is a file; "
                              "choose another --out")
    # os.access is unreliable (root, ACLs, network file systems): try a real file.
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise OptionError(
            f"output directory {str(path)!r} is not writable ({exc.strerror or exc}); choose another --out "
            "or fix its permissions"
        ) from exc
    return directory.resolve()


def _current_umask() -> int:
    # os.umask can only be read by setting it; restore at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        Target file; its directory must exist.
    text : str
        Content, written as is (no newline translation).

    Notes
    -----
    The text goes to a temporary file in the same directory, which is flushed, fsynced
    and renamed over ``path`` with :func:`os.replace`. On any error the temporary file
    is removed and ``path`` is left as it was.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            if hasattr(os, "fchmod"):
                # mkstemp creates 0600; give the result the permissions open() would.
                os.fchmod(handle.fileno(), 0o666 & ~_current_umask())
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (POSIX); best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` as a tab-separated table atomically.

    Parameters
    ----------
    df : pandas.DataFrame
        Written without its index; floats at full (round-trip) precision.
    path : str or Path
        Target file.
    """
    atomic_write_text(path, df.to_csv(sep="\t", index=False, lineterminator="\n"))
