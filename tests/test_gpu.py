"""The GPU backend gives the CPU path's answers.

Without a GPU the Numba-CUDA kernels run in Numba's CUDA simulator (tests/conftest.py
sets NUMBA_ENABLE_CUDASIM=1), so every submission exercises their logic on tiny inputs;
on a machine with a GPU the same tests run on the device, and the real-GPU tests at the
end run too.
"""

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.backends.gpu import GpuBackend, gpu_available
from permenrich.design import ContinuousPhenotype, PermutationPlan, TwoGroupLabels
from _tables import assert_identical

real_gpu = pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU (and CuPy) for real-device checks")


def _tiny(seed=0, n_genes=24, n_case=4, n_control=5):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_genes, n_case + n_control))
    values[:6, :n_case] += 1.0
    genes = [f"g{i}" for i in range(n_genes)]
    expr = pd.DataFrame(values, index=genes, columns=[f"s{i}" for i in range(n_case + n_control)])
    sets = {"UP": genes[:6], "MID": genes[4:14], "REST": genes[12:22]}
    return expr, ["a"] * n_case + ["b"] * n_control, sets


@pytest.mark.parametrize("design", ["random", "exact", "strata", "continuous"])
def test_device_labellings_bit_identical(design):
    is_case = np.array([True] * 4 + [False] * 6)
    if design == "continuous":
        plan = PermutationPlan(ContinuousPhenotype(np.arange(10.0), np.array([0] * 5 + [1] * 5)), 12, seed=3)
    elif design == "strata":
        plan = PermutationPlan(TwoGroupLabels(is_case, np.array([0, 1] * 5)), 12, seed=3)
    else:
        plan = PermutationPlan(TwoGroupLabels(is_case), 300 if design == "exact" else 12, seed=3)
    n = min(plan.n_perm, 40)
    assert plan.exact == (design == "exact")
    backend = GpuBackend()
    device = backend.labellings(plan, 0, n)
    assert np.array_equal(device.copy_to_host(), plan.labellings(0, n))
    # a second batch of the same plan: its generator arrays are not uploaded again
    uploaded = backend._uploads["plan"][1]
    later = backend.labellings(plan, 5, n)
    assert backend._uploads["plan"][1] is uploaded
    assert np.array_equal(later.copy_to_host(), plan.labellings(5, n))


@pytest.mark.parametrize("options", [
    {"metric": "signal_to_noise"},
    {"metric": "welch_t", "set_statistic": "maxmean"},
    {"metric": "mann_whitney", "weight": 0.0},
])
def test_gsea_gpu_equals_cpu(options):
    expr, labels, sets = _tiny()
    expr = expr * 37.1 + 1000.0  # intensities in the thousands: centring order matters in the last bits
    kwargs = dict(case="a", control="b", permutations=12, seed=1, min_size=5, **options)
    cpu = permenrich.gsea(expr, labels, sets, device="cpu", **kwargs)
    gpu = permenrich.gsea(expr, labels, sets, device="gpu", **kwargs)
    assert_identical(cpu, gpu)
    assert gpu.attrs["run"]["backend"]["backend"] == "gpu"


def test_device_scratch_is_a_quarter_of_the_memory_budget():
    """--memory bounds the device too: the backend's scratch (ranking tables, sort
    scratch) is the quarter of the budget that batches and kept null scores leave."""
    from permenrich._pipeline import parse_memory

    expr, labels, sets = _tiny()
    kwargs = dict(case="a", control="b", permutations=12, seed=1, min_size=5)
    cpu = permenrich.gsea(expr, labels, sets, device="cpu", **kwargs)
    for memory in ("4MB", "1GB"):
        gpu = permenrich.gsea(expr, labels, sets, device="gpu", memory=memory, **kwargs)
        assert gpu.attrs["run"]["backend"]["device_scratch_bytes"] == parse_memory(memory) // 4
        assert_identical(cpu, gpu)


def test_genes_and_correlation_gpu_equal_cpu():
    expr, labels, _ = _tiny()
    kwargs = dict(case="a", control="b", permutations=15, seed=2)
    for metric in ("welch_t", "student_t", "signal_to_noise"):
        assert_identical(permenrich.genes(expr, labels, device="cpu", metric=metric, **kwargs),
                                      permenrich.genes(expr, labels, device="gpu", metric=metric, **kwargs))
    sheet = pd.DataFrame({"age": np.linspace(20, 60, expr.shape[1]) ** 1.5,
                          "label": [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0][:expr.shape[1]]}, index=expr.columns)
    for metric in ("pearson", "spearman"):
        for column in ("age", "label"):  # a 0/1 label: the smaller class's sums on both devices
            kwargs = dict(metric=metric, phenotype_column=column, permutations=10, seed=2)
            assert_identical(permenrich.genes(expr, sheet, device="cpu", **kwargs),
                                          permenrich.genes(expr, sheet, device="gpu", **kwargs))


def test_prerank_gpu_equals_cpu():
    rng = np.random.default_rng(4)
    genes = [f"g{i}" for i in range(40)]
    scores = pd.Series(rng.normal(size=40), index=genes)
    sets = {"A": genes[:8], "B": genes[10:25], "C": genes[20:28]}
    kwargs = dict(permutations=10, seed=5, min_size=5)
    assert_identical(permenrich.prerank(scores, sets, device="cpu", **kwargs),
                                  permenrich.prerank(scores, sets, device="gpu", **kwargs))


def _tiny_hdf5(path, layout, n_cells=14, n_genes=11, seed=6):
    """Counts written with h5py alone (the device image has no anndata): a 10x file
    (streamed in sample blocks) or a plain genes x samples dataset (gene blocks)."""
    import h5py
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, size=(n_cells, n_genes)).astype(np.float32)
    counts[: n_cells // 2, :3] += 4
    genes = np.array([f"g{i}" for i in range(n_genes)], dtype="S")
    cells = np.array([f"c{i}" for i in range(n_cells)], dtype="S")
    with h5py.File(path, "w") as f:
        if layout == "10x":
            genes_by_cells = sp.csc_matrix(counts.T)
            m = f.create_group("matrix")
            for name in ("data", "indices", "indptr"):
                m.create_dataset(name, data=getattr(genes_by_cells, name))
            m.create_dataset("shape", data=np.array(genes_by_cells.shape, dtype=np.int32))
            m.create_dataset("barcodes", data=cells)
            m.create_group("features").create_dataset("name", data=genes)
        else:
            f.create_dataset("X", data=counts.T.astype(np.float64), chunks=(1, n_cells))
            f.create_dataset("gene_ids", data=genes)
            f.create_dataset("sample_ids", data=cells)
    labels = ["a"] * (n_cells // 2) + ["b"] * (n_cells - n_cells // 2)
    return path, labels


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("layout", ["10x", "plain"])
def test_streamed_statistics_gpu_equal_cpu(tmp_path, layout, cache):
    """A matrix streamed in several blocks (sample blocks from 10x, gene blocks from a
    plain dataset): the device either carries the class sums between blocks, or (when
    the matrix fits its cache budget) keeps the matrix after one pass; both give the
    CPU's statistics bit for bit."""
    from permenrich.backends.cpu import CpuBackend
    from permenrich.io.chunked import open_matrix
    from permenrich.stats.metrics import get_metric
    from permenrich.streaming import StreamedMatrix

    path, _ = _tiny_hdf5(tmp_path / f"cells_{layout}.h5", layout)
    plan = PermutationPlan(TwoGroupLabels(np.array([True] * 7 + [False] * 7)), 9, seed=4)
    labellings = plan.labellings(0, 9)
    with open_matrix(path) as source:
        matrix = StreamedMatrix(source, np.arange(14), max_block_bytes=3 * 8 * 11, normalise="log1p_cpm")
        assert sum(1 for _ in matrix.blocks()) >= 3
        results = []
        gpu = GpuBackend(device_cache_bytes=10**9 if cache else 0)
        for backend in (CpuBackend(threads=1), gpu):
            backend.prepare_statistic(matrix, get_metric("welch_t"))
            results.append(backend.to_host(backend.gene_statistics(labellings)))
        assert ("cached on the device" in gpu.describe()["streamed_matrix"]) == cache
    np.testing.assert_array_equal(results[0], results[1])


def test_streamed_genes_on_gpu_equals_in_memory_cpu(tmp_path):
    """End to end: a file over half of --memory is streamed to the device."""
    path, labels = _tiny_hdf5(tmp_path / "filtered_feature_bc_matrix.h5", "10x", n_cells=8, n_genes=8200)
    kwargs = dict(case="a", control="b", permutations=3, seed=2)  # 525 kB dense > 1MB / 2
    cpu = permenrich.genes(path, labels, device="cpu", memory="1GB", **kwargs)
    gpu = permenrich.genes(path, labels, device="gpu", memory="1MB", **kwargs)
    assert gpu.attrs["run"]["design"]["matrix_storage"] == "streamed from disk"
    assert gpu.attrs["run"]["backend"]["backend"] == "gpu"
    cpu.attrs, gpu.attrs = {}, {}
    assert_identical(cpu, gpu)


@pytest.mark.parametrize("mode", ["genes", "gsea"])
def test_meta_gpu_equals_cpu(mode):
    """Each study's statistics on the device, combined on the host, sets scored on the device."""
    studies = []
    for seed in (0, 1):
        expr, labels, sets = _tiny(seed=seed)
        studies.append({"expr": expr * 37.1 + 1000.0, "phenotype": labels, "case": "a", "control": "b"})
    kwargs = dict(mode=mode, method="random", permutations=12, seed=1, leave_one_out=True,
                  **({"min_size": 5} if mode == "gsea" else {}))
    cpu = permenrich.meta(studies, sets if mode == "gsea" else None, device="cpu", **kwargs)
    gpu = permenrich.meta(studies, sets if mode == "gsea" else None, device="gpu", **kwargs)
    assert_identical(cpu, gpu)
    assert gpu.attrs["run"]["backend"]["backend"] == "gpu"


def test_auto_device_and_errors():
    expr, labels, sets = _tiny()
    result = permenrich.gsea(expr, labels, sets, case="a", control="b", permutations=5, min_size=5, device="auto")
    assert result.attrs["run"]["backend"]["backend"] == ("gpu" if gpu_available() else "cpu")
    with pytest.raises(permenrich.OptionError, match="device= must be one of"):
        permenrich.gsea(expr, labels, sets, device="tpu")


@real_gpu
def test_leukemia_gpu_matches_cpu_on_device(shared_data, monkeypatch):
    """On the device, under every ES sort (the simulator cannot vouch for the bitmap sort's
    barriers and shared atomics on hardware): the CPU's table, exactly."""
    from permenrich.kernels.enrichment import ES_SORTS

    base = shared_data / "leukemia"
    gmts = [shared_data / "genesets" / "h.all.v7.0.symbols.gmt", shared_data / "genesets" / "c2.cp.kegg.v7.5.1.symbols.gmt"]
    kwargs = dict(chip=base / "Human_AFFY_HG_U95_MSigDB_7_0_final.chip", permutations=2000, seed=0)
    cpu = permenrich.gsea(base / "Leukemia_hgu95av2.gct", base / "Leukemia.cls", gmts, device="cpu", **kwargs)
    for sort in ES_SORTS:
        monkeypatch.setenv("PERMENRICH_GPU_ES_SORT", sort)
        gpu = permenrich.gsea(base / "Leukemia_hgu95av2.gct", base / "Leukemia.cls", gmts, device="gpu", **kwargs)
        assert gpu.attrs["run"]["backend"]["array_module"] == "cupy"
        assert gpu.attrs["run"]["backend"]["es_sort"] == sort
        assert_identical(cpu, gpu)


def test_both_backends_implement_the_protocol():
    """The runner talks to backends only through permenrich.backends.base.Backend."""
    import inspect

    from permenrich.backends.base import Backend
    from permenrich.backends.cpu import CpuBackend

    for backend in (CpuBackend(threads=1), GpuBackend()):
        assert isinstance(backend, Backend)
        for name, member in inspect.getmembers(Backend, inspect.isfunction):
            if not name.startswith("_"):
                implemented = [p for p in inspect.signature(getattr(type(backend), name)).parameters if p != "self"]
                declared = [p for p in inspect.signature(member).parameters if p != "self"]
                assert implemented == declared, (type(backend).__name__, name)
