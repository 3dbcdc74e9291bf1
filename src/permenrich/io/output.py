"""Output folders that appear whole or not at all, and atomic single-file writers.

A run's output folder OUT is published in one step (:func:`write_output_dir`):

1. OUT's lock is taken: ``.OUT.lock`` beside OUT, held with ``flock`` (released by the
   kernel if the process dies), so a second run on the same OUT is refused at once.
2. Every file is written into a new sibling folder ``.OUT.tmp-XXXXXXXX`` (same parent,
   hence same file system), each file fsynced, then the folder itself.
3. OUT is published with one rename. An OUT that holds an earlier permenrich output (its
   ``run.json`` lists the files permenrich wrote there) or nothing is first renamed aside
   to ``.OUT.old-XXXXXXXX``; the new folder is renamed in, and the old one removed.
   Ctrl-C and SIGTERM are held back during these renames.

Crash windows (the process killed outright, e.g. SIGKILL or a power cut, so no clean-up
runs): during step 2, OUT is untouched and a stale ``.OUT.tmp-*`` is left; between the
two renames of step 3, OUT is missing, the previous complete output is in
``.OUT.old-*`` and the new complete output in ``.OUT.tmp-*``; after them, OUT is the new
output and a stale ``.OUT.old-*`` may be left. The next run on OUT, holding the lock,
first puts a lone ``.OUT.old-*`` back as OUT and removes the stale siblings. An existing
folder that is not a permenrich output, or that also holds files permenrich did not
write, is never replaced: it is refused before any computing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from permenrich.errors import OptionError, option

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no inter-process lock, see output_lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["check_output_dir", "output_lock", "write_output_dir", "atomic_write_text", "atomic_write_table"]

logger = logging.getLogger(__name__)

MANIFEST = "run.json"
# Files the OS drops into folders a user has browsed; not the user's data, so they do not
# stop an earlier output from being replaced.
_OS_CLUTTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})

_held_locks: dict[Path, int] = {}  # OUT -> id of the thread holding its lock in this process
_held_guard = threading.Lock()


def _out(given: object = None) -> str:
    """The output option (with the folder given) as the caller spells it:
    ``--out 'results'`` on the command line, ``out_dir='results'`` from Python."""
    flag = option("out_dir")
    if given is None:
        return flag
    return f"{flag} {given!r}" if flag.startswith("--") else f"{flag}{given!r}"


def _sibling_pattern(out: Path, kind: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(out.name)}\.{kind}-[0-9a-f]{{8}}")


def _sibling(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}-{secrets.token_hex(4)}"


def _check_name_lengths(out: Path, given: str) -> None:
    """Refuse an ``--out`` whose name, or the names written beside it while a run
    publishes (``.OUT.tmp-XXXXXXXX``, the longest), exceed the file system's limit:
    found only when the output is written, after all the computing, it was a traceback."""
    limit = 255
    for probe in out.parents:  # the nearest folder that exists says its file system's limit
        try:
            if probe.is_dir():
                limit = os.pathconf(probe, "PC_NAME_MAX")
                break
        except (OSError, ValueError, AttributeError):
            continue
    longest = _sibling(out, "tmp").name
    for part in (*out.parts[1:-1], longest):
        if len(os.fsencode(part)) > limit:
            said = "its name" if part == longest else f"the folder name {part[:40]!r}..."
            raise OptionError(f"{_out(given)}: {said} is too long for the file system ({len(os.fsencode(part))} "
                              f"bytes{' with the temporary folder written beside it' if part == longest else ''}, "
                              f"at most {limit}); choose a shorter {_out()}")


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def _listed_files(directory: Path) -> set[str] | None:
    """The names permenrich wrote in ``directory`` according to its run.json, or None
    when ``directory`` holds no permenrich output."""
    try:
        run = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(run, dict):
        return None
    output = run.get("output")
    if isinstance(output, dict) and str(output.get("written_by", "")).startswith("permenrich"):
        return {str(name) for name in output.get("files") or ()} | {MANIFEST} | _report_of(directory)
    if isinstance(run.get("versions"), dict) and "permenrich" in run["versions"]:
        # Written before run.json listed its files: results.tsv and one table per contrast.
        return {MANIFEST, "results.tsv", *(f"{name}.tsv" for name in run.get("contrasts") or ())}
    return None


def _report_of(directory: Path) -> set[str]:
    """``{"report.html"}`` when ``directory`` holds a report that ``permenrich report``
    added after the run (it carries permenrich's generator tag), else empty: such a
    report belongs to the output and is replaced with it."""
    from permenrich.report import GENERATOR_MARK, REPORT_FILE

    try:
        with open(directory / REPORT_FILE, encoding="utf-8", errors="replace") as handle:
            head = handle.read(1024)
    except OSError:
        return set()
    return {REPORT_FILE} if GENERATOR_MARK in head else set()


def _check_existing(directory: Path, given: str) -> bool:
    """Whether ``directory`` exists; raise unless it is absent, empty, or an earlier
    permenrich output holding only the files it lists."""
    if not directory.exists():
        return False
    if not directory.is_dir():
        raise OptionError(f"output directory {given!r} exists and is a file; choose another {_out()} or remove "
                          "the file")
    entries = sorted(set(os.listdir(directory)) - _OS_CLUTTER)
    if not entries:
        return True
    listed = _listed_files(directory)
    if listed is None:
        raise OptionError(f"{_out(given)} is a folder that permenrich did not write (it holds {entries[0]!r}); "
                          "its files would be replaced: give a new or empty folder, or the folder of an earlier "
                          "permenrich run")
    foreign = [name for name in entries if name not in listed]
    if foreign:
        raise OptionError(f"{_out(given)} holds an earlier permenrich output and also {foreign[0]!r}, which "
                          "permenrich did not write; the folder is replaced as a whole, so move that file out "
                          f"or choose another {_out()}")
    return True


def _probe_writable(directory: Path, message: str) -> None:
    # os.access is unreliable (root, ACLs, network file systems): try a real file.
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise OptionError(message.format(reason=exc.strerror or exc)) from exc


def check_output_dir(path: str | os.PathLike, *, create: bool = True) -> Path:
    """Make sure a run's output can be published as ``path``, before any computing starts.

    Parameters
    ----------
    path : str or PathLike
        Output directory (``--out``).
    create : bool
        Create it, empty, with its parents if missing. With ``create=False`` nothing is
        created: the directory, or its nearest existing parent, is only checked, so that
        a run that fails later leaves no trace.

    Returns
    -------
    pathlib.Path
        The directory, absolute, symbolic links resolved (the output replaces the real
        folder, not the link).

    Raises
    ------
    OptionError
        ``path`` is empty or a file system root; exists and is a file; is a non-empty
        folder that is not an earlier permenrich output, or that also holds files
        permenrich did not write; cannot be created; or it or its parent folder is not
        writable (a :class:`~permenrich.errors.PermenrichError`).
    """
    given = os.fspath(path)
    if not given.strip():
        raise OptionError(f"{_out()} is empty; give an output folder, e.g. {option('out_dir', 'results')}")
    directory = Path(given).expanduser().resolve()
    if directory.parent == directory:
        raise OptionError(f"{_out(given)} is a file system root; give a folder inside it")
    _check_name_lengths(directory, given)
    exists = _check_existing(directory, given)
    if create and not exists:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OptionError(
                f"cannot create output directory {given!r} ({exc.strerror or exc}); choose another {_out()}"
            ) from exc
    probe = directory.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OptionError(f"cannot create output directory {given!r}: {str(probe)!r} is a file; "
                          f"choose another {_out()}")
    if exists:  # its files are removed once the new output is in place
        _probe_writable(directory, f"output directory {given!r} is not writable ({{reason}}); choose another {_out()} "
                                   "or fix its permissions")
    _probe_writable(probe, f"output directory {given!r} is not writable ({{reason}} in {str(probe)!r}, where "
                           "permenrich writes the new output before renaming it into place); choose another "
                           f"{_out()} or fix its permissions")
    return directory


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block ends, so that the renames that
    publish an output, and the clean-up after a failure, are never cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers run only in the main thread: nothing to defer here
        return
    received: list[int] = []
    saved = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None:  # None: installed outside Python, cannot be restored
            saved[signum] = signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


def _acquire(lock_file: Path, given: str) -> int:
    """Open and flock ``lock_file``; returns the descriptor."""
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover - no flock: a concurrent run is not detected
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise OptionError(f"another permenrich run is writing to {_out(given)} (it holds {str(lock_file)!r}); "
                              f"wait for it to finish or choose another {_out()}") from exc
        except BaseException:
            os.close(fd)
            raise
        # The previous holder unlinks the file before it lets go: lock the file now at the path.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock_file)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of output folder ``path`` for the duration of the block.

    The lock is ``.OUT.lock`` in OUT's parent, held with ``flock`` and removed on exit;
    missing parent folders are created and, if they are still empty on exit (nothing was
    published), removed again. Re-entrant within a thread: the CLI holds it for the
    whole run and :func:`write_output_dir` takes it again to publish.

    Parameters
    ----------
    path : str or PathLike
        Output directory; resolved as in :func:`check_output_dir`.

    Yields
    ------
    pathlib.Path
        The output directory, absolute.

    Raises
    ------
    OptionError
        Another process or thread holds the lock, or the lock file cannot be created.
    """
    given = os.fspath(path)
    out = Path(given).expanduser().resolve()
    me = threading.get_ident()
    with _held_guard:
        holder = _held_locks.get(out)
    if holder == me:  # taken again inside the block that holds it: the outer block releases it
        yield out
        return
    if holder is not None:
        raise OptionError(f"another permenrich run in this process is writing to {_out(given)}; "
                          f"wait for it to finish or choose another {_out()}")
    created = [parent for parent in reversed(out.parents) if not parent.exists()]
    lock_file = _lock_path(out)
    fd = None
    try:
        with _interrupts_deferred():  # a Ctrl-C here must not leave the lock taken but unregistered
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                fd = _acquire(lock_file, given)
            except OSError as exc:
                raise OptionError(f"cannot lock {_out(given)} ({exc.strerror or exc} for {str(lock_file)!r}); "
                                  f"choose another {_out()} or fix the folder's permissions") from exc
            with _held_guard:
                _held_locks[out] = me
        yield out
    finally:
        with _interrupts_deferred():
            if fd is not None:
                with _held_guard:
                    _held_locks.pop(out, None)
                with contextlib.suppress(OSError):
                    os.unlink(lock_file)  # while still holding it: see _acquire
                os.close(fd)
            _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this run created, deepest first, as long as they are empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def _recover(out: Path) -> None:
    """Under the lock: undo what a killed run left (see the module notes)."""
    olds = [p for p in out.parent.iterdir() if _sibling_pattern(out, "old").fullmatch(p.name)]
    if not out.exists() and olds:
        # Killed between its two renames: the previous output is complete; put it back.
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.rename(newest, out)
        logger.warning("restored %s from %s, left by an interrupted run", out, newest.name)
    for stale in out.parent.iterdir():
        if _sibling_pattern(out, "old").fullmatch(stale.name) or _sibling_pattern(out, "tmp").fullmatch(stale.name):
            shutil.rmtree(stale, ignore_errors=True)


def _write_file(path: Path, content: str | pd.DataFrame) -> None:
    """Create ``path`` (which must not exist) and fsync it; tables as TSV."""
    with open(path, "x", encoding="utf-8", newline="") as handle:
        if isinstance(content, str):
            handle.write(content)
        else:
            content.to_csv(handle, sep="\t", index=False, lineterminator="\n")
        handle.flush()
        os.fsync(handle.fileno())


def _swap_in(tmp: Path, out: Path, replace: bool) -> None:
    """Publish ``tmp`` as ``out``; an existing ``out`` is moved aside, then removed."""
    if not replace:
        os.rename(tmp, out)
        _fsync_directory(out.parent)
        return
    aside = _sibling(out, "old")
    os.rename(out, aside)
    try:
        os.rename(tmp, out)
    except BaseException:
        try:
            os.rename(aside, out)
        except OSError as exc:
            raise OptionError(f"could not publish the output, nor put the previous output back: it is in "
                              f"{str(aside)!r} ({exc.strerror or exc}); rename it to {str(out)!r}") from exc
        raise
    _fsync_directory(out.parent)
    try:
        shutil.rmtree(aside)
    except OSError as exc:
        logger.warning("wrote %s, but could not remove the previous output moved to %s (%s); remove it by hand",
                       out, aside, exc.strerror or exc)


def write_output_dir(path: str | os.PathLike, tables: Mapping[str, pd.DataFrame],
                     run: Mapping[str, Any]) -> Path:
    """Publish a run's output folder at once: ``tables`` and ``run.json``, nothing else.

    Parameters
    ----------
    path : str or PathLike
        Output directory (``--out``): missing, empty, or an earlier permenrich output,
        which is replaced as a whole (see the module notes for how and for crash safety).
    tables : mapping of str to pandas.DataFrame
        File name (inside ``path``, no folders) -> table, written as TSV without the index,
        floats at full (round-trip) precision.
    run : mapping
        Provenance, written as ``run.json`` with an ``output`` entry added that lists the
        files written (``output.files``): it marks the folder as permenrich's, so that a
        later run may replace it.

    Returns
    -------
    pathlib.Path
        The published directory, absolute.

    Raises
    ------
    OptionError
        As :func:`check_output_dir`; another run holds the lock; or writing failed
        (disk full, quota, permissions, ...): the message says so and that the previous
        output is untouched (or that nothing was written). No temporary folder is left,
        also when interrupted (KeyboardInterrupt).
    """
    given = os.fspath(path)
    out = check_output_dir(given, create=False)
    names = [*tables, MANIFEST]
    record = dict(run)
    record["output"] = {**dict(run.get("output") or {}), "written_by": "permenrich", "files": names}
    with output_lock(out):
        tmp, current, replace = None, None, out.exists()
        try:
            _recover(out)
            replace = _check_existing(out, given)
            tmp = _sibling(out, "tmp")
            tmp.mkdir()
            for current, table in tables.items():
                _write_file(tmp / current, table)
            current = MANIFEST
            _write_file(tmp / MANIFEST, json.dumps(record, indent=2, default=str) + "\n")
            current = None
            _fsync_directory(tmp)
            tmp.chmod(0o777 & ~_current_umask())  # a new folder gets what mkdir would give it, not 0700
            with _interrupts_deferred():
                _swap_in(tmp, out, replace)
        except BaseException as exc:
            with _interrupts_deferred():
                if tmp is not None and tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                where = f" while writing {current}" if current else ""
                state = (f"the previous output in {given!r} is untouched" if replace
                         else "no output was written")
                raise OptionError(f"cannot write the output to {_out(given)}: {exc.strerror or exc}{where}; "
                                  f"{state}; free some space, fix the folder or choose another {_out()}") from exc
            raise
    return out


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
    is removed and ``path`` is left as it was. One file only: a run's output folder is
    published with :func:`write_output_dir`.
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
    """Persist a directory's entries (new files, renames) on POSIX; best effort."""
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
