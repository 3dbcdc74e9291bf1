"""Enrichment scores against independent references: the literal dense definition,
fgsea's C++ (calcGseaStat*) and GSEA Java's own preranked run."""

import re

import numpy as np
import pandas as pd
import pytest

from permenrich.backends.cpu import CpuBackend
from permenrich.enrich.running_sum import running_sum, running_sum_dense
from permenrich.stats.metrics import get_metric


def _es_dense(in_set, ranked_stat, weight):
    curve = running_sum_dense(in_set, ranked_stat, weight)
    return curve[np.argmax(np.abs(curve))]


@pytest.mark.parametrize("weight", [0.0, 1.0, 1.5, 2.0])
def test_closed_form_equals_dense_walk(weight):
    rng = np.random.default_rng(0)
    n = 400
    ranked = np.sort(rng.normal(size=n))[::-1]
    for k in [1, 5, 40, 399]:
        for _ in range(5):
            members = rng.choice(n, size=k, replace=False)
            in_set = np.zeros(n, dtype=bool)
            in_set[members] = True
            result = running_sum(members, np.abs(ranked) ** weight)
            assert result.es == pytest.approx(_es_dense(in_set, ranked, weight), abs=1e-12)


def test_leading_edge_positive_and_negative():
    ranked = np.linspace(1, -1, 10)
    top = running_sum(np.array([0, 1, 2]), np.abs(ranked))
    assert top.es > 0 and list(top.leading_edge_positions) == [0, 1, 2]
    assert top.peak_position == 2 and top.list_fraction == pytest.approx(0.3)
    assert top.tags_fraction == 1.0
    assert top.signal_fraction == pytest.approx(1.0 * (1 - 0.3) * 10 / 7)
    bottom = running_sum(np.array([7, 8, 9]), np.abs(ranked))
    assert bottom.es < 0 and list(bottom.leading_edge_positions) == [7, 8, 9]
    assert bottom.peak_position == 6 and bottom.list_fraction == pytest.approx(0.4)


def test_walk_kernel_equals_closed_form_for_many_sets():
    rng = np.random.default_rng(4)
    n_genes, n_samples = 300, 10
    values = rng.normal(size=(n_genes, n_samples))
    sets = [np.sort(rng.choice(n_genes, size=k, replace=False)) for k in [3, 10, 50, 120, 299]]
    members = np.concatenate(sets)
    offsets = np.r_[0, np.cumsum([s.size for s in sets])]
    for weight in [0.0, 1.0, 2.0]:
        backend = CpuBackend(threads=2)
        backend.prepare_statistic(values, get_metric("signal_to_noise"), drawn_is_case=True)
        backend.prepare_sets("ks", members, offsets, weight, n_genes)
        es, stat = backend.score(np.array([[0, 1, 2, 3], [1, 4, 6, 9]]), keep_stat=True)
        for row in range(2):
            order = np.lexsort((np.arange(n_genes), -stat[row]))
            position = np.empty(n_genes, dtype=int)
            position[order] = np.arange(n_genes)
            weights = np.abs(stat[row][order]) ** weight
            for s, m in enumerate(sets):
                assert es[row, s] == pytest.approx(running_sum(position[m], weights).es, abs=1e-12)


def test_fgsea_calc_gsea_stat_batch(shared_data):
    base = shared_data / "reference" / "fgsea_cpp"
    stats_abs = pd.read_csv(base / "inputs" / "batchcpp_stats.tsv", sep="\t")["statsAbs"].to_numpy()
    ref = pd.read_csv(base / "refs" / "ref_calcGseaStatBatchCpp.tsv", sep="\t")
    pathways = [np.array(line.split("\t"), dtype=int) - 1
                for line in (base / "inputs" / "pathways.tsv").read_text().splitlines() if line.strip()]
    assert len(pathways) == len(ref) == 20
    for row, members in zip(ref.itertuples(), pathways):
        assert running_sum(members, stats_abs).es == pytest.approx(row.ES, abs=1e-12)


def test_fgsea_calc_gsea_stat_cumulative_prefixes(shared_data):
    base = shared_data / "reference" / "fgsea_cpp"
    stats = pd.read_csv(base / "inputs" / "stats.tsv", sep="\t")["stats"].to_numpy()
    selected = pd.read_csv(base / "inputs" / "cumulative_selectedStats.tsv", header=None)[0].to_numpy() - 1
    ref = pd.read_csv(base / "refs" / "ref_calcGseaStatCumulative.tsv", sep="\t")
    ref = ref[ref.scoreType == "std"].sort_values("prefix_index0")
    weights = np.abs(stats)
    got = [running_sum(selected[: j + 1], weights).es for j in ref.prefix_index0]
    np.testing.assert_allclose(got, ref.value.to_numpy(), atol=1e-12)


def _edb_records(path):
    text = path.read_text()
    out = {}
    for match in re.finditer(r'<DTG [^>]*GENESET="[^"#]*#([^"]+)" ES="([^"]+)" NES="([^"]+)" NP="([^"]+)" '
                             r'FDR="([^"]+)" FWER="([^"]+)"', text):
        out[match.group(1)] = tuple(float(v) for v in match.groups()[1:])
    return out


def test_gsea_java_preranked_es(shared_data):
    base = shared_data / "reference" / "gsea_java_preranked"
    rnk = pd.read_csv(base / "gsea_data.gsea_data.rnk", sep="\t", header=None, names=["gene", "score"])
    rnk = rnk.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    position = {g: i for i, g in enumerate(rnk.gene)}
    weights = np.abs(rnk.score.to_numpy())
    records = _edb_records(base / "results.edb")
    assert len(records) == 7
    for line in (base / "gene_sets.gmt").read_text().splitlines():
        fields = line.split("\t")
        members = np.array(sorted({position[g] for g in fields[2:] if g in position}))
        es = running_sum(members, weights).es
        # GSEA writes ES with 4 decimals
        assert es == pytest.approx(records[fields[0]][0], abs=5.01e-5), fields[0]


@pytest.mark.parametrize("weight", [0.0, 1.0, 1.5, 2.0])
def test_set_scoring_by_walk_and_by_bitmap_give_the_same_bits(weight):
    """The two CPU set scorers (sort each set's ranks through a bitmap, two permutations
    at a time; walk the ranked list appending positions to every set) differ only in
    speed: exact equality, on ties, signed zeros, infinite statistics in one permutation
    of a pair, a set whose weights sum to 0 in one of them, odd permutations per thread,
    sets of 1 and n - 1 genes, and a gene count that is not a multiple of 64."""
    from permenrich.backends import cpu
    from permenrich.genesets import gene_to_sets

    rng = np.random.default_rng(7)
    n_genes = 203
    stats = np.round(rng.normal(size=(6, n_genes)), 1)  # many exact ties
    stats[1, :5] = [0.0, -0.0, 0.0, -0.0, 0.0]
    stats[2, 7] = np.inf
    stats[3, [3, 90]] = [np.inf, -np.inf]
    sizes = [1, n_genes - 1, 2, 64, 65, 150] + list(rng.integers(1, 120, size=60))
    sets = [np.sort(rng.choice(n_genes, size=k, replace=False)) for k in sizes]
    sets.append(np.arange(5))  # all zero in row 1: N_R = 0 there, not in its pair's row 0
    sizes.append(5)
    members = np.concatenate(sets).astype(np.int64)
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    gene_offsets, gene_ids = gene_to_sets(members, offsets, n_genes)
    largest = max(sizes)
    by_walk = np.empty((stats.shape[0], len(sets)))
    by_bitmap = np.empty_like(by_walk)
    cpu.ks_scores(stats, weight, members, offsets, largest, gene_offsets, gene_ids, True, 2, by_walk)
    cpu.ks_scores(stats, weight, members, offsets, largest, gene_offsets, gene_ids, False, 2, by_bitmap)
    assert np.array_equal(by_walk, by_bitmap)
    for row in (0, 4):
        order = np.lexsort((np.arange(n_genes), -stats[row]))
        position = np.empty(n_genes, dtype=int)
        position[order] = np.arange(n_genes)
        weights = np.abs(stats[row][order]) ** weight
        for s, m in enumerate(sets):
            assert by_walk[row, s] == pytest.approx(running_sum(position[m], weights).es, abs=1e-12)


def test_set_scorer_walks_only_dense_sets_in_gene_order():
    from permenrich.backends import cpu

    backend = CpuBackend(threads=1)
    n_genes = 50
    dense = np.tile(np.arange(n_genes), 5)
    offsets = np.arange(0, dense.size + 1, n_genes)
    assert cpu._KsStatistic(dense, offsets, 1.0, n_genes, backend).walk
    with_empty_set = np.r_[offsets[:2], offsets[1:]]  # an empty set between the first two
    assert cpu._KsStatistic(dense, with_empty_set, 1.0, n_genes, backend).walk
    shuffled = dense.copy()
    shuffled[:2] = [1, 0]  # a set not in gene order: its N_R must be added in member order
    assert not cpu._KsStatistic(shuffled, offsets, 1.0, n_genes, backend).walk
    sparse_sets = np.arange(20)
    assert not cpu._KsStatistic(sparse_sets, np.array([0, 20]), 1.0, n_genes, backend).walk
