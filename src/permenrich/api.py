"""Public API: ``gsea``, ``prerank``, ``genes``, ``ora`` and ``meta``.

Each mode is a path through one pipeline (:mod:`permenrich._pipeline`)::

    read -> design (labels, permutation plan) -> per-gene statistic -> ranking
         -> set statistic -> null accumulators -> p-values -> results

Backends supply only kernels (a batch of labellings -> gene statistics -> set scores);
planning, batching, accumulation and the result tables exist once, whatever the device.
The modes live in :mod:`permenrich.modes` (one module each); this module is their
stable public face.
"""

from __future__ import annotations

from .modes._shared import GENE_COLUMNS, RESULT_COLUMNS
from .modes.contrasts import contrasts, read_contrasts, write_results
from .modes.genes import genes
from .modes.gsea import gsea, prerank
from .modes.meta import meta
from .modes.ora import ORA_COLUMNS, ora
from .modes.ora_lists import ora_lists

__all__ = ["GENE_COLUMNS", "ORA_COLUMNS", "RESULT_COLUMNS", "contrasts", "genes", "gsea", "meta", "ora", "ora_lists", "prerank",
           "read_contrasts", "write_results"]
