"""Lists from other omics: an item -> gene map (miRNA targets, protein -> gene) applied
to a list and its universe alike, and several lists in one run with BH across all."""

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import permenrich
from permenrich.cli import main
from permenrich.errors import InputError, OptionError

GENES = [f"G{i}" for i in range(300)]
SETS = {"TARGETED": GENES[:30], "HALF": GENES[15:60], "ELSEWHERE": GENES[200:240]}


def _mirna_map():
    """miR-k targets genes 10k..10k+14 (overlapping neighbours), an export with an extra column."""
    rows = [(f"hsa-miR-{k}", GENES[(10 * k + j) % 300], "strong") for k in range(30) for j in range(15)]
    return pd.DataFrame(rows, columns=["Item", "Gene", "evidence"])


def _write(path, text):
    path.write_text(text)
    return path


def test_a_mapped_list_equals_the_ora_of_its_target_genes(tmp_path) -> None:
    mapping = _mirna_map()
    mapping.to_csv(tmp_path / "targets.tsv", sep="\t", index=False)
    mirnas = ["hsa-miR-0", "hsa-miR-1", "hsa-miR-2", "hsa-miR-unknown"]
    universe = [f"hsa-miR-{k}" for k in range(30)]
    mapped = permenrich.ora(mirnas, SETS, universe=universe, map=str(tmp_path / "targets.tsv"), min_size=5)
    targets = list(dict.fromkeys(g for m in mirnas[:3] for g in mapping[mapping.Item == m].Gene))
    background = list(dict.fromkeys(mapping.Gene))
    direct = permenrich.ora(targets, SETS, universe=background, min_size=5)
    columns = [c for c in direct.columns]
    assert mapped[columns].to_csv() == direct[columns].to_csv()
    assert mapped.set_index("gene_set").overlap.loc["TARGETED"] == 30  # miR-0..2 target G0..G29 (and more)
    # Without a universe, the map's genes are the background: the same here.
    no_universe = permenrich.ora(mirnas, SETS, map=mapping, min_size=5)
    assert no_universe[columns].to_csv() == direct[columns].to_csv()
    # A dict map works too.
    as_dict = {m: list(group.Gene) for m, group in mapping.groupby("Item", sort=False)}
    assert permenrich.ora(mirnas, SETS, map=as_dict, min_size=5)[columns].to_csv() == direct[columns].to_csv()


def test_map_errors_are_one_line(tmp_path) -> None:
    bad = _write(tmp_path / "bad.tsv", "mirna\ttarget\nhsa-miR-1\tG1\n")
    with pytest.raises(InputError, match=r"bad.tsv: the map needs the columns item and gene"):
        permenrich.ora(["hsa-miR-1"], SETS, map=str(bad))
    # a row with a cell more than the header shifted the columns ('none of the items is in the map')
    ragged = _write(tmp_path / "ragged.tsv", "item\tgene\nhsa-miR-1\tx\tG1\n")
    with pytest.raises(InputError, match=r"ragged.tsv: a row has more cells than the header"):
        permenrich.ora(["hsa-miR-1"], SETS, map=str(ragged))
    twice = _write(tmp_path / "twice.tsv", "item\tGene\tgene\nhsa-miR-1\tG1\tG2\n")  # read as one column
    with pytest.raises(InputError, match=r"twice.tsv: line 1: column 'gene' appears twice \(columns 2 and 3\)"):
        permenrich.ora(["hsa-miR-1"], SETS, map=str(twice))
    (tmp_path / "folder.tsv").mkdir()
    with pytest.raises(InputError, match=r"folder.tsv: map not found \(it is a directory\)"):
        permenrich.ora(["hsa-miR-1"], SETS, map=str(tmp_path / "folder.tsv"))
    good = _write(tmp_path / "good.tsv", "item\tgene\nhsa-miR-1\tG1\n")
    with pytest.raises(InputError, match=r"none of the 1 items of the gene list is in the map"):
        permenrich.ora(["hsa-let-7"], SETS, map=str(good))
    with pytest.raises(InputError, match=r"missing.tsv: map not found"):
        permenrich.ora(["hsa-miR-1"], SETS, map=str(tmp_path / "missing.tsv"))
    with pytest.raises(OptionError, match=r"maps the items of a list"):
        permenrich.ora(None, SETS, map=str(good), expr=pd.DataFrame(np.ones((3, 4))), phenotype=["a", "a", "b", "b"],
                       case="a", control="b", top=1)


def _lists_folder(tmp_path):
    _mirna_map().to_csv(tmp_path / "mirtarbase.tsv", sep="\t", index=False)
    pd.DataFrame({"item": [f"P{i:05d}" for i in range(300)], "gene": GENES}).to_csv(
        tmp_path / "uniprot.tsv", sep="\t", index=False)
    _write(tmp_path / "mirnas.txt", "\n".join(f"hsa-miR-{k}" for k in (0, 1, 2, 20)) + "\n")
    _write(tmp_path / "mirna_universe.txt", "\n".join(f"hsa-miR-{k}" for k in range(30)) + "\n")
    _write(tmp_path / "proteins.txt", "\n".join(f"P{i:05d}" for i in list(range(20, 50)) + [250]) + "\n")
    _write(tmp_path / "mrna.txt", "\n".join(GENES[200:225]) + "\n")
    _write(tmp_path / "universe.txt", "\n".join(GENES) + "\n")
    return _write(tmp_path / "lists.tsv", "list\tgenes\tuniverse\tmap\n"
                                          "miRNA\tmirnas.txt\tmirna_universe.txt\tmirtarbase.tsv\n"
                                          "protein\tproteins.txt\t\tuniprot.tsv\n"
                                          "mRNA\tmrna.txt\tuniverse.txt\t\n")


def test_several_lists_each_equal_its_own_run_with_bh_across_all(tmp_path) -> None:
    manifest = _lists_folder(tmp_path)
    table = permenrich.ora_lists(str(manifest), SETS, min_size=5)
    assert set(table.list) == {"miRNA", "protein", "mRNA"}
    singles = {
        "miRNA": permenrich.ora(str(tmp_path / "mirnas.txt"), SETS, universe=str(tmp_path / "mirna_universe.txt"),
                                map=str(tmp_path / "mirtarbase.tsv"), min_size=5),
        "protein": permenrich.ora(str(tmp_path / "proteins.txt"), SETS, map=str(tmp_path / "uniprot.tsv"),
                                  min_size=5),
        "mRNA": permenrich.ora(str(tmp_path / "mrna.txt"), SETS, universe=str(tmp_path / "universe.txt"), min_size=5),
    }
    for name, single in singles.items():
        part = table[table.list == name].drop(columns=["list", "padj_bh_all"]).set_index("gene_set")
        assert part.loc[single.gene_set].to_csv() == single.set_index("gene_set").to_csv()
    expected = sps.false_discovery_control(table.pval_hypergeom.to_numpy(), method="bh")
    np.testing.assert_allclose(table.padj_bh_all.to_numpy(), expected, rtol=1e-12)
    assert (np.diff(table.padj_bh_all.to_numpy()) >= 0).all()
    best = table.iloc[0]
    assert (best.list, best.gene_set) in {("protein", "TARGETED"), ("mRNA", "ELSEWHERE"), ("protein", "HALF")}
    assert set(table.attrs["per_contrast"]) == {"miRNA", "protein", "mRNA"}


def test_cli_lists_and_map(tmp_path, capsys) -> None:
    manifest = _lists_folder(tmp_path)
    gmt = _write(tmp_path / "sets.gmt", "".join(f"{name}\tna\t" + "\t".join(genes) + "\n"
                                                for name, genes in SETS.items()))
    assert main(["ora", "--lists", str(manifest), "--gene-sets", str(gmt), "--min-size", "5",
                 "--out", str(tmp_path / "out")]) == 0
    written = pd.read_csv(tmp_path / "out" / "results.tsv", sep="\t")
    assert list(written.columns[:2]) == ["list", "gene_set"] and "padj_bh_all" in written.columns
    assert main(["ora", "--gene-list", str(tmp_path / "mirnas.txt"), "--map", str(tmp_path / "mirtarbase.tsv"),
                 "--gene-sets", str(gmt), "--min-size", "5", "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    _write(manifest, "list\tgenes\tcolour\nx\tmirnas.txt\tred\n")
    assert main(["ora", "--lists", str(manifest), "--gene-sets", str(gmt), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"lists.tsv: line 1: unknown column 'colour'", err[0])
    assert not (tmp_path / "bad").exists()


def test_a_matrix_giving_only_the_universe_is_not_refused_for_its_values() -> None:
    """List mode reads the matrix for its genes alone: a tiny value in it was refused (no
    value is analysed), while genes with a missing value still leave the universe."""
    genes = [f"G{i}" for i in range(60)]
    values = np.ones((60, 4))
    values[3, 2] = 1e-150
    values[5, 1] = np.nan
    expr = pd.DataFrame(values, index=genes, columns=[f"s{j}" for j in range(4)])
    table = permenrich.ora(genes[:10], {"S": genes[:20]}, expr=expr, min_size=5)
    assert table.attrs["run"]["data"]["n_universe"] == 59


def test_lists_take_a_shared_universe_and_refuse_options_they_would_ignore(tmp_path, capsys) -> None:
    """--lists ignored every other option, invalid ones too (--top 5, --seed -5, a map
    that does not exist): each is now refused in one line, except --universe and --map,
    the default of every list that names none of its own."""
    manifest = _lists_folder(tmp_path)
    gmt = _write(tmp_path / "sets.gmt", "".join(f"{name}\tna\t" + "\t".join(genes) + "\n"
                                                for name, genes in SETS.items()))
    base = ["ora", "--lists", str(manifest), "--gene-sets", str(gmt), "--min-size", "5"]
    for extra, flag in ((["--top", "5"], "--top"), (["--seed", "-5"], "--seed"), (["--permutations", "0"],
                         "--permutations"), (["--metric", "nosuch"], "--metric")):
        out = tmp_path / f"out{flag}"
        assert main([*base, *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"permenrich: error: {flag} does not apply here"), err
        assert not out.exists()
    # the resources are accepted, as in any run, and checked
    assert main([*base, "--threads", "1", "--device", "cpu", "--out", str(tmp_path / "resources")]) == 0
    assert main([*base, "--device", "tpu", "--out", str(tmp_path / "tpu")]) == 2
    assert "--device must be one of cpu, gpu, auto, got 'tpu'" in capsys.readouterr().err
    # a manifest without universes, and one universe for all of its lists
    shared = _write(tmp_path / "shared.tsv", "list\tgenes\nmRNA\tmrna.txt\nmore\tmirnas.txt\n")
    _write(tmp_path / "mirnas.txt", "\n".join(GENES[10:40]) + "\n")
    universe = str(tmp_path / "universe.txt")
    table = permenrich.ora_lists(str(shared), SETS, universe=universe, min_size=5)
    single = permenrich.ora(str(tmp_path / "mrna.txt"), SETS, universe=universe, min_size=5)
    part = table[table.list == "mRNA"].drop(columns=["list", "padj_bh_all"]).set_index("gene_set")
    assert part.loc[single.gene_set].to_csv() == single.set_index("gene_set").to_csv()
    assert table.attrs["run"]["parameters"]["universe"]["sha256"] == single.attrs["run"]["data"]["universe"]["sha256"]
    assert main(["ora", "--lists", str(shared), "--gene-sets", str(gmt), "--min-size", "5", "--universe", universe,
                 "--out", str(tmp_path / "shared_out")]) == 0
    with pytest.raises(permenrich.InputError, match="needs a universe"):
        permenrich.ora_lists(str(shared), SETS, min_size=5)


@pytest.mark.parametrize("options, refused", [
    (dict(direction="up"), "direction="), (dict(metric="welch_t"), "metric="), (dict(permutations=5), "permutations="),
    (dict(seed=9), "seed="), (dict(nan_policy="drop"), "nan_policy="), (dict(normalize="log2"), "normalize="),
    (dict(collapse="max"), "collapse= reads expr="),
    (dict(expr="x.gct"), "expr= only gives the background genes")])
def test_list_mode_refuses_options_it_would_ignore(tmp_path, options, refused) -> None:
    """These ran, with results identical to the run without them, and run.json recorded
    direction and seed as if used."""
    _lists_folder(tmp_path)
    with pytest.raises(permenrich.OptionError, match=re.escape(refused)):
        permenrich.ora(str(tmp_path / "mrna.txt"), SETS, universe=str(tmp_path / "universe.txt"), min_size=5,
                       **options)
    table = permenrich.ora(str(tmp_path / "mrna.txt"), SETS, universe=str(tmp_path / "universe.txt"), min_size=5,
                           permutations=1000, direction="both", device="auto")  # the defaults, given: accepted
    parameters = table.attrs["run"]["parameters"]
    assert parameters["seed"] is None and parameters["direction"] is None and parameters["device"] is None
    assert parameters["permutations"] is None


def test_a_list_with_its_own_map_keeps_its_background_beside_a_shared_universe(tmp_path) -> None:
    """The shared universe (gene symbols) was given to a list whose row names a map of its
    own (miRNAs): read as miRNA ids, no item of it was in the map and the run failed.
    Shared defaults go only to rows that name neither; numpy numbers equal to a default
    are defaults in list mode."""
    import numpy as np

    _lists_folder(tmp_path)
    universe = str(tmp_path / "universe.txt")
    lists = [{"name": "mRNA", "gene_list": str(tmp_path / "mrna.txt")},
             {"name": "miRNA", "gene_list": str(tmp_path / "mirnas.txt"), "map": str(tmp_path / "mirtarbase.tsv")}]
    table = permenrich.ora_lists(lists, SETS, universe=universe, min_size=5)
    alone = permenrich.ora(str(tmp_path / "mirnas.txt"), SETS, map=str(tmp_path / "mirtarbase.tsv"), min_size=5)
    part = table[table.list == "miRNA"].drop(columns=["list", "padj_bh_all"]).set_index("gene_set")
    assert part.loc[alone.gene_set].to_csv() == alone.set_index("gene_set").to_csv()
    permenrich.ora(str(tmp_path / "mrna.txt"), SETS, universe=universe, min_size=5, permutations=np.int64(1000),
                   seed=np.uint64(0), min_cells=np.int64(10))
