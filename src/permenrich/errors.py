"""Errors raised for user mistakes.

The CLI turns every :class:`PermenrichError` into one line on stderr and exit status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PermenrichError(Exception):
    """A user-facing error: bad input, a bad option, an unwritable output.

    The message must say which file/parameter, what was expected, what arrived and what
    to do, in one line.
    """


class InputError(PermenrichError):
    """A malformed or inconsistent input file or object."""


class OptionError(PermenrichError):
    """An invalid option value (unknown metric, negative permutations, ...)."""
