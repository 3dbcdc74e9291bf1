"""The flat gene-set index shared by every compute backend.

Gene sets become three flat integer arrays (members, offsets, sizes) indexing rows of the
expression matrix, so that NumPy, Numba and CUDA kernels can all walk them without
Python objects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from permenrich.errors import InputError, OptionError, option
from permenrich.io.genesets import GeneSet

logger = logging.getLogger(__name__)

__all__ = ["GeneSetIndex", "build_gene_set_index"]


@dataclass
class GeneSetIndex:
    """Gene sets as flat arrays over the expression gene order.

    Attributes
    ----------
    names, descriptions : numpy.ndarray
        dtype object, length ``n_sets``.
    members : numpy.ndarray
        int32, 0-based gene row indices of all sets concatenated; each set's members
        sorted ascending.
    offsets : numpy.ndarray
        int64, length ``n_sets + 1``: set ``s`` is ``members[offsets[s]:offsets[s + 1]]``.
    sizes : numpy.ndarray
        int32, members found in the data (the size used by the statistics).
    sizes_original : numpy.ndarray
        int32, unique genes as read, before dropping those absent from the data.
    sources : numpy.ndarray or None
        dtype object: the file (or ``"<dict>"``) each set came from, for messages.
    n_read, n_too_small, n_too_large : int
        Sets read, and those dropped for having fewer than ``min_size`` or more than
        ``max_size`` genes in the data (0 for an index built by hand).
    """

    names: np.ndarray
    descriptions: np.ndarray
    members: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    sizes_original: np.ndarray
    sources: np.ndarray | None = None
    n_read: int = 0
    n_too_small: int = 0
    n_too_large: int = 0

    @property
    def n_sets(self) -> int:
        """Number of gene sets kept."""
        return int(len(self.names))

    def census(self) -> dict[str, int]:
        """Sets read, used and dropped by size: the ``data`` record of ``run.json``."""
        return {"n_gene_sets_read": int(self.n_read), "n_gene_sets_used": self.n_sets,
                "n_gene_sets_too_small": int(self.n_too_small), "n_gene_sets_too_large": int(self.n_too_large)}

    def genes_of(self, s: int, gene_ids: Sequence[str] | np.ndarray) -> list[str]:
        """Gene ids of set ``s`` (in gene-row order), looked up in ``gene_ids``."""
        rows = self.members[self.offsets[s] : self.offsets[s + 1]]
        return [str(gene_ids[i]) for i in rows]

    def gene_to_sets(self, n_genes: int) -> tuple[np.ndarray, np.ndarray]:
        """The inverse index: which sets each gene belongs to.

        Parameters
        ----------
        n_genes : int
            Number of gene rows (at least ``members.max() + 1``).

        Returns
        -------
        set_offsets : numpy.ndarray
            int64, length ``n_genes + 1``.
        set_ids : numpy.ndarray
            int32; gene ``g`` is in sets ``set_ids[set_offsets[g]:set_offsets[g + 1]]``,
            ascending.
        """
        return gene_to_sets(self.members, self.offsets, n_genes)


def gene_to_sets(members: np.ndarray, offsets: np.ndarray, n_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of a flat set index (``members``, ``offsets``): see
    :meth:`GeneSetIndex.gene_to_sets`."""
    members = np.asarray(members)
    if members.size and int(members.max()) >= n_genes:
        raise ValueError(f"n_genes={n_genes} is smaller than the largest member row {int(members.max())} + 1")
    owner = np.repeat(np.arange(np.asarray(offsets).size - 1, dtype=np.int32), np.diff(offsets))
    # Stable sort keeps the set ids of one gene ascending (owner is ascending).
    order = np.argsort(members, kind="stable")
    set_ids = np.ascontiguousarray(owner[order], dtype=np.int32)
    set_offsets = np.zeros(n_genes + 1, dtype=np.int64)
    np.cumsum(np.bincount(members, minlength=n_genes), out=set_offsets[1:])
    return set_offsets, set_ids


def build_gene_set_index(
    gene_sets: Iterable[GeneSet],
    gene_ids: Sequence[str] | np.ndarray,
    *,
    min_size: int = 15,
    max_size: int = 500,
) -> GeneSetIndex:
    """Map gene sets onto the expression gene order and keep those within the size bounds.

    Parameters
    ----------
    gene_sets : iterable of GeneSet
        As read by :func:`permenrich.io.read_gene_sets`, or streamed by
        :func:`permenrich.io.iter_gene_sets`: each set is mapped as it arrives and only
        kept sets are held, so memory follows the kept sets, not the collection.
    gene_ids : sequence of str
        Expression gene ids, unique (collapse duplicates first). Matching is exact and
        case-sensitive.
    min_size, max_size : int, default 15 and 500
        Keep sets whose number of genes present in the data lies in
        ``[min_size, max_size]`` (GSEA's defaults).

    Returns
    -------
    GeneSetIndex
        Kept sets, in input order, with the counts read and dropped (``n_read``,
        ``n_too_small``, ``n_too_large``).

    Raises
    ------
    OptionError
        ``min_size < 1`` or ``max_size < min_size``.
    InputError
        Duplicated gene ids, or no set within the size bounds.
    """
    _check_sizes(min_size, max_size)
    genes = pd.Index(np.asarray(gene_ids, dtype=object))
    if genes.has_duplicates:
        raise InputError(
            f"gene ids must be unique to index gene sets, but {genes[genes.duplicated()][0]!r} repeats; "
            f"collapse duplicates first (collapse_duplicates)"
        )
    row_of = {gene: row for row, gene in enumerate(genes)}
    census = _Census()
    names: list[str] = []
    descriptions: list[str] = []
    sources: list[str] = []
    sizes: list[int] = []
    sizes_original: list[int] = []
    members: list[np.ndarray] = []
    for gene_set in gene_sets:
        found = row_of.keys() & gene_set.genes  # walks the set's genes, not the data's
        size = census.add(gene_set, found, row_of, min_size, max_size)
        if min_size <= size <= max_size:
            names.append(gene_set.name)
            descriptions.append(gene_set.description)
            sources.append(gene_set.source)
            sizes.append(size)
            sizes_original.append(len(set(gene_set.genes)))  # kept sets only: readers' sets are unique already
            rows = np.fromiter(map(row_of.__getitem__, found), dtype=np.int32, count=len(found))
            rows.sort()
            members.append(rows)
    if census.n_read == 0:
        raise InputError("no gene sets given")
    if not names:
        raise InputError(census.no_set_message(genes, min_size, max_size))
    if census.case_matches and census.case_matches >= 0.05 * (census.n_found + census.case_matches):
        logger.warning("%d gene-set members (e.g. %r) match a gene of the data only when case is ignored (%r) and "
                       "are left out of their sets (%.0f%% of the matches): if the ids differ only in case, make "
                       "them agree (human symbols are upper case); genes of another species need an ortholog map",
                       census.case_matches, census.case_example[0], census.case_example[1],
                       100 * census.case_matches / (census.n_found + census.case_matches))
    if len(names) < census.n_read:
        logger.info(
            "kept %d of %d gene sets; excluded %d with fewer than %d and %d with more than %d genes in the data",
            len(names), census.n_read, census.n_too_small, min_size, census.n_too_large, max_size,
        )
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return GeneSetIndex(
        names=np.array(names, dtype=object),
        descriptions=np.array(descriptions, dtype=object),
        members=np.concatenate(members) if members else np.zeros(0, dtype=np.int32),
        offsets=offsets,
        sizes=np.array(sizes, dtype=np.int32),
        sizes_original=np.array(sizes_original, dtype=np.int32),
        sources=np.array(sources, dtype=object),
        n_read=census.n_read,
        n_too_small=census.n_too_small,
        n_too_large=census.n_too_large,
    )


@dataclass
class _Census:
    """What the size filter saw of every set read, in constant memory (a few example
    genes, one entry per source file): the counts for run.json and the facts the "no
    gene set left" message needs."""

    n_read: int = 0
    n_too_small: int = 0
    n_too_large: int = 0
    size_min: int = 0
    size_max: int = 0
    n_members: int = 0
    sources: dict[str, None] = field(default_factory=dict)
    example_genes: list[str] = field(default_factory=list)
    case_matches: int = 0
    case_example: tuple[str, str] = ("", "")
    n_found: int = 0
    _upper_ids: dict[str, str] | None = None

    def add(self, gene_set: GeneSet, found: set[str], row_of: dict[str, int], min_size: int, max_size: int) -> int:
        """Count one set whose genes ``found`` are in the data; returns their number."""
        size = len(found)
        self.size_min = size if self.n_read == 0 else min(self.size_min, size)
        self.size_max = max(self.size_max, size)
        self.n_read += 1
        self.n_too_small += size < min_size
        self.n_too_large += size > max_size
        self.n_members += len(gene_set.genes)
        self.sources.setdefault(gene_set.source)
        if len(self.example_genes) < 3:
            self.example_genes.extend(gene_set.genes[: 3 - len(self.example_genes)])
        self.n_found += size
        if len(gene_set.genes) > size:  # members missing from the data: do they match ignoring case?
            if self._upper_ids is None:
                self._upper_ids = {str(g).upper(): str(g) for g in row_of}
            for gene in (g for g in gene_set.genes if g not in found):  # file order: a stable example
                match = self._upper_ids.get(gene.upper())
                if match is not None:
                    if not self.case_matches:
                        self.case_example = (gene, match)
                    self.case_matches += 1
        return size

    def no_set_message(self, genes: pd.Index, min_size: int, max_size: int) -> str:
        sources = list(self.sources)
        where = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
        message = (
            f"{where}: no gene set left: {self.n_read} gene sets read, with {self.size_min} to "
            f"{self.size_max} genes found in the data, but sizes must lie in [{min_size}, {max_size}]"
        )
        if self.n_members == 0:
            return message + "; every set is empty: check the gene-set files"
        if self.size_max == 0:
            example = (
                f" (data ids look like {', '.join(repr(str(g)) for g in genes[:3])}; "
                f"set genes like {', '.join(repr(str(g)) for g in self.example_genes)})"
            )
            if self.case_matches:
                return message + (
                    f"; no gene matches exactly, but {self.case_matches} set members would ignoring case{example}: "
                    "make the case of gene ids agree (e.g. human symbols are upper case)"
                )
            return message + (
                f"; no gene id of the data is in any set{example}: check the gene id type (e.g. probe ids vs "
                f"symbols: {option('chip')} maps probes to symbols, when its symbol column is the sets' kind of id)"
            )
        return message + (
            f"; check the gene id type (e.g. probe ids vs symbols; {option('chip')} maps probes) or change "
            f"{option('min_size')}/{option('max_size')}"
        )


def _check_sizes(min_size: int, max_size: int) -> None:
    for name, value in (("min_size", min_size), ("max_size", max_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise OptionError(f"{name} must be an integer, got {value!r}")
    if min_size < 1:
        raise OptionError(f"{option('min_size')} must be at least 1, got {min_size}")
    if max_size < min_size:
        raise OptionError(f"{option('max_size')} must be >= {option('min_size')} ({min_size}), got {max_size}")
