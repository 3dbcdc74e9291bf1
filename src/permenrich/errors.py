"""Errors raised for user mistakes, and options named in the words of the caller.

The CLI turns every :class:`PermenrichError` into one line on stderr and exit status 2;
anything else is a bug and keeps its traceback.

A message that tells the user which option to change names it through :func:`option`,
so that it reads ``zero_variance='drop'`` from Python and ``--zero-variance drop`` from
the command line; the CLI runs inside :func:`cli_option_names`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar

__all__ = ["PermenrichError", "InputError", "OptionError", "option", "cli_option_names"]

# A context variable, not a module flag: ``permenrich.cli.main`` may be called from Python
# (tests, notebooks) while other code keeps using the Python names.
_CLI_RUNNING: ContextVar[bool] = ContextVar("permenrich_cli_option_names", default=False)
_TABLE_COLUMNS: ContextVar[frozenset[str]] = ContextVar("permenrich_table_column_names", default=frozenset())

# Python keywords whose command-line flag is not the keyword with dashes.
_CLI_FLAGS = {"phenotype": "--cls/--sample-sheet", "out_dir": "--out"}


class PermenrichError(Exception):
    """A user-facing error: bad input, a bad option, an unwritable output.

    The message must say which file/parameter, what was expected, what arrived and what
    to do, in one line.
    """


class InputError(PermenrichError):
    """A malformed or inconsistent input file or object."""


class OptionError(PermenrichError):
    """An invalid option value (unknown metric, negative permutations, ...)."""


class ClusterError(PermenrichError):
    """The Dask cluster could not finish a run's tasks (workers died repeatedly, or every
    copy of the run's options was lost more often than the run resends them)."""


class ClassEmptiedError(InputError):
    """A compared class (``level``) has too few samples to test: fewer than two, or
    ``min_cells`` dropped its pseudo-samples. That comparison cannot run, and
    ``permenrich.tl`` skips such a group when it runs every group (any other error stops
    it: it would meet every group)."""

    def __init__(self, message: str, level: str = "") -> None:
        # level "" where a wrapper re-raised the message alone (type(error)(said)): then
        # no group is known to be the one that cannot be tested
        super().__init__(message)
        self.level = level


def option(name: str, value: object = None) -> str:
    """An option (and a value for it) as the interface in use spells it.

    Parameters
    ----------
    name : str
        The Python keyword, e.g. ``"zero_variance"``.
    value : object, optional
        A value to show with it.

    Returns
    -------
    str
        From Python: ``zero_variance=`` or ``zero_variance='drop'``; inside
        :func:`cli_option_names`: ``--zero-variance`` or ``--zero-variance drop``.

    Examples
    --------
    >>> option("zero_variance", "drop")
    "zero_variance='drop'"
    >>> with cli_option_names():
    ...     option("zero_variance", "drop")
    '--zero-variance drop'
    """
    if name in _TABLE_COLUMNS.get():  # a cell of a table the user wrote (a meta manifest)
        return f"{name!r}" if value is None or value is True else f"{name} {value!r}"
    if _CLI_RUNNING.get():
        flag = _CLI_FLAGS.get(name, "--" + name.replace("_", "-"))
        return flag if value is None or value is True else f"{flag} {value}"  # True: a switch
    return f"{name}=" if value is None else f"{name}={value!r}"


def gene_set_inputs() -> str:
    """What gene sets can be, as the interface in use takes them."""
    return "GMT/GMX file(s)" if _CLI_RUNNING.get() else "GMT/GMX file(s) or a mapping of set name to genes"


@contextlib.contextmanager
def table_column_names(columns: Iterable[str]) -> Iterator[None]:
    """Within this block, :func:`option` spells the options in ``columns`` as the columns
    of a table the user wrote (``'control'``, ``control 'C'``): a study of a meta-analysis
    manifest sets them in its row, not with flags."""
    token = _TABLE_COLUMNS.set(frozenset(columns))
    try:
        yield
    finally:
        _TABLE_COLUMNS.reset(token)


@contextlib.contextmanager
def cli_option_names() -> Iterator[None]:
    """Within this block, :func:`option` spells options as command-line flags.

    The command line wraps each run in it; the previous spelling is restored on exit.
    """
    token = _CLI_RUNNING.set(True)
    try:
        yield
    finally:
        _CLI_RUNNING.reset(token)
