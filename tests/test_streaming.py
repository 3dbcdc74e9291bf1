"""Out-of-core runs: streamed h5ad (dense, CSR, CSC) equal in-memory runs exactly;
pseudobulk equals a pandas groupby; contrasts equal single runs; faults are one line."""

import os
import re
import signal
import subprocess
import sys
import time

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import permenrich
from _tables import assert_identical

N_CELLS, N_GENES = 240, 2600  # dense float64 ~5 MB: streamed with memory="1MB"


def _counts(seed=0):
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.6, 2.0, size=N_GENES)
    counts = rng.poisson(base[None, :] * rng.uniform(0.5, 1.5, size=(N_CELLS, 1))).astype(np.float32)
    group = np.array(["T", "B", "NK"] * (N_CELLS // 3))
    counts[group == "T", :40] += rng.poisson(3.0, size=((group == "T").sum(), 40))
    donor = np.repeat([f"d{i}" for i in range(12)], N_CELLS // 12)
    obs = pd.DataFrame({"group": group, "donor": donor}, index=[f"c{i}" for i in range(N_CELLS)])
    var = pd.DataFrame(index=[f"G{i}" for i in range(N_GENES)])
    return counts, obs, var


def _write(tmp_path, kind, counts, obs, var):
    matrix = {"dense": counts, "csr": sp.csr_matrix(counts), "csc": sp.csc_matrix(counts)}[kind]
    path = tmp_path / f"cells_{kind}.h5ad"
    anndata.AnnData(X=matrix, obs=obs, var=var).write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    counts, obs, var = _counts()
    folder = tmp_path_factory.mktemp("stream")
    paths = {kind: _write(folder, kind, counts, obs, var) for kind in ("dense", "csr", "csc")}
    sets = {"FIRST": [f"G{i}" for i in range(40)], "MIDDLE": [f"G{i}" for i in range(1000, 1100)],
            "SPREAD": [f"G{i}" for i in range(0, 2600, 13)]}
    return paths, sets, counts, obs


def _drop_run(frame):
    frame = frame.copy()
    frame.attrs = {}
    return frame


@pytest.mark.parametrize("kind", ["dense", "csr", "csc"])
@pytest.mark.parametrize("normalize", ["none", "log1p_cpm"])
def test_streamed_equals_in_memory(cohort, kind, normalize):
    paths, sets, _, _ = cohort
    kwargs = dict(groupby="group", case="T", control="B", permutations=40, seed=3, min_size=10,
                  normalize=normalize, device="cpu", threads=2, batch_size=16)
    in_memory = permenrich.gsea(paths[kind], None, sets, memory="1GB", **kwargs)
    streamed = permenrich.gsea(paths[kind], None, sets, memory="1MB", **kwargs)
    assert in_memory.attrs["run"]["design"]["matrix_storage"] == "in memory"
    info = streamed.attrs["run"]["design"]
    assert info["matrix_storage"] == "streamed from disk"
    assert info["streaming"]["passes"] >= 3 and info["streaming"]["max_block_bytes"] < info["dense_bytes"]
    assert_identical(_drop_run(in_memory), _drop_run(streamed))
    gene_kwargs = {k: v for k, v in kwargs.items() if k != "min_size"}
    for metric in ("signal_to_noise", "student_t", "welch_t"):
        genes_memory = permenrich.genes(paths[kind], None, memory="1GB", metric=metric, **gene_kwargs)
        genes_stream = permenrich.genes(paths[kind], None, memory="1MB", metric=metric, **gene_kwargs)
        # the t tests' textbook p-values come from the class sums: streamed too, the same bits
        assert genes_stream.pval_parametric.notna().all() == (metric != "signal_to_noise")
        assert_identical(_drop_run(genes_memory), _drop_run(genes_stream))


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_streamed_constant_genes_are_those_in_memory(tmp_path, kind):
    """Constant genes are judged on the values analysed, as in memory: under log1p_cpm a
    count constant across equal library sizes (downsampled data) stays constant and is
    dropped, while counts that differ are kept; zero_variance='error' refuses it, streamed
    or not."""
    counts, obs, var = _counts()
    counts = counts.astype(np.float64)
    counts[:, 0] = 5.0  # constant count
    counts[:, 1] = 0.0  # all zero
    counts[:, -1] = 0.0
    counts[:, -1] = counts.sum(axis=1).max() + 100.0 - counts.sum(axis=1)  # every cell: one library size
    assert (counts >= 0).all()
    path = _write(tmp_path, kind, counts, obs, var)
    kwargs = dict(groupby="group", case="T", control="B", permutations=20, seed=3, device="cpu",
                  normalize="log1p_cpm", metric="welch_t")
    in_memory = permenrich.genes(path, None, memory="1GB", **kwargs)
    streamed = permenrich.genes(path, None, memory="1MB", **kwargs)
    assert streamed.attrs["run"]["design"]["matrix_storage"] == "streamed from disk"
    assert not {"G0", "G1"} & set(streamed.gene)
    assert_identical(_drop_run(in_memory), _drop_run(streamed))
    for memory in ("1GB", "1MB"):
        with pytest.raises(permenrich.InputError, match="gene 'G0' has zero variance .*zero_variance='drop'"):
            permenrich.genes(path, None, memory=memory, zero_variance="error", **kwargs)


def test_pseudobulk_equals_pandas_groupby(cohort):
    from permenrich.io.chunked import open_matrix
    from permenrich.streaming import pseudobulk

    paths, _, counts, obs = cohort
    expected = pd.DataFrame(counts.astype(np.float64), index=obs.index).groupby([obs.donor, obs.group]).sum()
    for kind, path in paths.items():
        with open_matrix(path) as source:
            values, groups = pseudobulk(source, obs[["donor", "group"]].reset_index(drop=True), method="sum",
                                        max_block_bytes=1 << 20)
        got = pd.DataFrame(values.T, index=pd.MultiIndex.from_frame(groups[["donor", "group"]]))
        got = got.loc[expected.index]
        np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy(), err_msg=kind)
        assert groups.n_cells.sum() == N_CELLS


def test_pseudobulk_gsea_and_contrasts_equal_single_runs(cohort, tmp_path):
    paths, sets, _, _ = cohort
    common = dict(pseudobulk="donor", normalize="log1p_cpm", permutations=60, seed=1, min_size=10, device="cpu",
                  threads=2, min_cells=0)  # a few cells per donor and group
    single = permenrich.gsea(paths["csr"], None, sets, groupby="group", case="T", control="B", **common)
    assert single.attrs["run"]["design"]["pseudobulk"]["samples"] == 36  # 12 donors x 3 groups
    assert single.attrs["run"]["design"]["n_case"] == 12
    spec = pd.DataFrame({"name": ["T_vs_B", "NK_vs_rest"], "groupby": ["group", "group"], "case": ["T", "NK"],
                         "control": ["B", "rest"]})
    combined = permenrich.contrasts(paths["csr"], spec, sets, mode="gsea", **common)
    assert list(combined.columns[:2]) == ["contrast", "gene_set"]
    first = combined[combined.contrast == "T_vs_B"].drop(columns="contrast").reset_index(drop=True)
    assert_identical(_drop_run(first), _drop_run(single))
    paths_written = permenrich.write_results(combined, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"results.tsv", "run.json", "T_vs_B.tsv",
                                                              "NK_vs_rest.tsv"}
    assert paths_written["NK_vs_rest"].exists()
    one_vs_rest = permenrich.contrasts(paths["csr"], None, one_vs_rest="group", mode="genes",
                                       pseudobulk="donor", normalize="log1p_cpm", permutations=30, device="cpu",
                                       min_cells=0)
    assert sorted(set(one_vs_rest.contrast)) == ["B_vs_rest", "NK_vs_rest", "T_vs_rest"]


def test_stream_faults_are_one_line(cohort, tmp_path):
    paths, sets, _, _ = cohort
    truncated = tmp_path / "truncated.h5ad"
    data = paths["csr"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(permenrich.InputError, match="truncated.h5ad"):
        permenrich.gsea(truncated, None, sets, groupby="group", case="T", control="B", memory="1MB")
    with pytest.raises(permenrich.InputError, match="cell_type"):
        permenrich.gsea(paths["csr"], None, sets, groupby="cell_type", case="T", control="B", memory="1MB")
    spec = pd.DataFrame({"name": ["X"], "groupby": ["group"], "case": ["DC"], "control": ["rest"]})
    with pytest.raises(permenrich.InputError, match="'DC' of 'group' has no samples"):
        permenrich.contrasts(paths["csr"], spec, sets)
    with pytest.raises(permenrich.OptionError, match="needs the matrix in memory"):
        permenrich.gsea(paths["csr"], None, sets, groupby="group", case="T", control="B", memory="1MB",
                        metric="mann_whitney")
    # 36 donor x group samples x 2,600 genes = 0.75 MB of sums: over half of a 1 MB budget
    with pytest.raises(permenrich.OptionError, match=r"pseudobulk by donor, group makes 36 samples x 2,600 genes"):
        permenrich.gsea(paths["csr"], None, sets, groupby="group", case="T", control="B", memory="1MB",
                        pseudobulk="donor")


def test_sigterm_leaves_no_output(cohort, tmp_path):
    """SIGTERM once the run is permuting (its first progress line, printed at once with
    PERMENRICH_PROGRESS_DELAY=0): exit 130, one line, no output and no temporary folder.
    No fixed sleep: the test waits for the line itself, however loaded the machine."""
    import queue
    import threading

    paths, sets, _, _ = cohort
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("".join(f"{name}\tx\t" + "\t".join(genes) + "\n" for name, genes in sets.items()))
    out = tmp_path / "out"
    env = dict(os.environ, NUMBA_NUM_THREADS="1", PERMENRICH_PROGRESS_DELAY="0")
    process = subprocess.Popen([sys.executable, "-m", "permenrich.cli", "gsea", "--expr", str(paths["csr"]),
                                "--groupby", "group", "--case", "T", "--control", "B", "--gene-sets", str(gmt),
                                "--permutations", "200000", "--memory", "1MB", "--device", "cpu", "--out", str(out)],
                               stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr] + [lines.put(None)],
                              daemon=True)
    reader.start()
    seen = []
    deadline = time.monotonic() + 300  # a failure guard, not a wait: the loop ends at the first progress line
    try:
        while not (seen and seen[-1].startswith("permutations ")):
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"the run ended before its first progress line: {''.join(seen)}"
            seen.append(line)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=60)
    while not lines.empty():
        seen.append(lines.get_nowait() or "")
    first_progress = next(i for i, line in enumerate(seen) if line.startswith("permutations "))
    messages = [line for line in seen[first_progress:] if line and not line.startswith("permutations ")]
    assert process.returncode == 130, "".join(seen)
    assert messages == ["permenrich: interrupted; no output was written\n"], "".join(seen)
    assert sorted(os.listdir(tmp_path)) == ["sets.gmt"]  # no OUT, no .out.tmp-*, no lock file


@pytest.mark.parametrize("kind", ["csr", "csc"])
def test_pseudobulk_of_shuffled_cells_and_damaged_indices(cohort, tmp_path, kind):
    """Cells in random order (the sums sort each slice's cells by group) give the groupby
    sums; an index outside the matrix, found by the summing kernel, is a one-line error."""
    import h5py

    from permenrich.io.chunked import open_matrix
    from permenrich.streaming import pseudobulk

    _, _, counts, obs = cohort
    order = np.random.default_rng(5).permutation(N_CELLS)
    counts, obs = counts[order], obs.iloc[order]
    path = _write(tmp_path, kind, counts, obs, pd.DataFrame(index=[f"G{i}" for i in range(N_GENES)]))
    expected = pd.DataFrame(counts.astype(np.float64), index=obs.index).groupby([obs.donor, obs.group]).sum()
    keys = obs[["donor", "group"]].reset_index(drop=True)
    with open_matrix(path) as source:
        values, groups = pseudobulk(source, keys, method="sum", max_block_bytes=1 << 18)
    got = pd.DataFrame(values.T, index=pd.MultiIndex.from_frame(groups[["donor", "group"]])).loc[expected.index]
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())

    limit = N_GENES if kind == "csr" else N_CELLS
    with h5py.File(path, "r+") as f:
        f["X/indices"][-3] = limit + 7
    with open_matrix(path) as source:
        with pytest.raises(permenrich.InputError, match=rf"'X/indices' holds index {limit + 7} outside") as info:
            pseudobulk(source, keys, method="sum", max_block_bytes=1 << 18)
    assert "\n" not in str(info.value)


def test_sparse_slices_are_read_ahead_and_cover_the_matrix(cohort):
    """The read-ahead thread: slices cover every stored value once, stay valid until the
    next is asked for, and the thread stops when the consumer stops early."""
    import threading

    from permenrich.io.chunked import open_matrix

    paths, _, counts, _ = cohort
    with open_matrix(paths["csr"]) as source:
        seen = []
        for start, stop, data, indices, indptr in source.sparse_blocks(1 << 16):
            block = sp.csr_matrix((data, indices, indptr), shape=(stop - start, N_GENES)).toarray()
            np.testing.assert_array_equal(block, counts[start:stop])
            seen.append((start, stop))
        assert seen[0][0] == 0 and seen[-1][1] == N_CELLS and len(seen) > 3
        assert all(a[1] == b[0] for a, b in zip(seen, seen[1:]))
        slices = source.sparse_blocks(1 << 16)
        next(slices)
        slices.close()
    assert not any(t.name == "permenrich-prefetch" for t in threading.enumerate())


def test_sparse_quality_pass_equals_dense(tmp_path):
    """The quality pass reads sparse storage's stored values only: library sizes, the
    genes dropped as constant (implicit zeros included) and the normalised blocks equal
    those of the same data stored dense, for a subset of samples; unsorted indices fall
    back to dense blocks; a non-finite stored value names its gene."""
    import h5py

    from permenrich.io.chunked import open_matrix
    from permenrich.streaming import StreamedMatrix

    rng = np.random.default_rng(11)
    counts = rng.poisson(0.7, size=(30, 12)).astype(np.float32)
    counts[:, 0] = 0.0                      # all zero: dropped
    counts[:, 1] = 3.0                      # constant, stored for every sample
    counts[::2, 2] = 0.0                    # stored for some samples only
    counts[:, 3] = 0.0
    counts[5, 3] = 2.0                      # non-zero only in a sample left out below
    var = pd.DataFrame(index=[f"G{i}" for i in range(12)])
    obs = pd.DataFrame(index=[f"c{i}" for i in range(30)])
    samples = np.setdiff1d(np.arange(30), [5, 17])

    def streamed(kind, normalise):
        path = tmp_path / f"{kind}_{normalise}.h5ad"
        matrix = {"dense": counts, "csr": sp.csr_matrix(counts), "csc": sp.csc_matrix(counts)}[kind]
        anndata.AnnData(X=matrix, obs=obs, var=var).write_h5ad(path)
        source = open_matrix(path)
        return source, StreamedMatrix(source, samples, max_block_bytes=200, normalise=normalise)

    for normalise in ("none", "log1p_cpm"):
        reference_source, reference = streamed("dense", normalise)
        for kind in ("csr", "csc"):
            source, matrix = streamed(kind, normalise)
            np.testing.assert_array_equal(matrix._keep, reference._keep)
            assert not matrix._keep[0] and not matrix._keep[3]
            assert matrix._keep[1] == (normalise == "log1p_cpm")  # scaled by library size, it varies
            if normalise == "log1p_cpm":
                np.testing.assert_array_equal(matrix._library_sizes, reference._library_sizes)
            dense = np.zeros((samples.size, matrix.n_genes))
            for s0, s1, g0, g1, values in matrix.blocks():
                dense[s0:s1, g0:g1] = values
            expected = np.zeros_like(dense)
            for s0, s1, g0, g1, values in reference.blocks():
                expected[s0:s1, g0:g1] = values
            np.testing.assert_array_equal(dense, expected)
            source.close()
        reference_source.close()

    # unsorted indices within a row: the sparse pass gives up and dense blocks decide
    path = tmp_path / "unsorted.h5ad"
    anndata.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var).write_h5ad(path)
    with h5py.File(path, "r+") as f:
        start, stop = f["X/indptr"][1], f["X/indptr"][2]
        assert stop - start >= 2
        f["X/indices"][start:stop] = f["X/indices"][start:stop][::-1]
        f["X/data"][start:stop] = f["X/data"][start:stop][::-1]
    with open_matrix(path) as source:
        matrix = StreamedMatrix(source, samples, max_block_bytes=200, normalise="log1p_cpm")
        assert matrix.passes == 3  # the sparse attempt, dense blocks, the normalised values' range
        np.testing.assert_array_equal(matrix._library_sizes, reference._library_sizes)

    with h5py.File(path, "r+") as f:
        f["X/data"][f["X/indptr"][3]] = np.nan
        gene = f["X/indices"][f["X/indptr"][3]]
        f["X/indices"][start:stop] = np.sort(f["X/indices"][start:stop])
    with open_matrix(path) as source:
        with pytest.raises(permenrich.InputError,
                           match=rf"unsorted.h5ad, dataset 'X': gene 'G{gene}', sample 'c3' has a missing or "
                                 "non-finite"):
            StreamedMatrix(source, samples, max_block_bytes=200)


def test_streamed_batches_read_the_file_once_each(cohort):
    """A streamed matrix is read once per batch: a batch is not cut into the in-memory
    path's slices, and without an explicit size batches take all the budget allows."""
    from permenrich._pipeline import choose_batch_size

    paths, sets, _, _ = cohort
    kwargs = dict(groupby="group", case="T", control="B", permutations=300, seed=3, min_size=10, device="cpu",
                  memory="1MB")
    result = permenrich.gsea(paths["csr"], None, sets, batch_size=300, **kwargs)
    # quality pass + two totals passes + the observed labelling + one batch, and the batch
    # again in the second pass: 1 MB holds no null beside a batch of 300
    assert result.attrs["run"]["memory_plan"]["null_cache_bytes"] == 0
    assert result.attrs["run"]["design"]["streaming"]["passes"] == 6
    pd.testing.assert_frame_equal(_drop_run(result),
                                  _drop_run(permenrich.gsea(paths["csr"], None, sets, batch_size=7, **kwargs)),
                                  check_exact=True)
    # genes with Welch's t: the textbook p-value reuses the run's totals and adds one pass
    # (the case class's sums)
    genes = permenrich.genes(paths["csr"], None, groupby="group", case="T", control="B", permutations=300,
                             batch_size=300, metric="welch_t", seed=3, device="cpu", memory="1MB")
    assert genes.attrs["run"]["design"]["streaming"]["passes"] == 6
    assert choose_batch_size(None, 4 * 10**9, 1000, 10**6) == 8192
    assert choose_batch_size(None, 4 * 10**9, 1000, 10**6, streamed=True) == 10**6
    assert choose_batch_size(None, 4 * 10**9, 10**7, 10**6, streamed=True) == 100


def _cells_with(tmp_path, kind, edit):
    """The cohort's counts as float64 (float32 cannot hold 1e200), edited, written as ``kind``."""
    counts, obs, var = _counts()
    counts = counts.astype(np.float64)
    edit(counts)
    return _write(tmp_path, kind, counts, obs, var)


@pytest.mark.parametrize("kind", ["dense", "csr", "csc"])
@pytest.mark.parametrize("memory", ["1GB", "1MB"], ids=["in_memory", "streamed"])
@pytest.mark.parametrize("mode", ["gsea", "genes"])
def test_negative_counts_refused_by_log1p_cpm(tmp_path, kind, memory, mode):
    """Negative counts under log1p_cpm gave blank statistic/p/q cells and exit 0; now one
    line naming file, dataset, the first gene and sample, in memory and streamed."""
    path = _cells_with(tmp_path, kind, lambda counts: counts.__setitem__((7, 5), -2.0))
    run = getattr(permenrich, mode)
    sets = ({"S": [f"G{i}" for i in range(40)]},) if mode == "gsea" else ()
    kwargs = dict(groupby="group", case="T", control="B", permutations=10, device="cpu", memory=memory)
    with pytest.raises(permenrich.InputError) as info:
        run(path, None, *sets, normalize="log1p_cpm", **kwargs)
    assert str(info.value) == (
        f"{path}, dataset 'X': gene 'G5', sample 'c7' has a negative value (-2); log1p_cpm normalises counts, "
        "which are never negative: give raw counts, or normalize='none' for data already normalised")
    assert run(path, None, *sets, normalize="none", **kwargs).attrs["run"]  # not counts: fine unnormalised


def test_pseudobulk_negative_sums_refused_by_log1p_cpm(tmp_path):
    def edit(counts):
        counts[:, 5] = 0.0
        counts[7, 5] = -2.0  # cell 7: donor d0, group B
    path = _cells_with(tmp_path, "csr", edit)
    with pytest.raises(permenrich.InputError, match=rf"^{path} \(pseudobulk\), dataset 'X': gene 'G5', sample 'd0\|B' "
                                                    r"has a negative value \(-2\); log1p_cpm"):
        permenrich.gsea(path, None, {"S": [f"G{i}" for i in range(40)]}, groupby="group", case="T", control="B",
                        pseudobulk="donor", normalize="log1p_cpm", device="cpu", min_cells=0)


def test_log1p_cpm_accepts_non_integer_counts_only():
    from permenrich.io import ExpressionData
    from permenrich.streaming import log1p_cpm

    values = np.array([[0.5, 2.25], [1.5, 0.0]])
    np.testing.assert_allclose(log1p_cpm(values), np.log1p(values / values.sum(axis=0) * 1e6))
    data = ExpressionData(values=np.array([[1.0, 0.0], [1.0, 0.0]]), gene_ids=np.array(["a", "b"], dtype=object),
                          sample_ids=np.array(["s1", "s2"], dtype=object), source="m.tsv")
    with pytest.raises(permenrich.InputError, match=r"^m.tsv: sample 's2' has no counts \(all 0; 1 such samples\)"):
        log1p_cpm(data.values, source=data)


@pytest.mark.parametrize("kind", ["dense", "csr", "csc"])
def test_streamed_values_beyond_max_abs_value_are_refused(tmp_path, kind):
    path = _cells_with(tmp_path, kind, lambda counts: counts.__setitem__((7, 5), 1e200))
    expected = (f"{path}, dataset 'X': gene 'G5', sample 'c7' has value 1e+200; values beyond ±1e100 overflow "
                "float64 moment sums; rescale (e.g. log-transform) the data")
    sets = {"S": [f"G{i}" for i in range(40)]}
    kwargs = dict(groupby="group", case="T", control="B", permutations=10, device="cpu")
    for extra in ({"memory": "1MB"}, {"memory": "1MB", "normalize": "log1p_cpm"}, {"pseudobulk": "donor"}):
        with pytest.raises(permenrich.InputError) as info:
            permenrich.gsea(path, None, sets, **kwargs, **extra)
        assert str(info.value) == expected, extra


@pytest.mark.parametrize("kind", ["dense", "csr", "csc"])
def test_values_too_near_zero_are_refused(tmp_path, kind):
    """A gene of values ~1e-170 gave a t of inf (squares underflow: a variance of 0) and,
    near 1e-158, a t right to 7 digits only, silently; in memory, streamed and before a
    pseudobulk alike such values are refused in one line. Zeros are fine."""
    path = _cells_with(tmp_path, kind, lambda counts: counts.__setitem__((7, 5), 3e-170))
    expected = (f"{path}, dataset 'X': gene 'G5', sample 'c7' has value 3e-170; nonzero values nearer 0 than ±1e-100 "
                "underflow float64 moment sums (a variance of 0 or an inexact one); rescale the data, or write such "
                "values as 0")
    sets = {"S": [f"G{i}" for i in range(40)]}
    kwargs = dict(groupby="group", case="T", control="B", permutations=10, device="cpu")
    for extra in ({"memory": "1GB"}, {"memory": "1MB"}, {"pseudobulk": "donor"}):
        with pytest.raises(permenrich.InputError) as info:
            permenrich.gsea(path, None, sets, **kwargs, **extra)
        assert str(info.value) == expected, extra


def test_tiny_values_are_found_in_any_block():
    from permenrich.io.expression import first_out_of_range

    values = np.ones((5000, 300))
    values[4321, 17] = -2e-101
    values[:, 5] = 0.0
    assert first_out_of_range(values) == (4321, 17)
    assert first_out_of_range(values.ravel()) == (4321 * 300 + 17,)
    assert first_out_of_range(np.asfortranarray(values)) == (4321, 17)
    values[4321, 17] = 1e-100
    assert first_out_of_range(values) is None and first_out_of_range(values.astype(np.float32)) is None


def test_pseudobulk_sums_beyond_max_abs_value_are_refused(tmp_path):
    """Cells within range can add up beyond it: the sums are checked too."""
    def edit(counts):
        counts[:20, 5] = 5e99  # donor d0: 7 cells of group B sum to 3.5e100
    path = _cells_with(tmp_path, "csr", edit)
    with pytest.raises(permenrich.InputError) as info:
        permenrich.gsea(path, None, {"S": [f"G{i}" for i in range(40)]}, groupby="group", case="T", control="B",
                        pseudobulk="donor", device="cpu")
    assert str(info.value) == (f"{path}, dataset 'X' (pseudobulk sums): gene 'G5', sample 'd0|B' has value "
                               "3.5e+100; values beyond ±1e100 overflow float64 moment sums; rescale (e.g. "
                               "log-transform) the data")


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_missing_values_count_only_in_analysed_samples(tmp_path, kind):
    """A value missing in a cell the run does not analyse (an NK cell of a T vs B run) left
    the streamed run untouched, while in memory it refused the file (nan_policy 'error') or
    dropped the gene ('drop'): the tables differed by input size. The nan_policy now
    applies to the analysed samples in memory too, as streamed."""
    def edit(counts):
        counts[2, 5] = np.nan  # cell 2: NK
        counts[5, 41] = np.inf  # cell 5: NK
    path = _cells_with(tmp_path, kind, edit)
    kwargs = dict(groupby="group", case="T", control="B", permutations=30, seed=4, device="cpu", batch_size=16)
    sets = {"S": [f"G{i}" for i in range(40)], "SPREAD": [f"G{i}" for i in range(0, 2600, 13)]}
    for normalize in ("none", "log1p_cpm"):
        streamed = permenrich.genes(path, None, memory="1MB", normalize=normalize, **kwargs)
        assert streamed.attrs["run"]["design"]["matrix_storage"] == "streamed from disk"
        assert {"G5", "G41"} <= set(streamed.gene)
        for nan_policy in ("error", "drop"):
            in_memory = permenrich.genes(path, None, memory="1GB", normalize=normalize, nan_policy=nan_policy,
                                         **kwargs)
            assert_identical(_drop_run(in_memory), _drop_run(streamed))
        assert_identical(_drop_run(permenrich.gsea(path, None, sets, memory="1GB", normalize=normalize, **kwargs)),
                         _drop_run(permenrich.gsea(path, None, sets, memory="1MB", normalize=normalize, **kwargs)))
    # the NK cells analysed: refused in memory under 'error' (streamed: always), dropped under 'drop'
    nk = dict(kwargs, case="NK")
    with pytest.raises(permenrich.InputError, match=r"gene 'G5' has 1 missing or non-finite values in the analysed "
                                                    r"samples, e.g. sample 'c2': missing \(2 genes in all have some\); "
                                                    r"use nan_policy='drop'"):
        permenrich.genes(path, None, memory="1GB", **nk)
    with pytest.raises(permenrich.InputError, match="gene 'G5', sample 'c2' has a missing or non-finite value"):
        permenrich.genes(path, None, memory="1MB", **nk)
    dropped = permenrich.genes(path, None, memory="1GB", nan_policy="drop", **nk)
    (tmp_path / "clean").mkdir()
    clean = permenrich.genes(_cells_with(tmp_path / "clean", kind, lambda counts: None), None, **nk)
    assert set(dropped.gene) == set(clean.gene) - {"G5", "G41"}


@pytest.mark.parametrize("value", [1e-150, 1e200])
def test_values_out_of_range_count_only_in_analysed_samples(tmp_path, value):
    """A value out of range in a cell the run does not analyse was refused in memory and
    passed streamed; in an analysed one, both refuse it."""
    path = _cells_with(tmp_path, "dense", lambda counts: counts.__setitem__((2, 5), value))  # cell 2: NK
    kwargs = dict(groupby="group", case="T", control="B", permutations=20, seed=4, device="cpu")
    assert_identical(_drop_run(permenrich.genes(path, None, memory="1GB", **kwargs)),
                     _drop_run(permenrich.genes(path, None, memory="1MB", **kwargs)))
    for memory in ("1GB", "1MB"):
        with pytest.raises(permenrich.InputError, match=re.escape(f"gene 'G5', sample 'c2' has value {value:g}")):
            permenrich.genes(path, None, memory=memory, **dict(kwargs, case="NK"))


def test_contrasts_decide_missing_values_on_their_own_samples(tmp_path):
    """One matrix read once for several contrasts: each contrast drops (or refuses) only
    the genes missing in the samples it compares."""
    path = _cells_with(tmp_path, "dense", lambda counts: counts.__setitem__((2, 5), np.nan))  # an NK cell
    kwargs = dict(permutations=20, seed=4, device="cpu", nan_policy="drop")
    spec = tmp_path / "contrasts.tsv"
    spec.write_text("name\tgroupby\tcase\tcontrol\nTB\tgroup\tT\tB\nNK\tgroup\tNK\trest\n")
    tables = permenrich.contrasts(path, spec, mode="genes", **kwargs).attrs["per_contrast"]
    assert "G5" in set(tables["TB"].gene) and "G5" not in set(tables["NK"].gene)
    single = permenrich.genes(path, None, groupby="group", case="T", control="B", **kwargs)
    assert_identical(_drop_run(tables["TB"]), _drop_run(single))
