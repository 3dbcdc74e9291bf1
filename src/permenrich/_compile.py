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


def inline(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a small device-neutral helper to be inlined into its callers on the CPU.

    Numba does not inline calls between separately compiled functions; a helper called
    per gene or per set member (``|s|**p``, a metric from class moments) otherwise costs
    a call each time: 12.6 ns against 3.6 ns per member for the closed-form ES.
    """
    function.inline = True  # type: ignore[attr-defined]
    return function


def cpu_family(functions: Iterable[Callable[..., Any]]) -> types.SimpleNamespace:
    """:func:`jit_family` for the CPU: ``numba.njit`` (cached, NumPy error model), with the
    helpers marked by :func:`inline` inlined into their callers."""
    import numba

    return jit_family(functions, numba.njit(cache=True, error_model="numpy"),
                      inline_decorator=numba.njit(cache=True, error_model="numpy", inline="always"))


def jit_family(functions: Iterable[Callable[..., Any]], decorator: Callable[[Callable], Any],
               extra_globals: dict[str, Any] | None = None,
               inline_decorator: Callable[[Callable], Any] | None = None) -> types.SimpleNamespace:
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
    inline_decorator
        Used instead of ``decorator`` for the functions marked by :func:`inline`.

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
        marked = inline_decorator is not None and getattr(function, "inline", False)
        compiled[function.__name__] = (inline_decorator if marked else decorator)(clone)
    # Compilation is lazy, so binding the names after decorating is enough.
    namespace.update(compiled)
    return types.SimpleNamespace(**compiled)
