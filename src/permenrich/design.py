"""Designs and the permutation plan: which labellings a run scores, as a pure function of
(seed, k).

Two kinds of phenotype:

* :class:`TwoGroupLabels` (case/control). A labelling is described by the sample positions
  of its *drawn class*: the smaller class (the case class on a tie), because a partial
  Fisher–Yates over the smaller class needs the fewest random draws and its column sums
  are the cheapest to gather; the other class's sums are the total minus the drawn
  class's.
* :class:`ContinuousPhenotype` (e.g. for correlation statistics). A labelling is a
  shuffle: for each sample, the sample whose phenotype value it receives.

Restricted permutations: with ``strata`` (batches, sites, donors) labels move only within
a stratum, which keeps each stratum's class counts; this is the valid null when the
strata may differ in level but the label is exchangeable within each. ``pairs`` are
strata of two samples, one of each class: a permutation swaps labels within pairs (for
paired differences, a sign flip); valid for paired designs such as before/after
samples of one subject. Restricted designs need enough strata to have many distinct
labellings: the plan counts them and enumerates all when they are few.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, OptionError
from .rng import MODE_SHUFFLE, MODE_SUBSET, binomial_table, fill_labellings


def _stratum_layout(strata: np.ndarray | None, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, members): sample positions grouped by stratum code, in sample order."""
    if strata is None:
        return np.array([0, n_samples], dtype=np.int64), np.arange(n_samples, dtype=np.int64)
    codes = np.asarray(strata)
    order = np.argsort(codes, kind="stable").astype(np.int64)
    _, counts = np.unique(codes[order], return_counts=True)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), order


def _check_strata_length(strata: np.ndarray | None, n_samples: int) -> None:
    """One stratum per analysed sample: the kernels index samples through the strata
    without bounds checks, so a stale strata array would read past the matrix."""
    if strata is not None and np.asarray(strata).size != n_samples:
        raise ValueError(f"{np.asarray(strata).size} strata for {n_samples} samples")


@dataclass(frozen=True)
class TwoGroupLabels:
    """Case/control labels of the analysed samples.

    Parameters
    ----------
    is_case : ndarray of bool, shape (n_samples,)
    strata : ndarray of int, shape (n_samples,), optional
        Stratum code of each sample; labels are permuted within strata only.
    """

    is_case: np.ndarray
    strata: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check_strata_length(self.strata, int(np.asarray(self.is_case).size))

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

    @property
    def drawn_mask(self) -> np.ndarray:
        return self.is_case if self.drawn_is_case else ~self.is_case

    def observed_drawn_positions(self) -> np.ndarray:
        """Sample positions of the drawn class in the observed labelling, shape (1, n_drawn)."""
        return np.flatnonzero(self.drawn_mask).astype(np.int64)[None, :]


@dataclass(frozen=True)
class ContinuousPhenotype:
    """A numeric phenotype per analysed sample (for correlation statistics).

    Parameters
    ----------
    values : ndarray of float, shape (n_samples,)
    strata : ndarray of int, shape (n_samples,), optional
    """

    values: np.ndarray
    strata: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check_strata_length(self.strata, int(np.asarray(self.values).size))

    @property
    def n_samples(self) -> int:
        return int(self.values.size)

    def observed_shuffle(self) -> np.ndarray:
        """The identity labelling, shape (1, n_samples)."""
        return np.arange(self.n_samples, dtype=np.int64)[None, :]


def strata_codes(labels: np.ndarray, *, source: str, what: str = "stratum",
                 sample_ids: Sequence[Any] | None = None) -> np.ndarray:
    """Integer codes of stratum labels; a sample without one, or a stratum with a single
    sample, is an error (naming the sample when ``sample_ids`` are given)."""
    labels = np.asarray(labels, dtype=object)
    empty = [i for i, v in enumerate(labels) if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == ""]
    if empty:
        which = f"sample {str(sample_ids[empty[0]])!r}" if sample_ids is not None else "a sample"
        raise InputError(f"{source}: {which} has no {what} ({len(empty)} analysed sample(s) lack one); give every "
                         "analysed sample one")
    names, codes = np.unique(labels.astype(str), return_inverse=True)
    counts = np.bincount(codes)
    if (counts < 2).any():
        single = str(names[np.flatnonzero(counts < 2)[0]])
        raise InputError(f"{source}: {what} {single!r} has a single sample, so its label cannot move; "
                         f"merge it with another {what} or leave the restriction out")
    return codes.astype(np.int64)


def pair_codes(pairs: np.ndarray, is_case: np.ndarray, *, source: str) -> np.ndarray:
    """Stratum codes for a paired design: every pair must hold one case and one control."""
    codes = strata_codes(pairs, source=source, what="pair")
    names = np.unique(np.asarray(pairs).astype(str))
    for code in range(codes.max() + 1):
        members = np.flatnonzero(codes == code)
        if members.size != 2 or is_case[members].sum() != 1:
            raise InputError(f"{source}: pair {str(names[code])!r} has {members.size} samples with "
                             f"{int(is_case[members].sum())} case(s); a pair needs one case and one control")
    return codes


@dataclass
class PermutationPlan:
    """Which labellings are scored: ``n_perm`` random ones, or all of them (exact).

    Permutation ``k`` (``0 <= k < n_perm``) is a pure function of ``(seed, k)``.

    Parameters
    ----------
    design
        :class:`TwoGroupLabels` or :class:`ContinuousPhenotype`.
    n_perm_requested
        Number of permutations asked for.
    seed
        Any integer in ``[0, 2**64)``; 0 is a seed like any other.
    random_only
        Draw random labellings even when all of them could be enumerated (a
        meta-analysis pairs permutation k of every study, which needs independent draws).
    """

    design: TwoGroupLabels | ContinuousPhenotype
    n_perm_requested: int
    seed: int
    random_only: bool = False
    exact: bool = field(init=False)
    n_perm: int = field(init=False)
    n_distinct: int = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.n_perm_requested, bool) or int(self.n_perm_requested) < 1:
            raise OptionError(f"permutations must be a positive integer, got {self.n_perm_requested!r}")
        if not 0 <= int(self.seed) < 2**64:
            raise OptionError(f"seed must be an integer in [0, 2**64), got {self.seed!r}")
        self.seed = int(self.seed)
        design = self.design
        self._offsets, self._members = _stratum_layout(design.strata, design.n_samples)
        sizes = np.diff(self._offsets)
        if isinstance(design, TwoGroupLabels):
            self.mode = MODE_SUBSET
            drawn = design.drawn_mask[self._members]
            self._drawn = np.add.reduceat(drawn.astype(np.int64), self._offsets[:-1]) if sizes.size else sizes
            radix = [math.comb(int(n), int(d)) for n, d in zip(sizes, self._drawn)]
            self.width = design.n_drawn
        else:
            self.mode = MODE_SHUFFLE
            self._drawn = sizes.copy()
            radix = [math.factorial(int(n)) for n in sizes]
            self.width = design.n_samples
        self.n_distinct = math.prod(radix)
        self.exact = not self.random_only and self.n_distinct <= int(self.n_perm_requested)
        self.n_perm = self.n_distinct if self.exact else int(self.n_perm_requested)
        largest = int(sizes.max())
        if self.exact:
            self._radix = np.array(radix, dtype=np.int64)
            self._binom = binomial_table(largest, largest)
            self._factorial = np.array([math.factorial(i) for i in range(min(largest, 20) + 1)], dtype=np.int64)
        else:
            self._radix = np.ones(sizes.size, dtype=np.int64)
            self._binom = np.zeros((1, 1), dtype=np.int64)
            self._factorial = np.ones(1, dtype=np.int64)

    @property
    def fixed_strata(self) -> int:
        """Strata whose labels cannot move (all samples in one class)."""
        if self.mode != MODE_SUBSET:
            return 0
        sizes = np.diff(self._offsets)
        return int(((self._drawn == 0) | (self._drawn == sizes)).sum()) if sizes.size > 1 else 0

    @property
    def mirrored(self) -> bool:
        """Whether every labelling's complement (the classes swapped) is a labelling too:
        two groups of equal size in every stratum (pairs included). A two-sided statistic
        then scores a labelling and its complement alike, and no exact p-value falls below
        2/labellings."""
        return self.mode == MODE_SUBSET and bool(np.all(2 * self._drawn == np.diff(self._offsets)))

    def labellings(self, perm_start: int, perm_stop: int) -> np.ndarray:
        """Labellings ``[perm_start, perm_stop)``.

        Returns
        -------
        ndarray of int64: shape (n, n_drawn) sorted drawn-class positions for a two-group
        design; shape (n, n_samples) source samples for a continuous phenotype.
        """
        if not 0 <= perm_start <= perm_stop <= self.n_perm:
            raise ValueError(f"permutation range [{perm_start}, {perm_stop}) outside [0, {self.n_perm})")
        out = np.empty((perm_stop - perm_start, self.width), dtype=np.int64)
        fill_labellings(np.uint64(self.seed), perm_start, self.mode, self.exact, self._offsets,
                        self._members, self._drawn, self._radix, self._binom, self._factorial, out)
        return out

    def generator_arrays(self) -> tuple:
        """What a device kernel needs to draw labellings itself (see
        :func:`permenrich.rng.fill_labellings`): (mode, exact, stratum offsets, stratum
        members, drawn per stratum, radix, binomial table, factorials, largest stratum)."""
        return (self.mode, self.exact, self._offsets, self._members, self._drawn, self._radix, self._binom,
                self._factorial, int(np.diff(self._offsets).max()))

    def observed(self) -> np.ndarray:
        """The observed labelling in the same encoding, shape (1, width)."""
        if isinstance(self.design, TwoGroupLabels):
            return self.design.observed_drawn_positions()
        return self.design.observed_shuffle()

    def describe(self) -> dict:
        """Provenance for run.json."""
        info = {
            "seed": self.seed,
            "permutations_requested": int(self.n_perm_requested),
            "permutations": self.n_perm,
            "exact_enumeration": self.exact,
            "distinct_labellings": self.n_distinct if self.n_distinct < 2**63 else "> 2**63",
            "generator": "Philox4x32-10, counter=(k_lo, k_hi, block, 0x5045524D), key=seed; "
            "Fisher-Yates (partial over the smaller class for two groups) with Lemire bounded integers",
            "strata": int(self._offsets.size - 1),
        }
        if isinstance(self.design, TwoGroupLabels):
            info["drawn_class"] = "case" if self.design.drawn_is_case else "control"
            info["strata_with_fixed_labels"] = self.fixed_strata
            info["complements_are_labellings"] = self.mirrored
        return info
