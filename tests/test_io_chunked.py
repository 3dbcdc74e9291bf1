"""Out-of-core block readers (h5ad dense/CSR/CSC, layers, raw, 10x, plain HDF5) and their bad-input errors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from permenrich.errors import InputError, OptionError
from permenrich.io.chunked import Block, MatrixSource, open_matrix, plain_h5py_read_seconds

anndata = pytest.importorskip("anndata", reason="install anndata to test h5ad reading")
try:
    from anndata.io import write_elem
except ImportError:  # anndata < 0.11
    from anndata.experimental import write_elem

N_SAMPLES, N_GENES = 57, 83
ROW = N_GENES * 8  # bytes of one dense float64 sample row
SELECTION = np.array([0, 3, 4, 5, 20, 21, 38, 56])


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def counts() -> sp.csr_matrix:
    """samples x genes, ~25% non-zero, float32 as in most h5ad files."""
    rng = np.random.default_rng(7)
    matrix = sp.random(N_SAMPLES, N_GENES, density=0.25, format="csr", dtype=np.float32, random_state=rng)
    matrix.data = np.round(matrix.data * 100, 2).astype(np.float32)
    return matrix


def sample_names(n: int = N_SAMPLES) -> list[str]:
    return [f"cell{i}" for i in range(n)]


def gene_names(n: int = N_GENES) -> list[str]:
    return [f"G{i}" for i in range(n)]


def make_adata(X) -> "anndata.AnnData":
    obs = pd.DataFrame(
        {
            "group": pd.Categorical(np.where(np.arange(N_SAMPLES) % 3 == 0, "treated", "control")),
            "depth": np.arange(N_SAMPLES, dtype=np.float64) * 1.5,
        },
        index=sample_names(),
    )
    return anndata.AnnData(X=X, obs=obs, var=pd.DataFrame(index=gene_names(X.shape[1])))


def dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


@pytest.fixture
def csr_h5ad(tmp_path: Path, counts: sp.csr_matrix) -> Path:
    path = tmp_path / "csr.h5ad"
    make_adata(counts.copy()).write_h5ad(path)
    return path


@pytest.fixture
def csc_h5ad(tmp_path: Path, counts: sp.csr_matrix) -> Path:
    path = tmp_path / "csc.h5ad"
    make_adata(sp.csc_matrix(counts)).write_h5ad(path)
    return path


@pytest.fixture
def dense_h5ad(tmp_path: Path, counts: sp.csr_matrix) -> Path:
    """Dense X stored contiguously (anndata's default without compression)."""
    path = tmp_path / "dense.h5ad"
    make_adata(counts.toarray()).write_h5ad(path)
    return path


def rechunk_x(path: Path, chunks: tuple[int, int], *, compression: str | None = "gzip") -> None:
    """Rewrite a dense h5ad X with a chosen chunk shape, still readable by anndata."""
    with h5py.File(path, "r+") as f:
        values = f["X"][()]
        del f["X"]
        write_elem(f, "X", values, dataset_kwargs={"chunks": chunks, "compression": compression})


@pytest.fixture
def chunked_h5ad(dense_h5ad: Path) -> Path:
    rechunk_x(dense_h5ad, (10, 17))
    return dense_h5ad


def write_10x(path: Path, counts: sp.csr_matrix, *, names: list[str] | None = None) -> Path:
    """The CellRanger >= 3 ``filtered_feature_bc_matrix.h5`` layout: CSC genes x barcodes."""
    genes_by_cells = sp.csc_matrix(counts.T)
    names = names if names is not None else gene_names()
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("data", data=genes_by_cells.data.astype(np.int32), chunks=(100,), compression="gzip")
        m.create_dataset("indices", data=genes_by_cells.indices.astype(np.int64), chunks=(100,), compression="gzip")
        m.create_dataset("indptr", data=genes_by_cells.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array(genes_by_cells.shape, dtype=np.int32))
        m.create_dataset("barcodes", data=np.array([f"AAAC{i:04d}-1" for i in range(N_SAMPLES)], dtype="S"))
        features = m.create_group("features")
        features.create_dataset("name", data=np.array(names, dtype="S"))
        features.create_dataset("id", data=np.array([f"ENSG{i:011d}" for i in range(N_GENES)], dtype="S"))
        features.create_dataset("feature_type", data=np.array(["Gene Expression"] * N_GENES, dtype="S"))
        features.create_dataset("genome", data=np.array(["GRCh38"] * N_GENES, dtype="S"))
    return path


@pytest.fixture
def tenx(tmp_path: Path, counts: sp.csr_matrix) -> Path:
    integer_counts = counts.copy()
    integer_counts.data = np.ceil(integer_counts.data)
    return write_10x(tmp_path / "filtered_feature_bc_matrix.h5", integer_counts)


def write_plain(path: Path, values_genes_by_samples: np.ndarray, *, group: str = "", chunks=(9, 57)) -> Path:
    prefix = f"{group}/" if group else ""
    with h5py.File(path, "w") as f:
        f.create_dataset(f"{prefix}X", data=values_genes_by_samples, chunks=chunks)
        f.create_dataset(f"{prefix}gene_ids", data=np.array(gene_names(), dtype=object), dtype=h5py.string_dtype())
        f.create_dataset(f"{prefix}sample_ids", data=np.array(sample_names(), dtype="S"))
    return path


# ----------------------------------------------------------------------------- helpers


def collect(
    source: MatrixSource, max_block_bytes: int, samples: np.ndarray | None = None
) -> tuple[np.ndarray, list[Block]]:
    """Assemble the blocks, checking the Block contract on the way."""
    n_rows = source.n_samples if samples is None else len(samples)
    full = np.zeros((n_rows, source.n_genes))
    covered = np.zeros((n_rows, source.n_genes), dtype=np.int64)
    blocks = list(source.blocks(max_block_bytes, samples=samples))
    assert blocks
    line_bytes = 8 * (source.n_genes if source.block_axis == "samples" else source.n_samples)
    position = 0
    for block in blocks:
        values = block.values
        assert values.dtype == np.float64 and values.flags.c_contiguous
        assert values.shape == (block.sample_stop - block.sample_start, block.gene_stop - block.gene_start)
        assert values.nbytes <= max(max_block_bytes, line_bytes)
        if source.block_axis == "samples":
            assert (block.gene_start, block.gene_stop) == (0, source.n_genes)
            assert block.sample_start == position
            position = block.sample_stop
        else:
            assert (block.sample_start, block.sample_stop) == (0, n_rows)
            assert block.gene_start == position
            position = block.gene_stop
        full[block.sample_start : block.sample_stop, block.gene_start : block.gene_stop] = values
        covered[block.sample_start : block.sample_stop, block.gene_start : block.gene_stop] += 1
    assert (covered == 1).all(), "blocks must cover the matrix exactly once"
    return full, blocks


def anndata_matrix(path: Path, *, layer: str | None = None, use_raw: bool = False) -> np.ndarray:
    adata = anndata.read_h5ad(path)
    if use_raw:
        return dense(adata.raw.X)
    return dense(adata.layers[layer] if layer else adata.X)


# ----------------------------------------------------------------------------- h5ad


@pytest.mark.parametrize("fixture", ["dense_h5ad", "chunked_h5ad", "csr_h5ad", "csc_h5ad"])
@pytest.mark.parametrize("rows_per_block", [1, 3, 10, 25, 1000])
def test_h5ad_blocks_reassemble_x(request, fixture: str, rows_per_block: int) -> None:
    path = request.getfixturevalue(fixture)
    expected = anndata_matrix(path)
    with open_matrix(path) as source:
        full, _ = collect(source, rows_per_block * ROW)
        np.testing.assert_array_equal(full, expected)
        restricted, _ = collect(source, rows_per_block * ROW, samples=SELECTION)
        np.testing.assert_array_equal(restricted, expected[SELECTION])


@pytest.mark.parametrize(
    ("fixture", "storage", "block_axis", "paths"),
    [
        ("dense_h5ad", "dense-samples", "samples", ("X",)),
        ("csr_h5ad", "csr", "samples", ("X/data", "X/indices", "X/indptr")),
        ("csc_h5ad", "csc", "genes", ("X/data", "X/indices", "X/indptr")),
    ],
)
def test_h5ad_metadata(request, fixture: str, storage: str, block_axis: str, paths: tuple[str, ...]) -> None:
    path = request.getfixturevalue(fixture)
    adata = anndata.read_h5ad(path)
    with open_matrix(path) as source:
        assert (source.storage, source.block_axis, source.dataset_paths) == (storage, block_axis, paths)
        assert (source.n_samples, source.n_genes, source.nbytes) == (N_SAMPLES, N_GENES, N_SAMPLES * N_GENES * 8)
        assert source.sample_ids.dtype == object and list(source.sample_ids) == sample_names()
        assert source.gene_ids.dtype == object and list(source.gene_ids) == gene_names()
        pd.testing.assert_frame_equal(source.obs, adata.obs)
        assert source.source == str(path)


def test_chunked_dense_blocks_are_whole_chunk_bands(chunked_h5ad: Path) -> None:
    with open_matrix(chunked_h5ad) as source:
        _, blocks = collect(source, 25 * ROW)  # room for 25 rows, chunks hold 10
    assert [(b.sample_start, b.sample_stop) for b in blocks] == [(0, 20), (20, 40), (40, 57)]


def test_chunk_band_larger_than_budget_still_reads_correctly(chunked_h5ad: Path) -> None:
    expected = anndata_matrix(chunked_h5ad)
    with open_matrix(chunked_h5ad) as source:
        full, blocks = collect(source, 4 * ROW)
    assert [b.sample_stop - b.sample_start for b in blocks[:3]] == [4, 4, 4]
    np.testing.assert_array_equal(full, expected)


def test_column_chunked_dense_streams_gene_blocks(dense_h5ad: Path) -> None:
    rechunk_x(dense_h5ad, (N_SAMPLES, 7), compression=None)
    expected = anndata_matrix(dense_h5ad)
    with open_matrix(dense_h5ad) as source:
        assert (source.storage, source.block_axis) == ("dense-samples", "genes")
        full, blocks = collect(source, 16 * N_SAMPLES * 8)
        assert [(b.gene_start, b.gene_stop) for b in blocks][:2] == [(0, 14), (14, 28)]
        np.testing.assert_array_equal(full, expected)
        restricted, _ = collect(source, 16 * N_SAMPLES * 8, samples=SELECTION)
        np.testing.assert_array_equal(restricted, expected[SELECTION])


@pytest.mark.parametrize("fixture", ["dense_h5ad", "csr_h5ad"])
def test_samples_restriction_skips_unselected_blocks(request, fixture: str) -> None:
    path = request.getfixturevalue(fixture)
    expected = anndata_matrix(path)
    late = np.array([45, 50, 56])
    with open_matrix(path) as source:
        full, blocks = collect(source, 10 * ROW, samples=late)
    assert [(b.sample_start, b.sample_stop) for b in blocks] == [(0, 1), (1, 3)]  # file rows 40:50 and 50:57 only
    np.testing.assert_array_equal(full, expected[late])


def test_csc_restriction_keeps_sample_order(csc_h5ad: Path, counts: sp.csr_matrix) -> None:
    with open_matrix(csc_h5ad) as source:
        full, blocks = collect(source, 20 * N_SAMPLES * 8, samples=np.array([2, 30]))
    assert all(b.values.shape[0] == 2 for b in blocks)
    np.testing.assert_array_equal(full, counts.toarray()[[2, 30]])


@pytest.fixture
def layered_h5ad(tmp_path: Path, counts: sp.csr_matrix) -> Path:
    """X: 40 of the genes, log-scaled; layers: counts (CSR) and dense; raw: all 83 genes."""
    full = make_adata(counts.copy())
    full.layers["dense"] = counts.toarray() * 2
    subset = full[:, : 40].copy()
    subset.layers["counts"] = sp.csc_matrix(subset.X)
    subset.X = np.log1p(subset.X.toarray())
    subset.raw = full
    path = tmp_path / "layered.h5ad"
    subset.write_h5ad(path)
    return path


@pytest.mark.parametrize("layer", ["counts", "dense"])
def test_layers(layered_h5ad: Path, layer: str) -> None:
    expected = anndata_matrix(layered_h5ad, layer=layer)
    with open_matrix(layered_h5ad, layer=layer) as source:
        assert source.n_genes == 40 and list(source.gene_ids) == gene_names(40)
        assert source.dataset_paths[0].startswith(f"layers/{layer}")
        full, _ = collect(source, 7 * ROW)
        np.testing.assert_array_equal(full, expected)


def test_raw(layered_h5ad: Path, counts: sp.csr_matrix) -> None:
    expected = anndata_matrix(layered_h5ad, use_raw=True)
    np.testing.assert_array_equal(expected, counts.toarray())
    with open_matrix(layered_h5ad, use_raw=True) as source:
        assert (source.storage, source.n_genes) == ("csr", N_GENES)
        assert list(source.gene_ids) == gene_names()
        assert source.obs is not None and len(source.obs) == N_SAMPLES
        full, _ = collect(source, 5 * ROW)
        np.testing.assert_array_equal(full, expected)


def test_h5ad_saved_as_h5_is_recognised(tmp_path: Path, csr_h5ad: Path, counts: sp.csr_matrix) -> None:
    path = tmp_path / "cells.h5"
    shutil.copy(csr_h5ad, path)
    with open_matrix(path) as source:
        assert source.storage == "csr" and source.obs is not None
        np.testing.assert_array_equal(collect(source, 1 << 20)[0], counts.toarray())


def test_legacy_h5ad_encodings(tmp_path: Path, counts: sp.csr_matrix) -> None:
    """anndata < 0.7: compound obs/var datasets, ``h5sparse_format`` groups."""
    path = tmp_path / "old.h5ad"
    cells_by_genes = sp.csc_matrix(counts)
    records = np.zeros(N_SAMPLES, dtype=[("index", "S10"), ("n_counts", "f8")])
    records["index"] = sample_names()
    records["n_counts"] = np.asarray(counts.sum(axis=1)).ravel()
    var = np.zeros(N_GENES, dtype=[("index", "S10")])
    var["index"] = gene_names()
    with h5py.File(path, "w") as f:
        f.create_dataset("obs", data=records)
        f.create_dataset("var", data=var)
        x = f.create_group("X")
        x.attrs["h5sparse_format"] = "csc"
        x.attrs["h5sparse_shape"] = np.array([N_SAMPLES, N_GENES])
        for key in ("data", "indices", "indptr"):
            x.create_dataset(key, data=getattr(cells_by_genes, key))
    with open_matrix(path) as source:
        assert (source.storage, source.block_axis) == ("csc", "genes")
        assert list(source.sample_ids) == sample_names() and list(source.gene_ids) == gene_names()
        np.testing.assert_allclose(source.obs["n_counts"].to_numpy(), records["n_counts"])
        np.testing.assert_array_equal(collect(source, 10 * N_SAMPLES * 8)[0], counts.toarray())


def test_var_index_attribute_names_the_column(tmp_path: Path, counts: sp.csr_matrix) -> None:
    adata = make_adata(counts.copy())
    adata.var["symbol"] = [f"SYM{i}" for i in range(N_GENES)]
    adata.var = adata.var.set_index("symbol")
    path = tmp_path / "named_index.h5ad"
    adata.write_h5ad(path)
    with h5py.File(path) as f:
        assert f["var"].attrs["_index"] == "symbol"
    with open_matrix(path) as source:
        assert list(source.gene_ids) == [f"SYM{i}" for i in range(N_GENES)]


# ----------------------------------------------------------------------------- 10x and plain HDF5


def test_10x(tenx: Path) -> None:
    with h5py.File(tenx) as f:
        m = f["matrix"]
        expected = sp.csc_matrix((m["data"][()], m["indices"][()], m["indptr"][()]), shape=m["shape"][()]).T.toarray()
    with open_matrix(tenx) as source:
        assert (source.storage, source.block_axis, source.obs) == ("csr", "samples", None)
        assert source.sample_ids[0] == "AAAC0000-1" and source.gene_ids[-1] == f"G{N_GENES - 1}"
        assert source.dataset_paths == ("matrix/data", "matrix/indices", "matrix/indptr")
        for rows in (1, 6, 100):
            np.testing.assert_array_equal(collect(source, rows * ROW)[0], expected)
            np.testing.assert_array_equal(collect(source, rows * ROW, samples=SELECTION)[0], expected[SELECTION])


def test_10x_gene_ids_and_duplicate_names(tmp_path: Path, counts: sp.csr_matrix, caplog) -> None:
    names = gene_names()
    names[5] = names[9] = "MT-ND1"
    path = write_10x(tmp_path / "dup.h5", counts, names=names)
    with caplog.at_level(logging.WARNING, logger="permenrich.io.chunked"):
        with open_matrix(path) as source:
            assert list(source.gene_ids).count("MT-ND1") == 2
    assert "2 features share 1 duplicated matrix/features/name" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich.io.chunked"):
        with open_matrix(path, gene_id_field="id") as source:
            assert source.gene_ids[5] == "ENSG00000000005"
    assert not caplog.records


@pytest.mark.parametrize("group", ["", "expr"])
@pytest.mark.parametrize("chunks", [(9, 57), None, (83, 5)])
def test_plain_hdf5(tmp_path: Path, counts: sp.csr_matrix, group: str, chunks) -> None:
    genes_by_samples = counts.toarray().T.astype(np.float64)
    path = write_plain(tmp_path / "plain.h5", genes_by_samples, group=group, chunks=chunks)
    h5_dataset = f"{group}/X" if group else "X"
    with open_matrix(path, h5_dataset=h5_dataset) as source:
        assert source.storage == "dense-genes" and source.obs is None
        assert source.block_axis == ("samples" if chunks == (83, 5) else "genes")
        assert list(source.gene_ids) == gene_names() and list(source.sample_ids) == sample_names()
        for budget in (N_SAMPLES * 8, 20 * N_SAMPLES * 8, 10 * ROW):
            np.testing.assert_array_equal(collect(source, budget)[0], genes_by_samples.T)
            np.testing.assert_array_equal(collect(source, budget, samples=SELECTION)[0], genes_by_samples.T[SELECTION])


def test_plain_hdf5_gene_blocks_follow_chunks(tmp_path: Path, counts: sp.csr_matrix) -> None:
    path = write_plain(tmp_path / "plain.h5", counts.toarray().T)
    with open_matrix(path) as source:
        _, blocks = collect(source, 20 * N_SAMPLES * 8)  # room for 20 genes, chunks hold 9
    assert [(b.gene_start, b.gene_stop) for b in blocks][:3] == [(0, 18), (18, 36), (36, 54)]


def test_tiny_budget_gives_one_line_per_block(csr_h5ad: Path, counts: sp.csr_matrix) -> None:
    with open_matrix(csr_h5ad) as source:
        full, blocks = collect(source, 1)
    assert len(blocks) == N_SAMPLES
    np.testing.assert_array_equal(full, counts.toarray())


def test_blocks_can_be_iterated_again_and_source_closes(csr_h5ad: Path) -> None:
    source = open_matrix(csr_h5ad)
    first = [b.values for b in source.blocks(10 * ROW)]
    second = [b.values for b in source.blocks(10 * ROW)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    source.close()
    source.close()
    assert source.closed
    with pytest.raises(ValueError, match="closed"):
        source.blocks(ROW)


def test_plain_h5py_read_seconds(csr_h5ad: Path, chunked_h5ad: Path, tenx: Path) -> None:
    with open_matrix(csr_h5ad) as source:
        paths = source.dataset_paths
    assert plain_h5py_read_seconds(csr_h5ad, paths) > 0
    assert plain_h5py_read_seconds(chunked_h5ad, "X") > 0
    assert plain_h5py_read_seconds(tenx, ["matrix"]) > 0  # a group: every dataset below it, strings too
    with pytest.raises(InputError, match="'nope' missing"):
        plain_h5py_read_seconds(tenx, ["nope"])


# ----------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        open_matrix(tmp_path / "absent.h5ad")


@pytest.mark.parametrize("name", ["notes.h5ad", "notes.h5"])
def test_not_hdf5(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("gene\tS1\nA\t1\n")
    with pytest.raises(InputError, match=f"{name}: cannot open as HDF5"):
        open_matrix(path)


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_truncated_file(tmp_path: Path, csr_h5ad: Path, fraction: float) -> None:
    truncated = tmp_path / "truncated.h5ad"
    data = csr_h5ad.read_bytes()
    truncated.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InputError, match="truncated.h5ad: .*truncated") as info:
        open_matrix(truncated)
    assert "\n" not in str(info.value)


def corrupt_first_chunk(path: Path, dataset: str) -> None:
    with h5py.File(path) as f:
        info = f[dataset].id.get_chunk_info(1)
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset)
        handle.write(b"\xff" * info.size)


def test_corruption_found_while_streaming_dense(chunked_h5ad: Path) -> None:
    corrupt_first_chunk(chunked_h5ad, "X")
    with open_matrix(chunked_h5ad) as source:
        blocks = source.blocks(10 * ROW)
        with pytest.raises(InputError, match=r"dense.h5ad: cannot read dataset 'X' \(rows .*damaged") as info:
            list(blocks)
    assert "\n" not in str(info.value)


def test_corruption_found_while_streaming_sparse(tenx: Path) -> None:
    corrupt_first_chunk(tenx, "matrix/data")
    with open_matrix(tenx) as source:
        with pytest.raises(InputError, match=r"filtered_feature_bc_matrix.h5: cannot read dataset 'matrix/data'"):
            list(source.blocks(ROW))


def test_corruption_found_by_the_read_ahead_thread(tenx: Path) -> None:
    """sparse_blocks reads in a background thread: its error reaches the consumer."""
    corrupt_first_chunk(tenx, "matrix/data")
    with open_matrix(tenx) as source:
        with pytest.raises(InputError, match=r"filtered_feature_bc_matrix.h5: cannot read dataset 'matrix/data'"):
            list(source.sparse_blocks(ROW))


def test_sparse_index_out_of_range_found_while_streaming(csr_h5ad: Path) -> None:
    with h5py.File(csr_h5ad, "r+") as f:
        f["X/indices"][3] = N_GENES + 5
    with open_matrix(csr_h5ad) as source:
        with pytest.raises(InputError, match=r"'X/indices' holds index 88 outside 0..82 \(samples 0:10\)"):
            list(source.blocks(10 * ROW))


def replace(path: Path, dataset: str, values: np.ndarray) -> None:
    with h5py.File(path, "r+") as f:
        del f[dataset]
        f.create_dataset(dataset, data=values)


def test_h5ad_indptr_length_mismatch(csr_h5ad: Path) -> None:
    with h5py.File(csr_h5ad, "r+") as f:
        indptr = f["X/indptr"][()]
    replace(csr_h5ad, "X/indptr", indptr[:-1])
    with pytest.raises(InputError, match=r"csr.h5ad: X/indptr has 57 entries, expected n_samples \+ 1 = 58"):
        open_matrix(csr_h5ad)


def test_csc_indptr_counts_genes(csc_h5ad: Path) -> None:
    with h5py.File(csc_h5ad, "r+") as f:
        indptr = f["X/indptr"][()]
    replace(csc_h5ad, "X/indptr", np.append(indptr, indptr[-1]))
    with pytest.raises(InputError, match=r"X/indptr has 85 entries, expected n_genes \+ 1 = 84"):
        open_matrix(csc_h5ad)


def test_h5ad_shape_attribute_mismatch(csr_h5ad: Path) -> None:
    with h5py.File(csr_h5ad, "r+") as f:
        f["X"].attrs["shape"] = np.array([N_SAMPLES, N_GENES - 3])
    with pytest.raises(InputError, match=r"'X' has shape attribute \(57, 80\), expected \(n_obs, n_var\) = \(57, 83\)"):
        open_matrix(csr_h5ad)


def test_dense_shape_mismatch(dense_h5ad: Path) -> None:
    replace(dense_h5ad, "X", np.zeros((N_SAMPLES, N_GENES - 1), dtype=np.float32))
    with pytest.raises(InputError, match=r"dataset 'X' has shape \(57, 82\), expected \(n_obs, n_var\) = \(57, 83\)"):
        open_matrix(dense_h5ad)


def test_data_and_indices_lengths_differ(csr_h5ad: Path) -> None:
    with h5py.File(csr_h5ad, "r+") as f:
        data = f["X/data"][()]
    replace(csr_h5ad, "X/data", data[:-2])
    with pytest.raises(InputError, match=r"X/data has \d+ entries but X/indices has \d+"):
        open_matrix(csr_h5ad)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p[::-1], "must start at 0 and never decrease"),
        (lambda p: np.append(p[:-1], p[-1] - 1), "X/indptr ends at"),
    ],
)
def test_damaged_indptr(csr_h5ad: Path, edit, message: str) -> None:
    with h5py.File(csr_h5ad, "r+") as f:
        indptr = f["X/indptr"][()]
    replace(csr_h5ad, "X/indptr", edit(indptr))
    with pytest.raises(InputError, match=message):
        open_matrix(csr_h5ad)


def test_unknown_sparse_encoding(csr_h5ad: Path) -> None:
    with h5py.File(csr_h5ad, "r+") as f:
        f["X"].attrs["encoding-type"] = "coo_matrix"
    with pytest.raises(InputError, match=r"group 'X' has encoding 'coo_matrix'; expected .*'csr_matrix' or 'csc_m"):
        open_matrix(csr_h5ad)


def test_non_numeric_matrix(dense_h5ad: Path) -> None:
    replace(dense_h5ad, "X", np.full((N_SAMPLES, N_GENES), b"x", dtype="S1"))
    with pytest.raises(InputError, match="dataset 'X' holds |S1 values, expected numbers"):
        open_matrix(dense_h5ad)


@pytest.mark.parametrize(("dataset", "named"),
                         [("var", "'var' missing"), ("X", "'X' missing; the matrix to analyse must be X")])
def test_h5ad_missing_parts(csr_h5ad: Path, dataset: str, named: str) -> None:
    with h5py.File(csr_h5ad, "r+") as f:
        del f[dataset]
    with pytest.raises(InputError, match=f"csr.h5ad: {named}"):
        open_matrix(csr_h5ad)


def test_layer_not_found_lists_layers(layered_h5ad: Path) -> None:
    with pytest.raises(InputError, match=r"layer 'spliced' not found .*available layers: 'counts', 'dense'"):
        open_matrix(layered_h5ad, layer="spliced")


def test_layer_not_found_without_layers(csr_h5ad: Path) -> None:
    with pytest.raises(InputError, match="available layers: none"):
        open_matrix(csr_h5ad, layer="counts")


def test_raw_requested_but_absent(csr_h5ad: Path) -> None:
    with pytest.raises(InputError, match="csr.h5ad: use_raw=True but the file has no 'raw' group"):
        open_matrix(csr_h5ad, use_raw=True)


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_duplicate_sample_ids(tmp_path: Path, counts: sp.csr_matrix) -> None:
    adata = make_adata(counts.copy())
    adata.obs_names = ["same"] * 2 + sample_names()[2:]
    path = tmp_path / "dup.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(InputError, match="sample id 'same' appears 2 times"):
        open_matrix(path)


@pytest.mark.parametrize(
    ("dataset", "named"),
    [("matrix/indptr", "'matrix/indptr' is missing"), ("matrix/features/name", "'matrix/features/name' is missing")],
)
def test_10x_missing_dataset(tenx: Path, dataset: str, named: str) -> None:
    with h5py.File(tenx, "r+") as f:
        del f[dataset]
    with pytest.raises(InputError, match=f"filtered_feature_bc_matrix.h5: dataset {named}"):
        open_matrix(tenx)


def test_10x_shape_disagrees_with_features(tenx: Path) -> None:
    replace(tenx, "matrix/shape", np.array([N_GENES + 1, N_SAMPLES]))
    with pytest.raises(InputError, match=r"matrix/shape is \(84, 57\) but matrix/features/name has 83"):
        open_matrix(tenx)


def test_plain_hdf5_missing_dataset_is_named(tmp_path: Path, counts: sp.csr_matrix) -> None:
    path = write_plain(tmp_path / "plain.h5", counts.toarray().T)
    with pytest.raises(InputError, match="plain.h5: dataset 'expr/X' is missing; a plain HDF5 expression file holds "
                                         "datasets 'expr/X' .2-D, n_genes x n_samples., 'expr/gene_ids'"):
        open_matrix(path, h5_dataset="expr/X")
    with h5py.File(path, "r+") as f:
        del f["sample_ids"]
    with pytest.raises(InputError, match="dataset 'sample_ids' is missing"):
        open_matrix(path)


@pytest.mark.parametrize("reader", ["open_matrix", "read_expression"])
def test_plain_hdf5_with_other_names_is_not_called_a_broken_10x_file(tmp_path: Path, reader: str) -> None:
    """A plain HDF5 whose matrix is a dataset named 'matrix' was reported as a damaged 10x
    file; both readers now name the datasets each layout needs and those the file has."""
    from permenrich.io import read_expression

    path = tmp_path / "other_names.h5"
    with h5py.File(path, "w") as f:
        f["matrix"] = np.ones((3, 2))
        f["genes"] = np.array([b"a", b"b", b"c"])
        f["samples"] = np.array([b"s1", b"s2"])
    read = open_matrix if reader == "open_matrix" else read_expression
    with pytest.raises(InputError) as info:
        read(path)
    message = str(info.value)
    assert message.startswith(f"{path}: dataset 'X' is missing; a plain HDF5 expression file holds datasets 'X'")
    assert "'gene_ids' and 'sample_ids' (1-D strings)" in message and "a 10x file holds a group 'matrix'" in message
    assert "this file holds 'genes' (1-D), 'matrix' (2-D), 'samples' (1-D)" in message
    assert "filtered_feature_bc_matrix layout" not in message and "h5-dataset" not in message

    with h5py.File(path, "r+") as f:  # a group 'matrix' is the 10x layout: name what it lacks
        del f["matrix"]
        f["matrix/data"] = np.ones(2)
    with pytest.raises(InputError, match=r"dataset 'matrix/indices' is missing; a 10x filtered_feature_bc_matrix.h5 "
                                         r"\(a group 'matrix' but no 'X'\) holds datasets 'matrix/data', "
                                         r"'matrix/indices'.*this file holds 'genes' \(1-D\), 'matrix/data'"):
        read(path)


def test_plain_hdf5_shape_mismatch(tmp_path: Path, counts: sp.csr_matrix) -> None:
    path = write_plain(tmp_path / "plain.h5", counts.toarray().T)
    replace(path, "gene_ids", np.array(gene_names(80), dtype="S"))
    with pytest.raises(InputError, match=r"'X' has shape \(83, 57\) but gene_ids has 80"):
        open_matrix(path)


# ----------------------------------------------------------------------------- bad options


def test_option_errors(csr_h5ad: Path, tenx: Path) -> None:
    with pytest.raises(OptionError, match="layer and use_raw exclude each other"):
        open_matrix(csr_h5ad, layer="counts", use_raw=True)
    with pytest.raises(OptionError, match="layer='counts' applies only to h5ad input"):
        open_matrix(tenx, layer="counts")
    with pytest.raises(OptionError, match="gene_id_field must be 'name' or 'id'"):
        open_matrix(tenx, gene_id_field="symbol")  # type: ignore[arg-type]


@pytest.mark.parametrize("budget", [0, -5, 1.5, True, "1MB"])
def test_bad_block_size(csr_h5ad: Path, budget) -> None:
    with open_matrix(csr_h5ad) as source:
        with pytest.raises(OptionError, match="max_block_bytes must be a positive integer"):
            source.blocks(budget)


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (np.array([3, 1]), "strictly increasing"),
        (np.array([1, 1, 2]), "strictly increasing"),
        (np.array([0, N_SAMPLES]), "must lie in 0..56"),
        (np.array([-1, 2]), "must lie in 0..56"),
        (np.array([0.0, 1.0]), "integer sample positions"),
        (np.ones(N_SAMPLES, dtype=bool), "np.flatnonzero"),
        (np.array([], dtype=int), "samples is empty"),
    ],
)
def test_bad_samples(csr_h5ad: Path, samples: np.ndarray, message: str) -> None:
    with open_matrix(csr_h5ad) as source:
        with pytest.raises(OptionError, match=message):
            source.blocks(ROW, samples=samples)


def test_band_of_chunks_larger_than_budget_is_kept_in_chunk_cache(tmp_path: Path, monkeypatch) -> None:
    """Blocks narrower than a band of chunks: the dataset is re-opened with a cache for one band."""
    from permenrich.io import chunked

    rng = np.random.default_rng(3)
    n_genes, n_samples = 20, 20_000
    values = rng.integers(0, 5, size=(n_genes, n_samples)).astype(np.float32)
    path = tmp_path / "wide.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=values, chunks=(10, 5_000), compression="gzip")
        f.create_dataset("gene_ids", data=np.array([f"G{i}" for i in range(n_genes)], dtype="S"))
        f.create_dataset("sample_ids", data=np.array([f"S{i}" for i in range(n_samples)], dtype="S"))
    # A file cache smaller than one band (800 kB), so that the re-opening path is taken.
    monkeypatch.setattr(chunked, "_h5_open", lambda p, where: h5py.File(p, "r", rdcc_nbytes=100_000))
    caches = []
    original = chunked._open_dataset

    def spy(file, dataset_path, cache_bytes=0):
        opened = original(file, dataset_path, cache_bytes)
        caches.append((dataset_path, cache_bytes, opened.id.get_access_plist().get_chunk_cache()[1]))
        return opened

    monkeypatch.setattr(chunked, "_open_dataset", spy)
    with open_matrix(path) as source:
        assert source.block_axis == "genes"
        full, blocks = collect(source, 3 * n_samples * 8)
        np.testing.assert_array_equal(full, values.T)
        assert [b.gene_stop - b.gene_start for b in blocks] == [3, 3, 3, 3, 3, 3, 2]
        assert caches == [("X", 10 * n_samples * 4, 10 * n_samples * 4)]  # one whole band of chunks
        caches.clear()
        collect(source, 10 * n_samples * 8)  # whole bands: the file's cache will do
        assert caches == [("X", 0, 100_000)]


def test_a_larger_chunk_cache_keeps_hdf5s_eviction_weight(tmp_path: Path) -> None:
    """The reader's own chunk cache (for chunks larger than the file's default cache) is
    bounded by its size: with the preemption weight w0 = 1, chunks that gapped slices (a
    subset of cells) read only partly were kept beyond it, +388 MiB in one streamed pass."""
    from permenrich.io.chunked import _open_dataset

    path = tmp_path / "big_chunks.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(4_000_000, dtype=np.float32), chunks=(2_000_000,))
    with h5py.File(path, "r") as f:
        default = f.id.get_access_plist().get_cache()[2]
        dataset = _open_dataset(f, "x", 4 * default)
        _, nbytes, w0 = dataset.id.get_access_plist().get_chunk_cache()
        assert nbytes == 4 * default and w0 == 0.75
        assert np.array_equal(dataset[1_999_990:2_000_010], np.arange(1_999_990, 2_000_010, dtype=np.float32))
