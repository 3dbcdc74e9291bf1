"""Over-representation: list mode vs Fisher's exact test; expression mode's permutation
p-values vs a brute-force Python loop over the same permutations."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import permenrich
from permenrich.errors import cli_option_names
from permenrich.design import PermutationPlan, TwoGroupLabels
from permenrich.stats.metrics import metric_reference
from _tables import assert_identical


def _expression(seed=0, n_genes=120, n_case=6, n_control=6):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_genes, n_case + n_control))
    factor = rng.normal(size=n_case + n_control)
    values[:30] += 0.8 * factor  # a correlated module
    values[:15, :n_case] += 1.2  # part of it shifted in cases
    genes = [f"g{i}" for i in range(n_genes)]
    expr = pd.DataFrame(values, index=genes, columns=[f"s{i}" for i in range(n_case + n_control)])
    sets = {"MODULE_UP": genes[:20], "MODULE_REST": genes[15:30], "OTHER": genes[40:70], "MIXED": genes[10:50]}
    return expr, ["A"] * n_case + ["B"] * n_control, sets


def test_list_mode_matches_fisher_exact():
    expr, _, sets = _expression()
    universe = list(expr.index)
    gene_list = universe[:25] + universe[60:65]
    result = permenrich.ora(gene_list, sets, universe=universe, min_size=5).set_index("gene_set")
    for name, members in sets.items():
        a = len(set(members) & set(gene_list))
        b = len(gene_list) - a
        c = len(members) - a
        d = len(universe) - a - b - c
        odds, p = sps.fisher_exact([[a, b], [c, d]], alternative="greater")
        row = result.loc[name]
        assert row.overlap == a and row.pval_hypergeom == pytest.approx(p, rel=1e-10)
        assert row.odds_ratio == pytest.approx(odds, rel=1e-12)
        assert row.expected == pytest.approx(len(members) * len(gene_list) / len(universe))
    assert np.isnan(result.pval_perm).all()


@pytest.mark.parametrize("rule", [{"top": 20, "direction": "both"}, {"top": 12, "direction": "up"},
                                  {"fdr": 0.2, "direction": "both"}])
def test_expression_mode_equals_brute_force_loop(rule):
    expr, labels, sets = _expression()
    n_perm = 200
    result = permenrich.ora(expr=expr, phenotype=labels, gene_sets=sets, case="A", control="B", metric="student_t",
                            permutations=n_perm, seed=3, min_size=5, threads=2, **rule).set_index("gene_set")
    values = expr.to_numpy()
    is_case = np.array(labels) == "A"
    plan = PermutationPlan(TwoGroupLabels(is_case), n_perm, 3)
    names = list(sets)

    def altered(case_mask):
        t = metric_reference(values, case_mask, "student_t")
        if "top" in rule:
            score = t if rule["direction"] == "up" else np.abs(t)
            order = sorted(range(t.size), key=lambda g: (-score[g], g))
            return set(expr.index[order[: rule["top"]]])
        p = sps.ttest_ind(values[:, case_mask], values[:, ~case_mask], axis=1).pvalue
        q = sps.false_discovery_control(p)
        return set(expr.index[q < rule["fdr"]])

    def overlaps(chosen):
        return np.array([len(chosen & set(sets[n])) for n in names])

    n_universe = len(expr)
    k = np.array([len(sets[n]) for n in names], dtype=float)

    def z_scores(chosen):
        """The overlap's z under the hypergeometric null of the list's size (0 if no variance)."""
        f = len(chosen) / n_universe
        variance = k * f * (1 - f) * (n_universe - k) / (n_universe - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(variance > 0, (overlaps(chosen) - k * f) / np.sqrt(variance), 0.0)

    observed_list = altered(is_case)
    observed = z_scores(observed_list)
    exceed, exceed_max = np.zeros(len(names)), np.zeros(len(names))
    for drawn in plan.labellings(0, n_perm):
        mask = np.zeros(is_case.size, dtype=bool)
        mask[drawn] = True  # drawn class is the case class here (6 vs 6)
        z = z_scores(altered(mask))
        exceed += z >= observed
        exceed_max += z.max() >= observed  # single-step maxT: the largest null z of the permutation
    got = result.loc[names]
    assert (got.overlap.to_numpy() == overlaps(observed_list)).all()
    np.testing.assert_allclose(got.pval_perm.to_numpy(), (exceed + 1) / (n_perm + 1), rtol=0, atol=0)
    # step-down maxT is at least the permutation p and at most the single-step one
    assert (got.pval_perm_maxt.to_numpy() >= got.pval_perm.to_numpy()).all()
    assert (got.pval_perm_maxt.to_numpy() <= (exceed_max + 1) / (n_perm + 1) + 1e-15).all()


def test_fdr_rule_judges_a_set_against_the_relabelled_list_sizes(caplog):
    """Under an FDR rule the relabelled lists are far shorter than the observed one: a
    set found less often than its size and the list's would give by chance is not
    called enriched (its raw overlap, 2, beat the empty relabelled lists' 0 every time),
    while a set of altered genes is; the user is told what the p-values then test."""
    rng = np.random.default_rng(8)
    values = rng.normal(size=(200, 12))
    values[:60, :6] += 4.0
    genes = [f"g{i}" for i in range(200)]
    expr = pd.DataFrame(values, index=genes)
    sets = {"ALTERED": genes[:20], "DEPLETED": genes[58:90]}  # 2 altered genes of 32: 9.6 expected
    with caplog.at_level("WARNING", logger="permenrich"):
        result = permenrich.ora(expr=expr, phenotype=["A"] * 6 + ["B"] * 6, gene_sets=sets, case="A", control="B",
                                metric="student_t", fdr=0.05, direction="up", permutations=200, seed=1,
                                min_size=5, threads=1).set_index("gene_set")
    assert result.loc["DEPLETED", "overlap"] == 2 and result.loc["DEPLETED", "pval_hypergeom"] > 0.99
    assert result.loc["DEPLETED", "pval_perm"] > 0.5
    assert result.loc["ALTERED", "pval_perm"] < 0.01
    assert "mostly test whether any gene is altered" in caplog.text and "top=" in caplog.text


def test_expression_mode_errors():
    expr, labels, sets = _expression()
    with pytest.raises(permenrich.InputError, match="exactly one selection rule"):
        permenrich.ora(expr=expr, phenotype=labels, gene_sets=sets, case="A", control="B")
    with pytest.raises(permenrich.InputError, match="welch_t cannot: use top= instead"):
        permenrich.ora(expr=expr, phenotype=labels, gene_sets=sets, case="A", control="B", metric="welch_t", fdr=0.1)
    with cli_option_names(), pytest.raises(permenrich.InputError, match="^--fdr needs.*welch_t cannot: use --top"):
        permenrich.ora(expr=expr, phenotype=labels, gene_sets=sets, case="A", control="B", metric="welch_t", fdr=0.1)
    with pytest.raises(permenrich.InputError, match="none of the 2 listed genes"):
        permenrich.ora(["X1", "X2"], sets, universe=list(expr.index), min_size=5)
    with pytest.raises(permenrich.InputError, match="needs a universe"):
        permenrich.ora(["g1"], sets)


@pytest.mark.parametrize("direction", ["up", "down", "both"])
def test_top_selection_equals_a_stable_sort(direction):
    """Choosing the top genes by partition equals taking the first ``top`` of a stable
    sort by extremeness (ties in gene-index order), with ties, NaN and infinities."""
    from permenrich.modes.ora import _select_genes

    rng = np.random.default_rng(3)
    stats = np.round(rng.normal(size=(40, 300)), 1)  # many ties
    stats[0, :50] = np.nan
    stats[1, 7] = np.inf
    stats[2, 9] = -np.inf
    stats[3] = 0.5  # all tied
    for top in (1, 17, 120, 300):
        got = _select_genes(stats, top=top, fdr=None, direction=direction, centre=0.1, pvalue_of_statistic=None)
        signed = {"up": stats - 0.1, "down": 0.1 - stats, "both": np.abs(stats - 0.1)}[direction]
        order = np.argsort(-np.where(np.isnan(signed), -np.inf, signed), axis=1, kind="stable")[:, :top]
        expected = np.zeros_like(got)
        np.put_along_axis(expected, order, True, axis=1)
        np.testing.assert_array_equal(got, expected)
        assert (got.sum(axis=1) == top).all()


@pytest.mark.parametrize("mode", ["list", "top", "fdr"])
def test_a_set_covering_the_universe_gets_p_one(mode):
    """It used to stop the whole run ('contains every analysed gene'); now its p-values
    are 1 in every column and the other sets' results are those of a run without it."""
    expr, labels, sets = _expression()
    with_all = {**sets, "ALL": list(expr.index)}
    if mode == "list":
        kwargs = dict(universe=list(expr.index))
        args = (list(expr.index[:25]),)
    else:
        kwargs = dict(expr=expr, phenotype=labels, case="A", control="B", metric="student_t", permutations=100,
                      seed=2, threads=2, **({"top": 20} if mode == "top" else {"fdr": 0.3}))
        args = ()
    result = permenrich.ora(*args, gene_sets=with_all, min_size=5, **kwargs).set_index("gene_set")
    full = result.loc["ALL"]
    assert full.overlap == full.list_size and full.pval_hypergeom == 1.0
    if mode == "list":
        assert np.isnan(full.pval_perm)
    else:
        assert full.pval_perm == 1.0 and full.pval_perm_maxt == 1.0 and full.padj_bh_perm == 1.0
    assert result.attrs["run"]["data"]["n_gene_sets_covering_universe"] == 1
    without = permenrich.ora(*args, gene_sets=sets, min_size=5, **kwargs).set_index("gene_set")
    columns = ["overlap", "pval_hypergeom", "pval_perm", "pval_perm_maxt"]
    assert_identical(result.loc[list(sets), columns], without.loc[list(sets), columns])


def test_gene_list_errors_name_the_files(tmp_path, caplog):
    expr, _, sets = _expression()
    universe = tmp_path / "universe.txt"
    universe.write_text("\n".join(expr.index) + "\n")
    listed = tmp_path / "hits.txt"
    listed.write_text("X1\nX2\n")
    with pytest.raises(permenrich.InputError, match=rf"^{listed}: none of the 2 listed genes is in the universe "
                                                    rf"\({universe}, 120 genes\)"):
        permenrich.ora(listed, sets, universe=universe, min_size=5)
    with pytest.raises(permenrich.InputError, match=rf"^{listed}: list mode needs a universe \(universe=, or"):
        permenrich.ora(listed, sets)
    listed.write_text("g1\ng2\nX1\n")
    with caplog.at_level("WARNING", logger="permenrich"):
        permenrich.ora(listed, sets, universe=universe, min_size=5)
    assert f"{listed}: 1 of 3 listed genes are not in the universe ({universe})" in caplog.text
    (tmp_path / "other.txt").write_text("Y1\nY2\n")
    labels = ["A"] * 6 + ["B"] * 6
    with pytest.raises(permenrich.InputError, match=r"other.txt: the universe shares no gene with the expression data"):
        permenrich.ora(expr=expr, phenotype=labels, gene_sets=sets, case="A", control="B", top=10,
                       universe=tmp_path / "other.txt", permutations=10)
