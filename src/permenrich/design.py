"""The permutation plan: which labellings a run scores, as a pure function of (seed, k).

A two-group design with ``n_case`` cases among ``n_samples`` is described by the sample
positions of its *drawn class*: the smaller class (the case class on a tie), because a
partial Fisher–Yates over the smaller class needs the fewest random draws and its column
sums are the cheapest to gather. The other class's sums are the total minus the drawn
class's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import OptionError
from .rng import binomial_table, fill_subsets


@dataclass(frozen=True)
class TwoGroupLabels:
    """Case/control labels of the samples kept for the analysis.

    Parameters
    ----------
    is_case : ndarray of bool, shape (n_samples,)
    """

    is_case: np.ndarray

    @property
    def n_samples(self) -> int:
        return int(self.is_case.size)

    @property
    def n_case(self) -> int:
        return int(self.is_case.sum())

    @property
    def n_control(self) -> int:
        return self.n_samples - self.n_case

    @property
    def drawn_is_case(self) -> bool:
        """Whether the drawn (smaller) class is the case class."""
        return self.n_case <= self.n_control

    @property
    def n_drawn(self) -> int:
        return min(self.n_case, self.n_control)

    def observed_drawn_positions(self) -> np.ndarray:
        """Sample positions of the drawn class in the observed labelling, shape (1, n_drawn)."""
        drawn_mask = self.is_case if self.drawn_is_case else ~self.is_case
        return np.flatnonzero(drawn_mask).astype(np.int64)[None, :]


@dataclass
class PermutationPlan:
    """Which labellings are scored: ``n_perm`` random ones, or all of them (exact).

    Permutation ``k`` (``0 <= k < n_perm``) is a pure function of ``(seed, k)``.

    Parameters
    ----------
    labels
        The observed two-group labels.
    n_perm_requested
        Number of permutations asked for.
    seed
        Any integer in ``[0, 2**64)``; 0 is a seed like any other.
    """

    labels: TwoGroupLabels
    n_perm_requested: int
    seed: int
    exact: bool = field(init=False)
    n_perm: int = field(init=False)
    n_distinct: int = field(init=False)
    _binom: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.n_perm_requested, bool) or int(self.n_perm_requested) < 1:
            raise OptionError(
                f"permutations must be a positive integer, got {self.n_perm_requested!r}"
            )
        if not 0 <= int(self.seed) < 2**64:
            raise OptionError(f"seed must be an integer in [0, 2**64), got {self.seed!r}")
        self.seed = int(self.seed)
        n, r = self.labels.n_samples, self.labels.n_drawn
        self.n_distinct = math.comb(n, r)
        self.exact = self.n_distinct <= int(self.n_perm_requested)
        self.n_perm = self.n_distinct if self.exact else int(self.n_perm_requested)
        self._binom = binomial_table(n, r) if self.exact else np.zeros((1, 1), dtype=np.int64)

    def drawn_positions(self, perm_start: int, perm_stop: int) -> np.ndarray:
        """Sample positions of the drawn class for permutations ``[perm_start, perm_stop)``.

        Returns
        -------
        ndarray of int64, shape (perm_stop - perm_start, n_drawn), each row sorted.
        """
        if not 0 <= perm_start <= perm_stop <= self.n_perm:
            raise ValueError(f"permutation range [{perm_start}, {perm_stop}) outside [0, {self.n_perm})")
        out = np.empty((perm_stop - perm_start, self.labels.n_drawn), dtype=np.int64)
        fill_subsets(
            np.uint64(self.seed), perm_start, self.labels.n_samples, self.labels.n_drawn,
            self.exact, self._binom, out,
        )
        return out

    def describe(self) -> dict:
        """Provenance for run.json."""
        return {
            "seed": self.seed,
            "permutations_requested": int(self.n_perm_requested),
            "permutations": self.n_perm,
            "exact_enumeration": self.exact,
            "distinct_labellings": self.n_distinct if self.n_distinct < 2**63 else "> 2**63",
            "generator": "Philox4x32-10, counter=(k_lo, k_hi, block, 0x5045524D), key=seed; "
            "partial Fisher-Yates over the smaller class with Lemire bounded integers",
            "drawn_class": "case" if self.labels.drawn_is_case else "control",
        }
