"""Out-of-core expression matrices: stream h5ad, 10x and plain HDF5 files in blocks.

:func:`open_matrix` reads only the small parts of a file (names, ``obs``, sparse
``indptr``) and returns a :class:`MatrixSource`; :meth:`MatrixSource.blocks` then walks the
matrix along its on-disk layout, yielding dense float64 :class:`Block` objects whose size
is bounded by the caller. The whole matrix is never loaded.

Layouts and what each streams efficiently::

    input                                   storage         block_axis   reads per block
    h5ad X / layers / raw, dense            dense-samples   samples      a band of whole chunks
    h5ad X / layers / raw, csr_matrix       csr             samples      one slice of data/indices
    h5ad X / layers / raw, csc_matrix       csc             genes        one slice of data/indices
    10x filtered_feature_bc_matrix.h5       csr             samples      one slice of data/indices
    plain HDF5 (n_genes, n_samples)         dense-genes     genes        a band of whole chunks

(a dense dataset chunked by whole columns only streams along the other axis; see
:attr:`MatrixSource.block_axis`). Bad input follows ``shared/FORMATS.md``: every problem,
including corruption only discovered while streaming, raises
:class:`~permenrich.errors.InputError` with one line naming the file, the dataset path and
what to do.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import pandas as pd

from permenrich.errors import InputError, OptionError, option
from permenrich.io.expression import (
    _existing_file,
    _h5_get as _get,
    _h5_open,
    _h5_strings,
    _preview,
    _read_elem,
    check_layer_options,
    hdf5_layout,
)

logger = logging.getLogger(__name__)

__all__ = ["Block", "MatrixSource", "open_matrix", "plain_h5py_read_seconds"]

_H5AD_SUFFIXES = {".h5ad"}
_NUMERIC_KINDS = "biuf"
_PLAIN_READ_BYTES = 64 << 20

Storage = Literal["dense-samples", "dense-genes", "csr", "csc"]
Axis = Literal["samples", "genes"]


@dataclass
class Block:
    """A dense piece of the samples x genes matrix.

    Every block covers either all genes (a *sample block*, from a source whose
    ``block_axis`` is ``"samples"``) or all samples (a *gene block*).

    Attributes
    ----------
    sample_start, sample_stop : int
        Half-open range of sample rows covered. When :meth:`MatrixSource.blocks` was given
        ``samples=``, these are positions in that restricted list, not in the file: the
        block holds the rows of file samples ``samples[sample_start:sample_stop]``.
    gene_start, gene_stop : int
        Half-open range of genes covered (always positions in the file's gene order).
    values : numpy.ndarray
        float64, C-contiguous, shape ``(sample_stop - sample_start, gene_stop - gene_start)``;
        the values as stored, zeros filled in for sparse input.
    """

    sample_start: int
    sample_stop: int
    gene_start: int
    gene_stop: int
    values: np.ndarray


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


@contextlib.contextmanager
def _reading(where: str, dataset_path: str, what: str) -> Iterator[None]:
    """Turn the many exception types h5py/scipy raise for damaged files into InputError."""
    try:
        yield
    except InputError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, IndexError) as exc:
        raise InputError(
            f"{where}: cannot read dataset {dataset_path!r} ({what}; {_one_line(exc)}); "
            "the file may be truncated or damaged, re-create or re-download it"
        ) from exc


def _attr_str(node: Any, name: str) -> str | None:
    value = node.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _dataset(f: Any, where: str, path: str, *, ndim: int, expected: str) -> Any:
    import h5py

    node = _get(f, path)
    if not isinstance(node, h5py.Dataset) or node.ndim != ndim:
        found = "missing" if node is None else ("a group" if isinstance(node, h5py.Group) else f"{node.ndim}-D")
        raise InputError(f"{where}: dataset {path!r} is {found}; expected {expected}")
    return node


def _check_numeric(node: Any, where: str, path: str) -> None:
    if node.dtype.kind not in _NUMERIC_KINDS:
        raise InputError(
            f"{where}: dataset {path!r} holds {node.dtype} values, expected numbers; "
            "point to the numeric expression matrix"
        )


def _next_prime(n: int) -> int:
    candidate = max(3, n) | 1
    while any(candidate % d == 0 for d in range(3, math.isqrt(candidate) + 1, 2)):
        candidate += 2
    return candidate


def _open_dataset(file: Any, path: str, cache_bytes: int = 0) -> Any:
    """Open ``file[path]`` with a chunk cache of at least ``cache_bytes``.

    Needed when a block cannot hold a whole band of chunks: without a cache large enough
    for one band, HDF5 would read (and decompress) each chunk once per block touching it.
    HDF5 applies the cache size only when the dataset is not open already, which is why
    readers keep paths, not open datasets, between calls.
    """
    import h5py

    if cache_bytes <= file.id.get_access_plist().get_cache()[2]:
        return file[path]  # the file's default cache is large enough
    dataset = file[path]
    chunks, itemsize = dataset.chunks, dataset.dtype.itemsize
    del dataset
    if chunks is None:
        return file[path]
    n_chunks = max(1, cache_bytes // (int(np.prod(chunks)) * itemsize))
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    # HDF5's default preemption weight (0.75): with w0 = 1 the chunks that slices with
    # gaps (a subset of cells) read only partly were kept beyond the cache's size, and a
    # streamed pass grew by hundreds of MB (memory audit: +388 MiB against +44 MiB).
    dapl.set_chunk_cache(_next_prime(100 * n_chunks), int(cache_bytes), 0.75)
    return h5py.Dataset(h5py.h5d.open(file.id, path.encode("utf-8"), dapl=dapl))


def _lines_per_block(budget: int, line_bytes: int, chunk_extent: int | None) -> int:
    """Lines (rows or columns) per block: as many as fit, rounded down to whole chunks."""
    lines = max(1, budget // max(1, line_bytes))
    if chunk_extent and lines >= chunk_extent:
        lines -= lines % chunk_extent
    return lines


def _prefetched(fill: Any, new_buffers: Any, n_blocks: int, n_buffers: int = 2) -> Iterator[Any]:
    """Yield ``fill(buffers, i)`` for ``i < n_blocks``, reading ahead in a background thread.

    ``n_buffers`` buffer sets rotate: the thread fills the next set while the consumer
    holds the current one, and a set is handed back when the consumer asks for the next
    item, so a yielded item is valid until then. An exception raised by ``fill`` (e.g. the
    InputError of a damaged file) is raised in the consumer; a consumer that stops early
    stops the thread.
    """
    import queue
    import threading

    if n_blocks == 0:
        return
    free: queue.Queue = queue.Queue()
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    for _ in range(min(n_buffers, n_blocks)):
        free.put(new_buffers())

    def produce() -> None:
        for block in range(n_blocks):
            buffers = free.get()
            if stop.is_set():
                return
            try:
                ready.put((buffers, fill(buffers, block), None))
            except BaseException as error:  # noqa: BLE001 - handed to the consumer
                ready.put((buffers, None, error))
                return

    thread = threading.Thread(target=produce, name="permenrich-prefetch", daemon=True)
    thread.start()
    try:
        for _ in range(n_blocks):
            buffers, item, error = ready.get()
            if error is not None:
                raise error
            yield item
            free.put(buffers)
    finally:
        stop.set()
        free.put(None)  # wakes a producer waiting for a buffer
        thread.join()


# --------------------------------------------------------------------------------------
# Readers: one per on-disk layout
# --------------------------------------------------------------------------------------


class _DenseReader:
    """A 2-D dataset, samples along ``sample_axis``, streamed along ``stream_axis``."""

    def __init__(self, dataset: Any, path: str, where: str, *, sample_axis: int) -> None:
        # Only metadata is kept: an open dataset would pin its chunk cache size (see _open_dataset).
        self.file, self.path, self.where, self.sample_axis = dataset.file, path, where, sample_axis
        self.shape, self.chunks, self.itemsize = dataset.shape, dataset.chunks, dataset.dtype.itemsize
        chunks = dataset.chunks
        # Row bands are the natural order (C layout, and how chunked writers fill files);
        # a dataset chunked by whole columns only is cheap to read by columns instead.
        column_chunked = chunks is not None and chunks[0] >= dataset.shape[0] and chunks[1] < dataset.shape[1]
        self.stream_axis = 1 if column_chunked else 0
        self.block_axis: Axis = "samples" if self.stream_axis == sample_axis else "genes"
        self.storage: Storage = "dense-samples" if sample_axis == 0 else "dense-genes"
        self.dataset_paths = (path,)
        self.matrix_path = path

    def blocks(self, budget: int, selected: np.ndarray | None) -> Iterator[Block]:
        axis, chunks = self.stream_axis, self.chunks
        n_lines, n_other = self.shape[axis], self.shape[1 - axis]
        chunk_extent = chunks[axis] if chunks is not None else None
        step = _lines_per_block(budget, n_other * 8, chunk_extent)
        cache_bytes = 0
        if chunks is not None and step < chunks[axis]:
            # One band of chunks does not fit in a block: keep it in the chunk cache.
            cache_bytes = chunks[axis] * math.ceil(n_other / chunks[1 - axis]) * chunks[1 - axis] * self.itemsize
        with _reading(self.where, self.path, "opening"):
            ds = _open_dataset(self.file, self.path, cache_bytes)
        logger.debug("%s: streaming %r along axis %d, %d lines per block", self.where, self.path, axis, step)
        streams_samples = self.block_axis == "samples"
        for start in range(0, n_lines, step):
            stop = min(start + step, n_lines)
            lines, other = slice(start, stop), slice(None)
            take_lines = take_other = None
            if streams_samples:
                lo, hi = (start, stop) if selected is None else np.searchsorted(selected, [start, stop])
                if lo == hi:
                    continue  # no selected sample in this band: skip it unread
                if selected is not None:
                    rows = selected[lo:hi]
                    lines = slice(int(rows[0]), int(rows[-1]) + 1)
                    if len(rows) != lines.stop - lines.start:
                        take_lines = rows - rows[0]
                sample_range, gene_range = (int(lo), int(hi)), (0, n_other)
            else:
                if selected is not None:
                    other = slice(int(selected[0]), int(selected[-1]) + 1)
                    if len(selected) != other.stop - other.start:
                        take_other = selected - selected[0]
                sample_range = (0, n_other if selected is None else len(selected))
                gene_range = (start, stop)
            index = (lines, other) if axis == 0 else (other, lines)
            with _reading(self.where, self.path, f"{'rows' if axis == 0 else 'columns'} {start}:{stop}"):
                array = ds[index]
            if take_lines is not None:
                array = np.take(array, take_lines, axis=axis)
            if take_other is not None:
                array = np.take(array, take_other, axis=1 - axis)
            if self.sample_axis == 1:
                array = array.T
            yield Block(*sample_range, *gene_range, np.ascontiguousarray(array, dtype=np.float64))


class _CompressedReader:
    """CSR/CSC arrays (``data``, ``indices``, ``indptr``) compressed along ``major_axis``.

    ``indptr`` is read once (``n_major + 1`` integers); each block then reads one
    contiguous slice of ``data`` and ``indices``.
    """

    def __init__(
        self,
        data: Any,
        indices: Any,
        indptr: np.ndarray,
        *,
        group_path: str,
        where: str,
        major_axis: Axis,
        n_minor: int,
        storage: Storage,
    ) -> None:
        # Only metadata is kept: an open dataset would pin its chunk cache size (see _open_dataset).
        self.file, self.indptr = data.file, indptr
        self.group_path, self.where, self.n_minor = group_path, where, n_minor
        self.block_axis: Axis = major_axis
        self.storage = storage
        self.dataset_paths = (f"{group_path}/data", f"{group_path}/indices", f"{group_path}/indptr")
        self.matrix_path = group_path
        # Neighbouring blocks share the chunk that straddles their boundary: cache a few.
        self.cache_bytes = {
            name: 4 * int(np.prod(node.chunks)) * node.dtype.itemsize if node.chunks else 0
            for name, node in (("data", data), ("indices", indices))
        }

    def _open(self, name: str) -> Any:
        path = f"{self.group_path}/{name}"
        with _reading(self.where, path, "opening"):
            return _open_dataset(self.file, path, self.cache_bytes[name])

    def _read_slice(self, datasets: tuple[Any, Any], start: int, stop: int, what: str,
                    as_stored: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``data`` (as float64, or as stored) and ``indices`` of major positions
        ``start:stop``, one slice each."""
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        with _reading(self.where, f"{self.group_path}/data", what):
            data = datasets[0][lo:hi]
            if not as_stored or data.dtype.kind not in "fiu":
                data = np.asarray(data, dtype=np.float64)
        with _reading(self.where, f"{self.group_path}/indices", what):
            indices = datasets[1][lo:hi]
        self._check_indices(indices, what)
        if indices.dtype.kind == "u" or indices.dtype.itemsize > 8:
            indices = indices.astype(np.int64)
        return data, indices

    def sparse_blocks(self, budget: int, check_indices: bool = True
                      ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
        """``(major_start, major_stop, data, indices, indptr)`` slices as stored (values in
        their stored numeric dtype), each at most about ``budget / 2`` bytes of ``data`` +
        ``indices`` (at least one major line): for code that can use the sparse form
        directly (no dense fill).

        The slices are views of two reused buffer sets, filled by a background thread
        while the consumer works on the previous slice (h5py releases the GIL while it
        reads): a slice is valid until the consumer asks for the next one.
        """
        data_ds, indices_ds = self._open("data"), self._open("indices")
        data_dtype = data_ds.dtype if data_ds.dtype.kind in "fiu" else np.dtype(np.float64)
        indices_dtype = indices_ds.dtype if indices_ds.dtype.kind == "i" else np.dtype(np.int64)
        per_block = max(1, budget // (2 * (data_dtype.itemsize + indices_dtype.itemsize)))  # two buffer sets
        n_major = len(self.indptr) - 1
        bounds = [0]
        while bounds[-1] < n_major:
            start = bounds[-1]
            stop = int(np.searchsorted(self.indptr, self.indptr[start] + per_block, side="right")) - 1
            bounds.append(min(n_major, max(stop, start + 1)))
        largest = int(np.diff(np.asarray(self.indptr)[bounds]).max()) if n_major else 0

        def new_buffers() -> tuple[np.ndarray, np.ndarray]:
            return np.empty(largest, dtype=data_dtype), np.empty(largest, dtype=indices_dtype)

        def fill(buffers: tuple[np.ndarray, np.ndarray], block: int) -> tuple:
            start, stop = bounds[block], bounds[block + 1]
            lo, hi = int(self.indptr[start]), int(self.indptr[stop])
            data, indices = buffers[0][: hi - lo], buffers[1][: hi - lo]
            what = f"lines {start}:{stop}"
            for name, dataset, out in (("data", data_ds, data), ("indices", indices_ds, indices)):
                with _reading(self.where, f"{self.group_path}/{name}", what):
                    if hi > lo:
                        dataset.read_direct(out, source_sel=np.s_[lo:hi])
            if check_indices:
                self._check_indices(indices, what)
            return start, stop, data, indices, np.asarray(self.indptr[start : stop + 1] - self.indptr[start])

        return _prefetched(fill, new_buffers, len(bounds) - 1)

    def _check_indices(self, indices: np.ndarray, what: str) -> None:
        low, high = (int(indices.min()), int(indices.max())) if indices.size else (0, 0)
        if low < 0 or high >= self.n_minor:
            bad = low if low < 0 else high
            raise InputError(
                f"{self.where}: dataset {self.group_path + '/indices'!r} holds index {bad} outside "
                f"0..{self.n_minor - 1} ({what}); the file is damaged or its shape does not match, re-create it"
            )

    def blocks(self, budget: int, selected: np.ndarray | None, value_transform: Any = None) -> Iterator[Block]:
        import scipy.sparse as sp

        def densify(matrix: Any, sample_of_row: np.ndarray | None, sample_of_column: np.ndarray | None) -> np.ndarray:
            if value_transform is not None:
                matrix.sum_duplicates()  # the transform must see each (sample, gene) value once
                if sample_of_row is not None:
                    samples = np.repeat(sample_of_row, np.diff(matrix.indptr))
                else:
                    samples = sample_of_column[matrix.indices]
                value_transform(matrix.data, samples)
            return matrix.toarray()

        datasets = (self._open("data"), self._open("indices"))
        n_major = len(self.indptr) - 1
        step = _lines_per_block(budget, self.n_minor * 8, None)
        major_is_samples = self.block_axis == "samples"
        label = "samples" if major_is_samples else "genes"
        logger.debug("%s: streaming %r, %d %s per block", self.where, self.group_path, step, label)
        for start in range(0, n_major, step):
            stop = min(start + step, n_major)
            if major_is_samples:
                lo, hi = (start, stop) if selected is None else np.searchsorted(selected, [start, stop])
                if lo == hi:
                    continue
                first, last = (start, stop) if selected is None else (int(selected[lo]), int(selected[hi - 1]) + 1)
                data, indices = self._read_slice(datasets, first, last, f"{label} {first}:{last}")
                local_indptr = self.indptr[first : last + 1] - self.indptr[first]
                with _reading(self.where, self.group_path, f"{label} {first}:{last}"):
                    matrix = sp.csr_matrix((data, indices, local_indptr), shape=(last - first, self.n_minor))
                    if selected is not None and (last - first) != (hi - lo):
                        matrix = matrix[selected[lo:hi] - first]
                    rows = np.arange(first, last) if selected is None else selected[lo:hi]
                    values = densify(matrix, rows, None)
                yield Block(int(lo), int(hi), 0, self.n_minor, np.ascontiguousarray(values, dtype=np.float64))
            else:
                data, indices = self._read_slice(datasets, start, stop, f"{label} {start}:{stop}")
                local_indptr = self.indptr[start : stop + 1] - self.indptr[start]
                with _reading(self.where, self.group_path, f"{label} {start}:{stop}"):
                    matrix = sp.csc_matrix((data, indices, local_indptr), shape=(self.n_minor, stop - start))
                    if selected is not None:
                        matrix = matrix[selected]
                    values = densify(matrix, None, np.arange(self.n_minor) if selected is None else selected)
                n_rows = self.n_minor if selected is None else len(selected)
                yield Block(0, n_rows, start, stop, np.ascontiguousarray(values, dtype=np.float64))


def _compressed(
    f: Any, where: str, group_path: str, *, n_major: int, n_minor: int, major_axis: Axis, storage: Storage
) -> _CompressedReader:
    """Check a data/indices/indptr triple against the expected shape; read indptr."""
    data = _dataset(f, where, f"{group_path}/data", ndim=1, expected="a 1-D array of the stored values")
    indices = _dataset(f, where, f"{group_path}/indices", ndim=1, expected="a 1-D integer array")
    indptr_node = _dataset(f, where, f"{group_path}/indptr", ndim=1, expected="a 1-D integer array")
    _check_numeric(data, where, f"{group_path}/data")
    for node, name in ((indices, "indices"), (indptr_node, "indptr")):
        if node.dtype.kind not in "iu":
            raise InputError(
                f"{where}: dataset {group_path + '/' + name!r} holds {node.dtype} values, expected integers; "
                "the sparse matrix is damaged, re-create it"
            )
    if data.shape != indices.shape:
        raise InputError(
            f"{where}: {group_path}/data has {data.shape[0]} entries but {group_path}/indices has "
            f"{indices.shape[0]}; they must be the same length, the file is damaged"
        )
    major_name = "samples" if major_axis == "samples" else "genes"
    if indptr_node.shape[0] != n_major + 1:
        raise InputError(
            f"{where}: {group_path}/indptr has {indptr_node.shape[0]} entries, expected n_{major_name} + 1 = "
            f"{n_major + 1} for {n_major} {major_name}; the matrix does not match its names"
        )
    with _reading(where, f"{group_path}/indptr", "reading indptr"):
        indptr = np.asarray(indptr_node[()], dtype=np.int64)
    if indptr[0] != 0 or (indptr.size > 1 and np.any(np.diff(indptr) < 0)):
        raise InputError(
            f"{where}: {group_path}/indptr must start at 0 and never decrease; the sparse matrix is damaged"
        )
    if indptr[-1] != data.shape[0]:
        raise InputError(
            f"{where}: {group_path}/indptr ends at {indptr[-1]} but {group_path}/data has {data.shape[0]} entries; "
            "they must agree, the sparse matrix is damaged"
        )
    return _CompressedReader(
        data, indices, indptr, group_path=group_path, where=where, major_axis=major_axis, n_minor=n_minor,
        storage=storage,
    )


# --------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------


class MatrixSource:
    """An open samples x genes matrix in an HDF5 file, read block by block.

    Use :func:`open_matrix` to create one, and close it (or use it as a context manager)
    when done; the HDF5 file stays open in between.

    Attributes
    ----------
    source : str
        The path as given; used in messages.
    n_samples, n_genes : int
        Matrix size.
    sample_ids, gene_ids : numpy.ndarray
        dtype object (str). Gene ids may hold duplicates (10x symbols); sample ids are unique.
    obs : pandas.DataFrame or None
        Per-sample annotations (h5ad ``obs``, index = sample ids); None for 10x and plain HDF5.
    storage : {"dense-samples", "dense-genes", "csr", "csc"}
        On-disk layout: dense with samples (or genes) as rows, sample-major sparse (h5ad
        CSR, 10x) or gene-major sparse (h5ad CSC).
    block_axis : {"samples", "genes"}
        What :meth:`blocks` slices along: ``"samples"`` gives sample blocks (all genes),
        ``"genes"`` gives gene blocks (all samples).
    nbytes : int
        Bytes the whole matrix would take dense as float64 (``n_samples * n_genes * 8``).
    dataset_paths : tuple of str
        The HDF5 datasets :meth:`blocks` reads (for :func:`plain_h5py_read_seconds`).
    dataset : str
        The matrix's dataset or sparse group (``X``, ``layers/counts``, ``raw/X``,
        ``matrix``); used in messages.
    """

    def __init__(
        self,
        *,
        file: Any,
        source: str,
        reader: _DenseReader | _CompressedReader,
        sample_ids: np.ndarray,
        gene_ids: np.ndarray,
        obs: pd.DataFrame | None,
    ) -> None:
        self._file = file
        self._reader = reader
        self.source = source
        self.sample_ids = sample_ids
        self.gene_ids = gene_ids
        self.obs = obs
        self.n_samples = len(sample_ids)
        self.n_genes = len(gene_ids)
        self.storage: Storage = reader.storage
        self.block_axis: Axis = reader.block_axis
        self.nbytes = self.n_samples * self.n_genes * 8
        self.dataset_paths: tuple[str, ...] = reader.dataset_paths
        self.dataset: str = reader.matrix_path
        #: How to open the file again after :meth:`release` (set by :func:`open_matrix`),
        #: and the file's (size, modification time) then, to refuse a changed file.
        self._reopen: Any = None
        self._identity: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return (
            f"MatrixSource({self.source!r}, n_samples={self.n_samples}, n_genes={self.n_genes}, "
            f"storage={self.storage!r}, block_axis={self.block_axis!r})"
        )

    def __enter__(self) -> MatrixSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._file is None

    def close(self) -> None:
        """Close the HDF5 file (idempotent); later :meth:`blocks` calls fail."""
        self._reopen = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def release(self) -> None:
        """Close the HDF5 file until it is read again (a finished run's result may still
        read it, e.g. to redraw a set's null): other programs can then write the file.
        Reading it again reopens it, and refuses it if it changed meanwhile."""
        if self._file is not None and self._reopen is not None:
            self._file.close()
            self._file = None

    def _ensure_open(self) -> None:
        if self._file is not None or self._reopen is None:
            return
        path = Path(self._reopen.args[0])
        if _file_identity(path) != self._identity:
            raise InputError(f"{self.source}: the file changed (or is gone) since this run read it; rerun the "
                             "analysis on it")
        again = self._reopen()
        self._file, self._reader = again._file, again._reader
        again._file = None  # now ours

    def sparse_blocks(self, max_block_bytes: int, *, check_indices: bool = True
                      ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] | None:
        """For sparse storage, the stored CSR (``storage == "csr"``: lines are samples) or
        CSC (lines are genes) slices ``(line_start, line_stop, data, indices, indptr)``,
        two of them at most ``max_block_bytes`` together (the next is read ahead while the
        caller holds the current one, which stays valid until the caller asks for the
        next); None for dense storage.

        With ``check_indices=False`` the caller promises to check every index against
        ``0 <= index < n_minor`` itself (a kernel can do it on the fly) and to call
        :meth:`check_sparse_indices` on a slice that fails.
        """
        self._ensure_open()
        if self.closed:
            raise ValueError(f"{self.source}: the matrix source is closed")
        if not isinstance(self._reader, _CompressedReader):
            return None
        return self._reader.sparse_blocks(int(max_block_bytes), check_indices=check_indices)

    def check_sparse_indices(self, indices: np.ndarray, line_start: int, line_stop: int) -> None:
        """Raise the InputError of a damaged file if a slice's indices leave the matrix."""
        self._reader._check_indices(indices, f"lines {line_start}:{line_stop}")

    def blocks(self, max_block_bytes: int, samples: np.ndarray | None = None, *,
               value_transform: Any = None) -> Iterator[Block]:
        """Yield the matrix in dense float64 blocks along :attr:`block_axis`.

        Parameters
        ----------
        max_block_bytes : int
            Upper bound for ``block.values.nbytes``, counted over all samples of the file
            (a restriction to fewer ``samples`` only makes blocks smaller). Blocks hold at
            least one sample (or gene) even when that exceeds the bound. For a chunked
            dense dataset, blocks are whole bands of chunks whenever one band fits.
        samples : numpy.ndarray of int, optional
            Strictly increasing 0-based sample positions to restrict to. Blocks then hold
            only these samples' rows, in this order, and ``Block.sample_start`` /
            ``sample_stop`` index into ``samples`` (the block holds file samples
            ``samples[block.sample_start:block.sample_stop]``). For sample blocks, parts of
            the file without any selected sample are skipped unread.
        value_transform : callable, optional
            Sparse storage only: ``value_transform(data, sample_of_value)`` rewrites the
            stored values (float64, duplicates summed) in place before they are made dense,
            ``sample_of_value`` holding each value's file sample position. For a transform
            that keeps 0 at 0 (e.g. log1p of scaled counts) this equals transforming the
            dense block, at the cost of the stored values only.

        Yields
        ------
        Block
            In order along :attr:`block_axis`; together the blocks cover the (restricted)
            matrix exactly once.

        Raises
        ------
        OptionError
            ``max_block_bytes`` not a positive integer; ``samples`` not sorted, empty,
            repeated or out of range.
        InputError
            While iterating: a dataset that cannot be read (truncated or damaged file) or
            sparse indices outside the matrix.
        ValueError
            The source was closed.

        Notes
        -----
        Memory in use at once is about one block: the float64 ``values``, plus for dense
        input the slab as stored (in the file's dtype) and for sparse input the slice of
        ``data``/``indices`` behind the block (never more non-zeros than the block has
        cells). When a band of chunks does not fit in ``max_block_bytes``, blocks are cut
        inside the band and the dataset is opened with a chunk cache holding one band, so
        each chunk is still read and decompressed once.
        """
        self._ensure_open()
        if self._file is None:
            raise ValueError(f"{self.source}: MatrixSource is closed; open it again with open_matrix")
        is_integer = isinstance(max_block_bytes, (int, np.integer)) and not isinstance(max_block_bytes, bool)
        if not is_integer or max_block_bytes < 1:
            raise OptionError(f"max_block_bytes must be a positive integer number of bytes, got {max_block_bytes!r}")
        selected = None if samples is None else _check_samples(samples, self.n_samples)
        if value_transform is None:
            return self._reader.blocks(int(max_block_bytes), selected)
        if not isinstance(self._reader, _CompressedReader):
            raise OptionError(f"{self.source}: value_transform applies to sparse storage only, this is {self.storage}")
        return self._reader.blocks(int(max_block_bytes), selected, value_transform)


def _check_samples(samples: Any, n_samples: int) -> np.ndarray:
    array = np.asarray(samples)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise OptionError(
            f"samples must be a 1-D array of integer sample positions, got {array.dtype} with shape {array.shape}; "
            "for a boolean mask pass np.flatnonzero(mask)"
        )
    if array.size == 0:
        raise OptionError("samples is empty; select at least one sample or pass samples=None for all")
    array = array.astype(np.int64)
    if np.any(np.diff(array) <= 0):
        raise OptionError("samples must be strictly increasing (sorted, no repeats); pass np.unique(samples)")
    if array[0] < 0 or array[-1] >= n_samples:
        raise OptionError(f"samples must lie in 0..{n_samples - 1}, got values from {array[0]} to {array[-1]}")
    return array


# --------------------------------------------------------------------------------------
# Opening: format detection and the three layouts
# --------------------------------------------------------------------------------------


def open_matrix(
    path: str | Path,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    h5_dataset: str = "X",
    gene_id_field: Literal["name", "id"] = "name",
) -> MatrixSource:
    """Open an h5ad, 10x or plain HDF5 expression matrix for block-wise reading.

    Only names, ``obs`` and (for sparse input) ``indptr`` are read here; the values are
    read by :meth:`MatrixSource.blocks`.

    Parameters
    ----------
    path : str or Path
        - h5ad (``.h5ad``, or any HDF5 file whose root says ``encoding-type: anndata``):
          ``X`` samples x genes, dense or a ``csr_matrix``/``csc_matrix`` group (also the
          older ``h5sparse_format`` groups); genes from ``var``'s index, samples and
          ``obs`` from ``obs``.
        - 10x ``filtered_feature_bc_matrix.h5``: group ``matrix`` with ``data``,
          ``indices``, ``indptr``, ``shape`` = (genes, barcodes), ``barcodes`` and
          ``features/name``, ``features/id``; samples are barcodes.
        - plain HDF5: a 2-D dataset ``h5_dataset`` of shape (n_genes, n_samples) with 1-D
          string datasets ``gene_ids`` and ``sample_ids`` in the same group (the layout of
          :func:`~permenrich.io.read_expression`).
    layer : str, optional
        h5ad only: stream ``layers/<layer>`` instead of ``X``.
    use_raw : bool, default False
        h5ad only: stream ``raw/X``, with genes from ``raw/var``.
    h5_dataset : str, default "X"
        Plain HDF5 only: path of the 2-D dataset.
    gene_id_field : {"name", "id"}, default "name"
        10x only: gene ids from ``features/name`` (symbols; duplicates are kept with a
        warning, to be collapsed later) or ``features/id`` (Ensembl ids).

    Returns
    -------
    MatrixSource
        Holds the file open; close it, or use ``with open_matrix(...) as source:``.

    Raises
    ------
    InputError
        Missing, truncated or non-HDF5 file; a missing dataset or group; a matrix whose
        shape, ``indptr`` or names disagree; an unknown sparse encoding; an unknown layer;
        ``use_raw`` without ``raw``; duplicated sample ids; an empty matrix.
    OptionError
        ``layer`` together with ``use_raw``, layer/raw options for a non-h5ad file, or an
        unknown ``gene_id_field``.

    Examples
    --------
    Per-gene sums over two groups of cells, 64 MiB at a time:

    >>> with open_matrix("cells.h5ad") as source:  # doctest: +SKIP
    ...     groups = source.obs["group"].to_numpy()
    ...     chosen = np.flatnonzero(np.isin(groups, ["treated", "control"]))
    ...     sums = np.zeros(source.n_genes)
    ...     for block in source.blocks(64 << 20, samples=chosen):
    ...         sums[block.gene_start : block.gene_stop] += block.values.sum(axis=0)
    """
    if gene_id_field not in ("name", "id"):
        raise OptionError(f"gene_id_field must be 'name' or 'id', got {gene_id_field!r}")
    check_layer_options(layer, use_raw)
    where = str(path)
    file_path = _existing_file(path, "expression")
    f = _h5_open(file_path, where)
    try:
        with _reading(where, "/", "reading the file structure"):
            is_h5ad = file_path.suffix.lower() in _H5AD_SUFFIXES or _attr_str(f, "encoding-type") == "anndata"
            if is_h5ad:
                parts = _open_h5ad(f, where, layer=layer, use_raw=use_raw)
            else:
                if layer is not None or use_raw:
                    given = option("layer", layer) if layer is not None else option("use_raw", True)
                    raise OptionError(
                        f"{given} applies only to h5ad input, not to {where} (not an h5ad file); drop the option"
                    )
                if hdf5_layout(f, where, h5_dataset) == "10x":
                    parts = _open_10x(f, where, gene_id_field=gene_id_field)
                else:
                    parts = _open_plain(f, where, h5_dataset=h5_dataset)
        reader, sample_ids, gene_ids, obs = parts
        if len(sample_ids) == 0 or len(gene_ids) == 0:
            raise InputError(
                f"{where}: the matrix has {len(sample_ids)} samples and {len(gene_ids)} genes; nothing to analyse"
            )
        samples_index = pd.Index(sample_ids)
        if samples_index.has_duplicates:
            dup = samples_index[samples_index.duplicated()][0]
            raise InputError(
                f"{where}: sample id {dup!r} appears {int((samples_index == dup).sum())} times; "
                "sample ids must be unique, make them unique (e.g. AnnData.obs_names_make_unique()) and re-save"
            )
    except BaseException:
        f.close()
        raise
    source = MatrixSource(file=f, source=where, reader=reader, sample_ids=sample_ids, gene_ids=gene_ids, obs=obs)
    source._reopen = functools.partial(open_matrix, file_path, layer=layer, use_raw=use_raw, h5_dataset=h5_dataset,
                                       gene_id_field=gene_id_field)
    source._identity = _file_identity(file_path)
    logger.debug("%s: opened %r", where, source)
    return source


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, None if it is gone."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


_Parts = tuple[Any, np.ndarray, np.ndarray, "pd.DataFrame | None"]


def _open_h5ad(f: Any, where: str, *, layer: str | None, use_raw: bool) -> _Parts:
    import h5py

    if use_raw:
        if not isinstance(_get(f, "raw"), h5py.Group):
            raise InputError(f"{where}: {option('use_raw', True)} but the file has no 'raw' group; drop it to read X")
        matrix_path, var_path = "raw/X", "raw/var"
    elif layer is not None:
        layers = _get(f, "layers")
        available = sorted(layers.keys()) if isinstance(layers, h5py.Group) else []
        if layer not in available:
            raise InputError(
                f"{where}: layer {layer!r} not found (no 'layers/{layer}'); "
                f"available layers: {_preview(available) or 'none'}"
            )
        matrix_path, var_path = f"layers/{layer}", "var"
    else:
        matrix_path, var_path = "X", "var"
    for key in ("obs", var_path, matrix_path):
        if _get(f, key) is None:
            hint = "the h5ad is incomplete"
            if key == "X":
                layers = _get(f, "layers")
                available = sorted(layers.keys()) if isinstance(layers, h5py.Group) else []
                hint = (f"the matrix to analyse must be X (layers here: {_preview(available) or 'none'}): "
                        "set adata.X = adata.layers[name] and save the h5ad again")
            raise InputError(f"{where}: {key!r} missing; {hint}")
    with _reading(where, "obs", "reading obs"):
        obs = _read_frame(f["obs"])
    obs.index = obs.index.astype(str)
    with _reading(where, var_path, f"reading the index of {var_path}"):
        gene_ids = _frame_index(f[var_path], where, var_path)
    sample_ids = np.array(obs.index.to_list(), dtype=object)
    n_samples, n_genes = len(sample_ids), len(gene_ids)
    node = f[matrix_path]
    if isinstance(node, h5py.Dataset):
        if node.ndim != 2 or node.shape != (n_samples, n_genes):
            raise InputError(
                f"{where}: dataset {matrix_path!r} has shape {node.shape}, expected (n_obs, n_var) = "
                f"({n_samples}, {n_genes}) from obs and {var_path}; the matrix does not match its names"
            )
        _check_numeric(node, where, matrix_path)
        return _DenseReader(node, matrix_path, where, sample_axis=0), sample_ids, gene_ids, obs
    encoding = _attr_str(node, "encoding-type")
    legacy = _attr_str(node, "h5sparse_format")
    if encoding in ("csr_matrix", "csc_matrix"):
        kind, shape_attr = encoding[:3], "shape"
    elif encoding is None and legacy in ("csr", "csc"):
        kind, shape_attr = legacy, "h5sparse_shape"
    else:
        found = encoding or (f"h5sparse_format={legacy}" if legacy else "none")
        raise InputError(
            f"{where}: group {matrix_path!r} has encoding {found!r}; expected a sparse matrix encoded as "
            "'csr_matrix' or 'csc_matrix' or a dense dataset; re-save it with anndata"
        )
    shape = node.attrs.get(shape_attr)
    if shape is None or tuple(int(x) for x in np.ravel(shape)) != (n_samples, n_genes):
        found = "missing" if shape is None else tuple(int(x) for x in np.ravel(shape))
        raise InputError(
            f"{where}: {matrix_path!r} has shape attribute {found}, expected (n_obs, n_var) = "
            f"({n_samples}, {n_genes}) from obs and {var_path}; the matrix does not match its names"
        )
    if kind == "csr":
        reader = _compressed(
            f, where, matrix_path, n_major=n_samples, n_minor=n_genes, major_axis="samples", storage="csr"
        )
    else:
        reader = _compressed(
            f, where, matrix_path, n_major=n_genes, n_minor=n_samples, major_axis="genes", storage="csc"
        )
    return reader, sample_ids, gene_ids, obs


def _read_frame(node: Any) -> pd.DataFrame:
    """An h5ad dataframe: anndata's encoding, or the pre-0.7 compound dataset."""
    import h5py

    if isinstance(node, h5py.Dataset) and node.dtype.names:
        records = node[()]
        frame = pd.DataFrame(
            {
                name: [x.decode("utf-8") if isinstance(x, bytes) else x for x in records[name]]
                for name in records.dtype.names
            }
        )
        return frame.set_index("index") if "index" in frame.columns else frame
    frame = _read_elem(node)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a dataframe, found {type(frame).__name__}")
    return frame


def _frame_index(node: Any, where: str, path: str) -> np.ndarray:
    """Row names of an h5ad dataframe without reading its other columns."""
    import h5py

    if isinstance(node, h5py.Dataset):
        if not node.dtype.names or "index" not in node.dtype.names:
            raise InputError(f"{where}: {path!r} is a dataset without an 'index' field; expected an h5ad dataframe")
        return _h5_strings_array(node["index"])
    name = _attr_str(node, "_index")
    if name is None:
        name = next((n for n in ("_index", "index") if n in node), None)
    if name is None or name not in node:
        detail = f"its _index attribute names {name!r}" if name else "no _index"
        raise InputError(f"{where}: {path!r} has no index column ({detail}); the file is not a complete h5ad")
    column = node[name]
    if isinstance(column, h5py.Dataset):
        return _h5_strings(column)
    return np.array([str(x) for x in _read_elem(column)], dtype=object)


def _h5_strings_array(data: np.ndarray) -> np.ndarray:
    return np.array([x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in data], dtype=object)


def _open_10x(f: Any, where: str, *, gene_id_field: str) -> _Parts:
    """10x ``filtered_feature_bc_matrix.h5``: CSC genes x barcodes = CSR samples x genes."""
    names_path = f"matrix/features/{gene_id_field}"
    shape_node = _dataset(
        f, where, "matrix/shape", ndim=1, expected="2 integers (n_genes, n_barcodes) in the 10x layout"
    )
    barcodes_node = _dataset(f, where, "matrix/barcodes", ndim=1, expected="1-D barcode strings in the 10x layout")
    names_node = _dataset(f, where, names_path, ndim=1, expected="1-D feature strings in the 10x layout")
    shape = tuple(int(x) for x in shape_node[()])
    barcodes, gene_ids = _h5_strings(barcodes_node), _h5_strings(names_node)
    if shape != (len(gene_ids), len(barcodes)):
        raise InputError(
            f"{where}: matrix/shape is {shape} but {names_path} has {len(gene_ids)} and matrix/barcodes "
            f"{len(barcodes)} entries; expected shape (n_features, n_barcodes), the file is damaged"
        )
    duplicated = pd.Index(gene_ids).duplicated(keep=False)
    if duplicated.any():
        logger.warning(
            "%s: %d features share %d duplicated %s values (e.g. %s); they are collapsed when the matrix is read "
            "into memory, and a streamed one refuses them",
            where, int(duplicated.sum()), int(pd.Index(gene_ids[duplicated]).nunique()), names_path,
            _preview(pd.unique(gene_ids[duplicated]), limit=3),
        )
    reader = _compressed(
        f, where, "matrix", n_major=len(barcodes), n_minor=len(gene_ids), major_axis="samples", storage="csr"
    )
    return reader, barcodes, gene_ids, None


def _open_plain(f: Any, where: str, *, h5_dataset: str) -> _Parts:
    """The plain layout, whose datasets :func:`hdf5_layout` found."""
    node = f[h5_dataset]
    _check_numeric(node, where, h5_dataset)
    group = posixpath.dirname(h5_dataset.strip("/"))
    names = {key: _h5_strings(f[posixpath.join(group, key) if group else key]) for key in ("gene_ids", "sample_ids")}
    if node.shape != (len(names["gene_ids"]), len(names["sample_ids"])):
        raise InputError(
            f"{where}: dataset {h5_dataset!r} has shape {node.shape} but gene_ids has {len(names['gene_ids'])} and "
            f"sample_ids {len(names['sample_ids'])} entries; expected shape (n_genes, n_samples)"
        )
    reader = _DenseReader(node, h5_dataset.strip("/"), where, sample_axis=1)
    return reader, names["sample_ids"], names["gene_ids"], None


# --------------------------------------------------------------------------------------
# Baseline for benchmarks
# --------------------------------------------------------------------------------------


def plain_h5py_read_seconds(path: str | Path, dataset_paths: str | Sequence[str]) -> float:
    """Seconds h5py takes to read every element of some datasets, sequentially.

    The baseline against which block readers are benchmarked: each dataset is read in
    storage order, in bands of whole chunks along its first axis (or rows, when not
    chunked) of at most ~64 MiB, into one reused buffer. Opening the file is not timed.

    Parameters
    ----------
    path : str or Path
        An HDF5 file.
    dataset_paths : str or sequence of str
        Datasets to read, in this order; a group stands for all datasets below it (in
        name order), e.g. ``"X"`` for a sparse h5ad matrix or
        ``MatrixSource.dataset_paths``.

    Returns
    -------
    float
        Elapsed wall-clock seconds (``time.perf_counter``).

    Raises
    ------
    InputError
        Missing or unreadable file, or a path that is neither a dataset nor a group.
    """
    import h5py

    where = str(path)
    if isinstance(dataset_paths, str):
        dataset_paths = [dataset_paths]
    file_path = _existing_file(path, "HDF5")
    with _h5_open(file_path, where) as f:
        datasets = []
        for name in dataset_paths:
            node = _get(f, name)
            if isinstance(node, h5py.Dataset):
                datasets.append(node)
            elif isinstance(node, h5py.Group):
                found: list[Any] = []
                node.visititems(lambda _, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
                datasets.extend(sorted(found, key=lambda d: d.name))
            else:
                raise InputError(f"{where}: dataset {name!r} missing; name datasets or groups present in the file")
        start = time.perf_counter()
        for ds in datasets:
            with _reading(where, ds.name, "plain sequential read"):
                _read_all(ds)
        return time.perf_counter() - start


def _read_all(ds: Any) -> None:
    if ds.ndim == 0 or ds.size == 0:
        ds[()]
        return
    line_elements = int(np.prod(ds.shape[1:]))
    line_bytes = line_elements * ds.dtype.itemsize
    step = _lines_per_block(_PLAIN_READ_BYTES, line_bytes, ds.chunks[0] if ds.chunks else None)
    if ds.chunks:
        step = max(step, ds.chunks[0])
    step = min(step, ds.shape[0])
    if ds.dtype.kind == "O":  # variable-length strings cannot be read into a buffer
        for start in range(0, ds.shape[0], step):
            ds[start : start + step]
        return
    buffer = np.empty((step, *ds.shape[1:]), dtype=ds.dtype)
    for start in range(0, ds.shape[0], step):
        stop = min(start + step, ds.shape[0])
        ds.read_direct(buffer, source_sel=np.s_[start:stop], dest_sel=np.s_[0 : stop - start])
