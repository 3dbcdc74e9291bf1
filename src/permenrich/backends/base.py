"""What a backend is: the protocol the CPU and GPU backends implement.

The runner and the modes talk to a backend only through these methods; planning,
batching, accumulation and the result tables exist once, above them. A backend holds
the prepared statistic and set statistic of one run (``prepare_*``) and turns batches
of labellings into gene statistics and set scores on its device, as arrays of its
array module ``xp`` (NumPy or CuPy); accumulators read those arrays where they are.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..stats.metrics import Metric


@runtime_checkable
class Backend(Protocol):
    """A device the permutations run on (``permenrich.backends.cpu.CpuBackend``,
    ``permenrich.backends.gpu.GpuBackend``)."""

    #: ``"cpu"`` or ``"gpu"``.
    name: str
    #: The array module of the batches: NumPy or CuPy.
    xp: Any

    def prepare_statistic(self, values: Any, metric: Metric, *, drawn_is_case: bool = True,
                          phenotype: np.ndarray | None = None, covariates: Any = None) -> None:
        """Prepare the per-gene statistic for labellings of ``values`` (an in-memory
        (n_genes, n_samples) array, or a streamed matrix with ``blocks()``); with
        ``covariates``, the Freedman–Lane t of the phenotype
        (:class:`permenrich.stats.covariates.CovariateStatistic`)."""

    def prepare_sets(self, set_statistic: str, set_members: np.ndarray, set_offsets: np.ndarray, weight: float,
                     n_genes: int) -> None:
        """Prepare the set statistic (``ks``, ``mean``, ``maxmean``) over the flat set index."""

    def labellings(self, plan: Any, start: int, stop: int) -> Any:
        """Labellings ``[start, stop)`` of a permutation plan, on this device; identical
        on every backend (permutation k is a pure function of (seed, k))."""

    def gene_statistics(self, labellings: Any) -> Any:
        """Per-gene statistics of a batch of labellings, shape (n_batch, n_genes)."""

    def set_scores(self, stats: Any) -> Any:
        """Set statistics of a batch of gene statistics, shape (n_batch, n_sets)."""

    def score(self, labellings: Any, keep_stat: bool = False) -> tuple[Any, Any]:
        """Set scores of a batch of labellings, and their gene statistics if asked."""

    def random_set_null(self, seed: int, perm_start: int, perm_stop: int, ranked_stat: np.ndarray, weight: float,
                        set_statistic: str, sizes: np.ndarray) -> Any:
        """The gene-set permutation null of preranked GSEA: the statistic of random sets of
        each size, shape (n_batch, n_sizes)."""

    def to_host(self, array: Any) -> np.ndarray:
        """An array of this backend as a NumPy array."""

    def describe(self) -> dict:
        """What run.json says of the backend (device, threads, versions)."""
