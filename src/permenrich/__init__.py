"""permenrich: permutation-heavy gene-set enrichment on CPU and GPU.

The public entry points are re-exported here; see :func:`permenrich.gsea`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import contrasts, genes, gsea, ora, prerank, write_results  # noqa: E402
from .errors import InputError, OptionError, PermenrichError  # noqa: E402

__all__ = ["InputError", "OptionError", "PermenrichError", "__version__", "contrasts", "genes", "gsea", "ora", "prerank",
           "write_results"]
