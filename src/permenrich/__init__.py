"""permenrich: permutation-heavy gene-set enrichment on CPU and GPU.

The public entry points are re-exported here; see :func:`permenrich.gsea`. They are
imported on first use (PEP 562), so that ``import permenrich.cli`` stays light: the
command line then imports NumPy, pandas and Numba inside ``main()``, where Ctrl-C is
one line instead of a traceback. ``permenrich.tl`` (scanpy-style tools on an AnnData)
and ``permenrich.pl`` (figures) are submodules imported on first access as well.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._compile import drop_stale_kernel_caches
from .errors import InputError, OptionError, PermenrichError
# Imported now (it is light): the function ``report`` must shadow its submodule's name.
from .report import report

__version__ = "0.1.0"


def _kernel_source_roots() -> list[str]:
    """This package's folder and the CUDA kernels' (``permenrich.kernels``, which an
    editable install maps to the checkout's ``kernels/``)."""
    import importlib.util

    roots = list(__path__)
    spec = importlib.util.find_spec(f"{__name__}.kernels")
    if spec is not None and spec.submodule_search_locations:
        roots += [r for r in spec.submodule_search_locations if r not in roots]
    return roots


# Before any cached kernel loads: see drop_stale_kernel_caches.
drop_stale_kernel_caches(_kernel_source_roots())

_LAZY = {name: ".api" for name in ("contrasts", "genes", "gsea", "meta", "ora", "ora_lists", "prerank",
                                   "write_results")}

__all__ = ["InputError", "OptionError", "PermenrichError", "__version__", "contrasts", "genes", "gsea", "meta", "ora",
           "ora_lists", "prerank", "report", "tl", "write_results"]


def __getattr__(name: str) -> Any:
    """Import a public function, or a submodule (``permenrich.api``, ``permenrich.io``, ...),
    on first access."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
