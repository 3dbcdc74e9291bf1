"""GMT/GMX readers and the flat gene-set index."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from permenrich.errors import InputError, OptionError, cli_option_names
from permenrich.genesets import GeneSetIndex, build_gene_set_index
from permenrich.io import GeneSet, iter_gene_sets, read_gene_sets, read_gmt, read_gmx


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- GMT


def test_read_gmt(tmp_path: Path) -> None:
    text = "# a comment\nSET_A\thttp://x\tG1\tG2\t\tG1\tG3\n\nset_b\t\tG4\r\nEMPTY\tno genes\n"
    sets = read_gmt(write(tmp_path / "a.gmt", text))
    assert [s.name for s in sets] == ["SET_A", "set_b", "EMPTY"]
    assert sets[0] == GeneSet("SET_A", "http://x", ["G1", "G2", "G3"], str(tmp_path / "a.gmt"))
    assert sets[1].genes == ["G4"] and sets[2].genes == []


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("A\td\tG1\nB_ONLY_NAME\n", ["line 2", "1 field"]),
        ("A\td\tG1\n\td\tG2\n", ["line 2", "name is empty"]),
        ("Alpha\td\tG1\nB\td\tG2\nALPHA\td\tG3\n", ["'ALPHA'", "line 3", "'Alpha'", "line 1", "case-insensitively"]),
        ("# only a comment\n\n", ["no gene sets"]),
        # a GMX file named .gmt: its gene rows were read as sets named after their first gene
        ("SET_A\tSET_B\tSET_C\nna\tna\tna\nG1\tG2\tG3\n", ["line 2", "GMX", "name the file .gmx"]),
        ("SET_A\tSET_B\tSET_C\nhttp://x/a\thttp://x/b\t\nG1\tG2\tG3\n", ["line 2", "GMX"]),
    ],
)
def test_gmt_bad_input(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(InputError) as info:
        read_gmt(write(tmp_path / "bad.gmt", text))
    message = str(info.value)
    assert "bad.gmt" in message
    for fragment in fragments:
        assert fragment in message


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path / "one.gmt", "A\td\tG1\n")
    second = write(tmp_path / "two.gmt", "B\td\tG1\na\td\tG2\n")
    with pytest.raises(InputError) as info:
        read_gene_sets([first, second])
    message = str(info.value)
    assert "one.gmt line 1" in message and "two.gmt line 2" in message


# --------------------------------------------------------------------------- GMX


def test_read_gmx_ragged(tmp_path: Path) -> None:
    text = "A\tB\tC\t\nda\tdb\tdc\t\nG1\tG2\tG3\nG4\t\tG5\nG6\n"
    sets = read_gmx(write(tmp_path / "x.gmx", text))
    assert [(s.name, s.description, s.genes) for s in sets] == [
        ("A", "da", ["G1", "G4", "G6"]),
        ("B", "db", ["G2"]),
        ("C", "dc", ["G3", "G5"]),
    ]
    assert read_gene_sets(tmp_path / "x.gmx") == sets  # chosen by extension


def test_gmx_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="one.gmx.*1 lines"):
        read_gmx(write(tmp_path / "one.gmx", "A\tB\n"))
    with pytest.raises(InputError, match="noname.gmx.*column 2.*name is empty"):
        read_gmx(write(tmp_path / "noname.gmx", "A\t\nd\td\nG1\tG2\n"))
    with pytest.raises(InputError, match="dup.gmx.*column 2.*column 1"):
        read_gmx(write(tmp_path / "dup.gmx", "A\ta\nd\td\nG1\tG2\n"))


def test_read_gene_sets_dict_and_errors(tmp_path: Path) -> None:
    sets = read_gene_sets({"S1": ["a", "b", "a"], "S2": ("c",)})
    assert [(s.name, s.genes, s.source) for s in sets] == [("S1", ["a", "b"], "<dict>"), ("S2", ["c"], "<dict>")]
    with pytest.raises(InputError, match="'S1' maps to str"):
        read_gene_sets({"S1": "abc"})
    with pytest.raises(InputError, match="missing.gmt.*not found"):
        read_gene_sets(tmp_path / "missing.gmt")
    with pytest.raises(InputError, match="no gene-set source"):
        read_gene_sets([])


def test_real_msigdb_gmts(shared_data: Path) -> None:
    hallmark = read_gmt(shared_data / "genesets" / "h.all.v7.0.symbols.gmt")
    kegg = read_gmt(shared_data / "genesets" / "c2.cp.kegg.v7.5.1.symbols.gmt")
    assert len(hallmark) == 50 and len(kegg) == 186
    names = {s.name for s in hallmark + kegg}
    assert "HALLMARK_IL6_JAK_STAT3_SIGNALING" in names and "KEGG_JAK_STAT_SIGNALING_PATHWAY" in names
    assert all(len(s.genes) == len(set(s.genes)) > 0 for s in hallmark + kegg)
    assert len(read_gene_sets([shared_data / "genesets" / "h.all.v7.0.symbols.gmt",
                               shared_data / "genesets" / "c2.cp.kegg.v7.5.1.symbols.gmt"])) == 236


# -------------------------------------------------------------------- the index


GENES = [f"G{i}" for i in range(10)]


def small_sets() -> list[GeneSet]:
    return [
        GeneSet("S0", "d0", ["G5", "G1", "X", "G3"], "t.gmt"),  # used 3, original 4
        GeneSet("S1", "d1", ["G9"], "t.gmt"),  # used 1: too small for min_size=2
        GeneSet("S2", "d2", ["G0", "G9", "G2", "Y", "Z"], "t.gmt"),  # used 3, original 5
        GeneSet("S3", "d3", GENES, "t.gmt"),  # used 10: too large for max_size=5
    ]


def test_index_arrays(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="permenrich"):
        index = build_gene_set_index(small_sets(), GENES, min_size=2, max_size=5)
    assert "kept 2 of 4 gene sets" in caplog.text
    assert isinstance(index, GeneSetIndex) and index.n_sets == 2
    assert list(index.names) == ["S0", "S2"] and list(index.descriptions) == ["d0", "d2"]
    np.testing.assert_array_equal(index.members, [1, 3, 5, 0, 2, 9])
    np.testing.assert_array_equal(index.offsets, [0, 3, 6])
    np.testing.assert_array_equal(index.sizes, [3, 3])
    np.testing.assert_array_equal(index.sizes_original, [4, 5])
    assert index.members.dtype == np.int32 and index.offsets.dtype == np.int64
    assert index.sizes.dtype == np.int32 and index.sizes_original.dtype == np.int32
    assert index.names.dtype == object
    assert index.genes_of(1, GENES) == ["G0", "G2", "G9"]


def test_gene_to_sets_is_the_inverse() -> None:
    rng = np.random.default_rng(3)
    genes = [f"g{i}" for i in range(200)]
    sets = [
        GeneSet(f"S{k}", "", list(rng.choice(genes, size=rng.integers(5, 40), replace=False)), "r")
        for k in range(30)
    ]
    index = build_gene_set_index(sets, genes, min_size=10, max_size=30)
    set_offsets, set_ids = index.gene_to_sets(len(genes))
    assert set_offsets.dtype == np.int64 and set_ids.dtype == np.int32 and len(set_offsets) == 201
    for g in range(len(genes)):
        expected = [s for s in range(index.n_sets) if g in index.members[index.offsets[s] : index.offsets[s + 1]]]
        assert list(set_ids[set_offsets[g] : set_offsets[g + 1]]) == expected
    for s in range(index.n_sets):
        block = index.members[index.offsets[s] : index.offsets[s + 1]]
        assert np.all(np.diff(block) > 0) and 10 <= len(block) <= 30


def test_no_set_remains_message() -> None:
    with pytest.raises(InputError) as info:
        build_gene_set_index(small_sets(), GENES, min_size=4, max_size=5)
    message = str(info.value)
    for fragment in ["t.gmt", "4 gene sets read", "1 to 10", "[4, 5]", "min_size=/max_size=", "chip="]:
        assert fragment in message
    with cli_option_names(), pytest.raises(InputError, match="--chip maps probes.*change --min-size/--max-size"):
        build_gene_set_index(small_sets(), GENES, min_size=4, max_size=5)


def test_no_match_suggests_chip_or_case() -> None:
    sets = [GeneSet("S", "", ["TP53", "EGFR"], "h.gmt")]
    with pytest.raises(InputError, match="probe ids vs symbols: chip= maps probes to symbols"):
        build_gene_set_index(sets, ["1000_at", "1001_at"], min_size=1)
    with pytest.raises(InputError, match="2 set members would ignoring case"):
        build_gene_set_index(sets, ["tp53", "egfr"], min_size=1)


def test_index_option_and_input_errors() -> None:
    with pytest.raises(OptionError, match="min_size.*at least 1"):
        build_gene_set_index(small_sets(), GENES, min_size=0)
    with pytest.raises(OptionError, match="max_size.*>= min_size"):
        build_gene_set_index(small_sets(), GENES, min_size=5, max_size=4)
    with pytest.raises(InputError, match="'G1' repeats.*collapse"):
        build_gene_set_index(small_sets(), GENES + ["G1"], min_size=1)


def test_real_index_after_chip(shared_data: Path) -> None:
    from permenrich.io import apply_chip, read_expression

    leukemia = shared_data / "leukemia"
    probes = read_expression(leukemia / "Leukemia_hgu95av2.gct")
    expr = apply_chip(probes, leukemia / "Human_AFFY_HG_U95_MSigDB_7_0_final.chip")
    hallmark = read_gene_sets(shared_data / "genesets" / "h.all.v7.0.symbols.gmt")
    index = build_gene_set_index(hallmark, expr.gene_ids)
    assert 40 <= index.n_sets <= 50
    assert np.all(index.sizes <= index.sizes_original)
    assert index.offsets[-1] == len(index.members) == index.sizes.sum()


# ------------------------------------------------------------ streaming the collection


def test_sets_outside_the_bounds_are_not_kept_in_memory() -> None:
    """Sets are mapped as they arrive: the index holds the kept sets only and no GeneSet
    object outlives its turn (a GMT of 1e6 sets took 6.9 GB when all were held)."""
    import weakref

    genes = [f"g{i}" for i in range(50)]
    refs = []

    def stream():
        for k in range(200):
            gene_set = GeneSet(f"S{k}", f"d{k}", genes[k % 7 : k % 7 + (8 if k % 4 == 0 else 3 if k % 4 < 3 else 30)],
                               f"part{k % 2}.gmt")
            refs.append(weakref.ref(gene_set))
            yield gene_set

    index = build_gene_set_index(stream(), genes, min_size=5, max_size=10)
    assert (index.n_read, index.n_too_small, index.n_too_large, index.n_sets) == (200, 100, 50, 50)
    assert list(index.names) == [f"S{k}" for k in range(0, 200, 4)]
    assert list(index.sources[:2]) == ["part0.gmt", "part0.gmt"] and set(index.sizes) == {8}
    assert index.offsets[-1] == index.members.size == 50 * 8
    assert all(ref() is None for ref in refs)


def test_gmt_is_read_lazily_and_load_gene_sets_reports_counts(tmp_path: Path) -> None:
    from permenrich._pipeline import load_gene_sets

    lines = [f"SET{k}\td\t" + "\t".join(f"G{(k + j) % 10}" for j in range(2 + k % 5)) for k in range(30)]
    path = write(tmp_path / "many.gmt", "\n".join(lines) + "\nBROKEN_LINE_WITHOUT_TABS\n")
    stream = iter_gene_sets(path)
    assert next(stream).name == "SET0"  # read before the broken last line is reached
    with pytest.raises(InputError, match="many.gmt: line 31 has 1 field"):
        list(stream)
    path.write_text("\n".join(lines) + "\n")
    index = load_gene_sets(path, np.array(GENES, dtype=object), min_size=4, max_size=5)
    assert index.n_read == 30
    assert (index.n_too_small, index.n_too_large, index.n_sets) == (12, 6, 12)
    assert list(index.sizes) == [4, 5] * 6


def test_full_set_error_names_the_gene_set_file(tmp_path: Path) -> None:
    from permenrich._pipeline import load_gene_sets

    path = write(tmp_path / "all.gmt", "ALL\td\tG0\tG1\tG2\n")
    with pytest.raises(InputError, match=r"^.*all.gmt: gene set 'ALL' contains all 3 analysed genes"):
        load_gene_sets(path, np.array(["G0", "G1", "G2"], dtype=object), min_size=1, max_size=10)
    assert load_gene_sets(path, np.array(["G0", "G1", "G2"], dtype=object), min_size=1, max_size=10,
                          allow_full=True).n_sets == 1


def test_members_matching_only_ignoring_case_are_warned_about(caplog):
    """A matrix with one gene id in three lowercased ran without a word while its sets
    lost a third of their members: members that match a gene of the data only when case
    is ignored are now counted and warned about."""
    import logging

    from permenrich.genesets import build_gene_set_index
    from permenrich.io.genesets import GeneSet

    genes = [f"GENE{i}" if i % 3 else f"gene{i}" for i in range(90)]
    sets = [GeneSet(f"S{k}", "", [f"GENE{i}" for i in range(30 * k, 30 * k + 30)], "sets.gmt") for k in range(3)]
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        index = build_gene_set_index(sets, genes, min_size=5, max_size=500)
    assert list(index.sizes) == [20, 20, 20]
    assert "30 gene-set members (e.g. 'GENE0') match a gene of the data only when case is ignored ('gene0')" \
        in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        build_gene_set_index(sets, [g.upper() for g in genes], min_size=5, max_size=500)
    assert "case is ignored" not in caplog.text
