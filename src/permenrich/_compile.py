"""Compile one family of plain-Python scalar functions for several targets.

The device-neutral maths (Philox, bounded integers, metrics, ES updates) is written once
as plain Python functions that call each other by name. :func:`jit_family` copies the
functions into a private namespace in which those names refer to the compiled versions,
so the same source becomes CPU code (``numba.njit``) or CUDA device code
(``numba.cuda.jit(device=True)``) without a second copy of the maths.
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: Where :func:`drop_stale_kernel_caches` records the sources it last saw.
SOURCES_STAMP = "kernel-sources.sha256"


def drop_stale_kernel_caches(roots: Iterable[Path]) -> bool:
    """Delete Numba's in-tree caches under ``roots`` when any Python source there changed.

    Numba checks a cached kernel against the timestamp of the file that defines it only,
    not of the files its compiled-in helpers come from (the ranking, the RNG, the
    metrics are compiled into kernels of other modules), so editing a helper would leave
    those kernels stale, silently. The digest of every source's path, size and
    modification time is compared with the one recorded in the first root's
    ``__pycache__``; when it differs, the ``*.nbi``/``*.nbc``/``*.lcs`` files under the roots are
    deleted (recompiled on next use) and the digest recorded. A read-only install (whose
    caches Numba keeps elsewhere, and whose sources do not change) is left alone.

    Returns
    -------
    bool
        Whether caches were dropped.
    """
    roots = [Path(root) for root in roots]
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            info = path.stat()
            digest.update(f"{path.relative_to(root).as_posix()}:{info.st_size}:{info.st_mtime_ns};".encode())
    stamp = roots[0] / "__pycache__" / SOURCES_STAMP
    try:
        if stamp.read_text() == digest.hexdigest():
            return False
    except OSError:
        pass
    try:
        for root in roots:
            for pattern in ("*.nbi", "*.nbc", "*.lcs"):  # .lcs: Numba-CUDA's launch-config markers
                for cached in root.rglob(pattern):
                    cached.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        partial = stamp.with_suffix(".tmp")
        partial.write_text(digest.hexdigest())
        partial.replace(stamp)
    except OSError:
        return False
    return True


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
