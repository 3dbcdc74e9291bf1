"""Compile one family of plain-Python scalar functions for several targets.

The device-neutral maths (Philox, bounded integers, metrics, ES updates) is written once
as plain Python functions that call each other by name. :func:`jit_family` copies the
functions into a private namespace in which those names refer to the compiled versions,
so the same source becomes CPU code (``numba.njit``) or CUDA device code
(``numba.cuda.jit(device=True)``) without a second copy of the maths.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from typing import Any


def jit_family(functions: Iterable[Callable[..., Any]], decorator: Callable[[Callable], Any],
               extra_globals: dict[str, Any] | None = None) -> types.SimpleNamespace:
    """Compile ``functions`` with ``decorator``, resolving their calls to each other.

    Parameters
    ----------
    functions
        Plain Python functions; a call inside one to another's ``__name__`` is bound to
        the compiled version of that other function.
    decorator
        E.g. ``numba.njit(cache=True)`` or ``numba.cuda.jit(device=True)``.
    extra_globals
        Further names to bind (e.g. already compiled helpers from another family).

    Returns
    -------
    SimpleNamespace mapping each function's ``__name__`` to its compiled version.
    """
    functions = list(functions)
    namespace: dict[str, Any] = {}
    for function in functions:
        namespace.update(function.__globals__)
    if extra_globals:
        namespace.update(extra_globals)
    compiled = {}
    for function in functions:
        clone = types.FunctionType(function.__code__, namespace, function.__name__,
                                   function.__defaults__, function.__closure__)
        clone.__module__ = function.__module__
        clone.__qualname__ = function.__qualname__
        compiled[function.__name__] = decorator(clone)
    # Compilation is lazy, so binding the names after decorating is enough.
    namespace.update(compiled)
    return types.SimpleNamespace(**compiled)
