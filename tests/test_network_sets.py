"""Gene sets as a decoupler/OmniPath network table, and progress=True."""

import io
import logging

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.errors import InputError
from permenrich.io.genesets import network_sets, read_gene_sets
from _tables import assert_identical


def _data():
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(40)]
    expr = pd.DataFrame(rng.normal(size=(40, 8)), index=genes, columns=[f"s{i}" for i in range(8)])
    expr.iloc[:10, :4] += 1.5
    return expr, ["a"] * 4 + ["b"] * 4, genes


def test_network_gives_the_same_sets_as_a_dict():
    expr, labels, genes = _data()
    sets = {"TF1": genes[:10], "TF2": genes[5:25], "PATH": genes[20:40]}
    network = pd.DataFrame([(name, gene) for name, members in sets.items() for gene in members],
                           columns=["source", "target"]).sample(frac=1.0, random_state=1)  # rows in any order
    kwargs = dict(case="a", control="b", permutations=50, seed=3, min_size=5)
    from_dict = permenrich.gsea(expr, labels, sets, **kwargs)
    from_network = permenrich.gsea(expr, labels, network, **kwargs)
    by_name = [table.sort_values("gene_set").reset_index(drop=True) for table in (from_dict, from_network)]
    assert_identical(*by_name)


def test_network_weights_are_not_used_and_say_so(caplog):
    network = pd.DataFrame({"source": ["A", "A", "B"], "target": ["x", "y", "x"], "weight": [1.0, -1.0, 1.0]})
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        sets = network_sets(network)
    assert sets == {"A": ["x", "y"], "B": ["x"]}
    assert "weight' column is not used" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        network_sets(network.assign(weight=1.0))  # weights all 1: nothing to say
    assert caplog.text == ""
    assert [s.name for s in read_gene_sets(network.assign(weight=1))] == ["A", "B"]
    # a run records it with its other warnings
    expr, labels, genes = _data()
    weighted = pd.DataFrame({"source": ["S"] * 10, "target": genes[:10], "weight": [-1.0] * 10})
    table = permenrich.gsea(expr, labels, weighted, case="a", control="b", permutations=20, min_size=5)
    assert any("weight' column is not used" in w for w in table.attrs["run"]["warnings"])


@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"tf": ["A"], "target": ["x"]}), "'source' missing.*decoupler"),
    (pd.DataFrame({"source": ["A", None], "target": ["x", "y"]}), "row 2: empty 'source'"),
    (pd.DataFrame({"source": ["A", "B"], "target": ["x", " "]}), "row 2: empty 'target'"),
])
def test_network_errors_name_the_problem(frame, message):
    with pytest.raises(InputError, match=message):
        network_sets(frame)


def test_progress_true_shows_a_tqdm_bar(monkeypatch):
    import tqdm.auto

    stream = io.StringIO()
    original = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda **kwargs: original(file=stream, **kwargs))
    expr, labels, genes = _data()
    permenrich.gsea(expr, labels, {"S": genes[:10], "T": genes[10:30]}, case="a", control="b", permutations=300,
                    batch_size=64, seed=0, min_size=5, progress=True)
    text = stream.getvalue()
    assert "permutations" in text and "100%" in text
