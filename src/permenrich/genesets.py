"""The flat gene-set index shared by every compute backend.

Gene sets become three flat integer arrays (members, offsets, sizes) indexing rows of the
expression matrix, so that NumPy, Numba and CUDA kernels can all walk them without
Python objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from permenrich.errors import InputError, OptionError
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
    """

    names: np.ndarray
    descriptions: np.ndarray
    members: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    sizes_original: np.ndarray

    @property
    def n_sets(self) -> int:
        """Number of gene sets kept."""
        return int(len(self.names))

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
        if self.members.size and int(self.members.max()) >= n_genes:
            raise ValueError(f"n_genes={n_genes} is smaller than the largest member row {int(self.members.max())} + 1")
        owner = np.repeat(np.arange(self.n_sets, dtype=np.int32), self.sizes)
        # Stable sort keeps the set ids of one gene ascending (owner is ascending).
        order = np.argsort(self.members, kind="stable")
        set_ids = np.ascontiguousarray(owner[order], dtype=np.int32)
        set_offsets = np.zeros(n_genes + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.members, minlength=n_genes), out=set_offsets[1:])
        return set_offsets, set_ids


def build_gene_set_index(
    gene_sets: list[GeneSet],
    gene_ids: Sequence[str] | np.ndarray,
    *,
    min_size: int = 15,
    max_size: int = 500,
) -> GeneSetIndex:
    """Map gene sets onto the expression gene order and filter them by size.

    Parameters
    ----------
    gene_sets : list of GeneSet
        As read by :func:`permenrich.io.read_gene_sets`.
    gene_ids : sequence of str
        Expression gene ids, unique (collapse duplicates first). Matching is exact and
        case-sensitive.
    min_size, max_size : int, default 15 and 500
        Keep sets whose number of genes present in the data lies in
        ``[min_size, max_size]`` (GSEA's defaults).

    Returns
    -------
    GeneSetIndex
        Kept sets, in input order.

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
            "collapse duplicates first (collapse_duplicates)"
        )
    n_read = len(gene_sets)
    if n_read == 0:
        raise InputError("no gene sets given")
    unique_genes = [list(dict.fromkeys(gs.genes)) for gs in gene_sets]
    sizes_original = np.fromiter((len(g) for g in unique_genes), dtype=np.int64, count=n_read)
    flat = np.fromiter(
        (g for genes_of_set in unique_genes for g in genes_of_set), dtype=object, count=int(sizes_original.sum())
    )
    owner = np.repeat(np.arange(n_read, dtype=np.int64), sizes_original)
    rows = genes.get_indexer(flat)
    found = rows >= 0
    # One sort of (set, row) keys orders every set's members and drops repeats at once.
    keys = np.unique(owner[found] * max(len(genes), 1) + rows[found])
    key_set, key_row = np.divmod(keys, max(len(genes), 1))
    sizes_all = np.bincount(key_set, minlength=n_read)

    keep = (sizes_all >= min_size) & (sizes_all <= max_size)
    n_kept = int(keep.sum())
    if n_kept == 0:
        raise InputError(_no_set_message(gene_sets, genes, flat, sizes_all, min_size, max_size))
    if n_kept < n_read:
        n_small = int((sizes_all < min_size).sum())
        n_large = int((sizes_all > max_size).sum())
        logger.info(
            "kept %d of %d gene sets; excluded %d with fewer than %d and %d with more than %d genes in the data",
            n_kept, n_read, n_small, min_size, n_large, max_size,
        )
    in_kept = keep[key_set]
    members = np.ascontiguousarray(key_row[in_kept], dtype=np.int32)
    sizes = sizes_all[keep].astype(np.int32)
    offsets = np.zeros(n_kept + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    kept_sets = [gs for gs, k in zip(gene_sets, keep) if k]
    return GeneSetIndex(
        names=np.array([gs.name for gs in kept_sets], dtype=object),
        descriptions=np.array([gs.description for gs in kept_sets], dtype=object),
        members=members,
        offsets=offsets,
        sizes=sizes,
        sizes_original=sizes_original[keep].astype(np.int32),
    )


def _check_sizes(min_size: int, max_size: int) -> None:
    for name, value in (("min_size", min_size), ("max_size", max_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise OptionError(f"{name} must be an integer, got {value!r}")
    if min_size < 1:
        raise OptionError(f"min_size (--min-size) must be at least 1, got {min_size}")
    if max_size < min_size:
        raise OptionError(f"max_size (--max-size) must be >= min_size ({min_size}), got {max_size}")


def _no_set_message(
    gene_sets: list[GeneSet],
    genes: pd.Index,
    flat: np.ndarray,
    sizes_all: np.ndarray,
    min_size: int,
    max_size: int,
) -> str:
    sources = list(dict.fromkeys(gs.source for gs in gene_sets))
    where = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
    message = (
        f"{where}: no gene set left: {len(gene_sets)} gene sets read, with {int(sizes_all.min())} to "
        f"{int(sizes_all.max())} genes found in the data, but sizes must lie in [{min_size}, {max_size}]"
    )
    if flat.size == 0:
        return message + "; every set is empty: check the gene-set files"
    if sizes_all.max() == 0:
        example = (
            f" (data ids look like {', '.join(repr(str(g)) for g in genes[:3])}; "
            f"set genes like {', '.join(repr(str(g)) for g in flat[:3])})"
        )
        upper_hits = pd.Index(genes.astype(str).str.upper()).get_indexer(pd.Index(flat.astype(str)).str.upper()) >= 0
        if upper_hits.any():
            return message + (
                f"; no gene matches exactly, but {int(upper_hits.sum())} set members would ignoring case{example}: "
                "make the case of gene ids agree (e.g. human symbols are upper case)"
            )
        return message + (
            f"; no gene id of the data is in any set{example}: check the gene id type (e.g. probe ids vs "
            "symbols; pass --chip to map probes to symbols)"
        )
    return message + (
        "; check the gene id type (e.g. probe ids vs symbols; --chip maps probes) or change --min-size/--max-size"
    )
