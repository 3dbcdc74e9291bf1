"""Permutations on a Dask cluster (a LocalCluster of two worker processes here) give
byte-identical tables to a local run, whatever the ranges and their order of completion;
a worker killed mid-run changes nothing; an error raised on a worker reaches the caller
as the same one-line error."""

import logging
import os
import signal

import numpy as np
import pandas as pd
import pytest

import permenrich
import permenrich.cli
from permenrich import runner
from permenrich.errors import InputError
from permenrich.modes.genes import prepare_genes

distributed = pytest.importorskip("distributed", reason="needs the dask extra: pip install 'permenrich[dask]'")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR)
    with distributed.Client(cluster) as dask_client:
        yield dask_client
    cluster.close()


def _tsv(table: pd.DataFrame) -> str:
    return table.to_csv(sep="\t", index=False, lineterminator="\n")


def _cohort(n_genes=300, n_case=10, n_control=12, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.lognormal(5.0, 1.0, size=(n_genes, n_case + n_control))
    values[:25, :n_case] *= 1.7
    genes = [f"g{i}" for i in range(n_genes)]
    expr = pd.DataFrame(values, index=genes, columns=[f"s{i}" for i in range(n_case + n_control)])
    labels = ["A"] * n_case + ["B"] * n_control
    sets = {f"S{j}": list(rng.choice(genes, size=k, replace=False)) for j, k in enumerate([15, 25, 40, 60])}
    sets["PLANTED"] = genes[:25]
    return expr, labels, sets


def _check_ranges(table: pd.DataFrame, client) -> None:
    dask = table.attrs["run"]["timings"]["dask"]
    assert dask["workers"] == len(client.nthreads()) and dask["ranges_per_pass"] >= 4


@pytest.mark.parametrize("mode", ["gsea", "genes", "ora", "prerank", "meta", "meta_gsea", "meta_ora"])
def test_two_workers_equal_the_local_run_byte_for_byte(client, mode):
    expr, labels, sets = _cohort()
    kwargs = dict(permutations=2000, seed=11, batch_size=50, threads=1, device="cpu")
    if mode == "gsea":
        run = lambda **extra: permenrich.gsea(expr, labels, sets, case="A", control="B", **kwargs, **extra)  # noqa: E731
    elif mode == "genes":
        run = lambda **extra: permenrich.genes(expr, labels, case="A", control="B", **kwargs, **extra)  # noqa: E731
    elif mode == "ora":
        run = lambda **extra: permenrich.ora(None, sets, expr=expr, phenotype=labels, case="A", control="B",  # noqa: E731
                                             metric="student_t", top=30, **kwargs, **extra)
    elif mode.startswith("meta"):
        other, other_labels, _ = _cohort(n_case=8, n_control=9, seed=5)
        studies = [{"expr": expr, "phenotype": labels, "case": "A", "control": "B"},
                   {"expr": other, "phenotype": other_labels, "case": "A", "control": "B"}]
        more = {"meta": {}, "meta_gsea": {"gene_sets": sets, "mode": "gsea", "leave_one_out": True},
                "meta_ora": {"gene_sets": sets, "mode": "ora", "top": 30}}[mode]
        run = lambda **extra: permenrich.meta(studies, method="random", **more, **kwargs, **extra)  # noqa: E731
    else:
        scores = pd.Series(np.random.default_rng(3).normal(size=300), index=expr.index)
        run = lambda **extra: permenrich.prerank(scores, sets, **kwargs, **extra)  # noqa: E731
    local = run()
    on_cluster = run(client=client)
    _check_ranges(on_cluster, client)
    assert _tsv(on_cluster) == _tsv(local)


def test_a_partly_cached_null_on_two_workers_equals_the_local_run(client):
    """200 sets: what 1 MB leaves beside the matrix and a batch keeps 289 of the 2,000
    first-pass permutations; the ranges within that are replayed for the second pass and
    only the others sent out again."""
    expr, labels, _ = _cohort()
    rng = np.random.default_rng(7)
    sets = {f"R{j}": list(rng.choice(expr.index, size=int(k), replace=False))
            for j, k in enumerate(rng.integers(15, 60, size=200))}
    kwargs = dict(case="A", control="B", permutations=2000, seed=11, batch_size=50, threads=1, device="cpu",
                  memory="1MB")
    local = permenrich.gsea(expr, labels, sets, **kwargs)
    on_cluster = permenrich.gsea(expr, labels, sets, client=client, **kwargs)
    assert "up to 289 permutations" in local.attrs["run"]["null_storage"]
    assert local.attrs["run"]["memory_plan"]["null_cache_bytes"] == 289 * 8 * 200
    size = on_cluster.attrs["run"]["timings"]["dask"]["range_size"]
    kept = 289 // size * size
    assert 0 < kept < 2000 and on_cluster.attrs["run"]["timings"]["permutations_scored"] == 4000 - kept
    assert _tsv(on_cluster) == _tsv(local)


def test_workers_read_file_inputs_themselves(client, tmp_path):
    expr, labels, sets = _cohort(n_genes=120)
    gct = tmp_path / "expr.gct"
    gct.write_text("#1.2\n120\t22\nNAME\tDescription\t" + "\t".join(expr.columns) + "\n" + "".join(
        f"{gene}\tna\t" + "\t".join(map(repr, row.tolist())) + "\n" for gene, row in zip(expr.index, expr.to_numpy())))
    cls = tmp_path / "pheno.cls"
    cls.write_text("22 2 1\n# A B\n" + " ".join(labels) + "\n")
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("".join(f"{name}\tna\t" + "\t".join(g for g in genes if int(g[1:]) < 120) + "\n"
                           for name, genes in sets.items()))
    kwargs = dict(permutations=1000, seed=2, batch_size=40, threads=1, device="cpu", min_size=5)
    local = permenrich.gsea(gct, cls, gmt, **kwargs)
    on_cluster = permenrich.gsea(gct, cls, gmt, client=client, **kwargs)
    assert _tsv(on_cluster) == _tsv(local)


def test_a_worker_killed_mid_run_changes_nothing(client):
    """The first completed range kills one worker process (SIGKILL): its ranges in
    flight or queued are computed again on the other worker or on its replacement."""
    expr, labels, _ = _cohort(n_genes=2000, n_case=20, n_control=20)
    kwargs = dict(case="A", control="B", permutations=20_000, seed=5, batch_size=250, threads=1, device="cpu")
    local = permenrich.genes(expr, labels, **kwargs)
    victim = next(iter(client.run(os.getpid).values()))
    killed = []

    def kill_once(done: int, total: int) -> None:
        if not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(done)

    on_cluster = permenrich.genes(expr, labels, client=client, progress=kill_once, **kwargs)
    assert killed and killed[0] < 20_000  # killed while ranges were left
    assert _tsv(on_cluster) == _tsv(local)
    client.wait_for_workers(2, timeout=120)


def test_every_worker_killed_at_once_changes_nothing(client):
    """Both worker processes killed after the first range (their nannies start new ones):
    the options scattered to them are lost with them, which Dask cannot recompute; the
    run sends them again and resubmits what was left, with the same table."""
    expr, labels, _ = _cohort(n_genes=2000, n_case=20, n_control=20)
    kwargs = dict(case="A", control="B", permutations=20_000, seed=6, batch_size=250, threads=1, device="cpu")
    local = permenrich.genes(expr, labels, **kwargs)
    victims = list(client.run(os.getpid).values())
    killed = []

    def kill_all_once(done: int, total: int) -> None:
        if not killed:
            for victim in victims:
                os.kill(victim, signal.SIGKILL)
            killed.append(done)

    on_cluster = permenrich.genes(expr, labels, client=client, progress=kill_all_once, **kwargs)
    assert killed and killed[0] < 20_000
    assert _tsv(on_cluster) == _tsv(local)
    client.wait_for_workers(2, timeout=120)


def _genes_options(expr: pd.DataFrame, labels: list, **changed) -> dict:
    """prepare_genes' options for a plain welch_t run of ``expr`` (classes A and B)."""
    return {**dict(expr=expr, phenotype=labels, groupby=None, case="A", control="B", phenotype_column=None,
                strata=None, pairs=None, covariates=None, metric="welch_t", alternative="two-sided",
                permutations=200, seed=0, collapse="mean", chip=None, nan_policy="error", zero_variance="drop",
                normalize="none", pseudobulk=None, pseudobulk_method="sum", batch_size=50, memory="1GB", threads=1,
                device="cpu"), **changed}


def _prepare_that_fails_on_workers(options: dict) -> runner.Prepared:
    try:
        distributed.get_worker()
    except ValueError:  # the client: prepare as usual
        return prepare_genes(options)
    raise InputError("expr.gct: line 7, column 3: expected a number, found 'n/a'; use an empty field or NA")


def _prepare_that_kills_its_worker(options: dict) -> runner.Prepared:
    try:
        distributed.get_worker()
    except ValueError:  # the client: prepare as usual
        return prepare_genes(options)
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would


def test_workers_that_keep_dying_end_the_run_in_one_line(client):
    """A range whose every attempt kills its worker (out of memory, say) ends the run with
    one ClusterError, not a traceback: on two workers both die with the options scattered
    to them (sent again up to MAX_RESENDS times); on a larger cluster Dask's allowed
    failures end it first (KilledWorker)."""
    from permenrich.errors import ClusterError

    expr, labels, _ = _cohort(n_genes=100)
    options = _genes_options(expr, labels, batch_size=200)
    try:
        with pytest.raises(ClusterError, match=r"^(the Dask workers holding this run's options were lost \d+ times|"
                                               r"Dask workers died (once|\d+ times|repeatedly) while running one range of "
                                               r"this run's permutations) \(.*out of memory.*no output was written$"):
            runner.run(_prepare_that_kills_its_worker, options, client=client)
    finally:
        client.wait_for_workers(2, timeout=120)


def test_killed_worker_is_one_line():
    """Dask gives up on a range after its allowed failures (here none): KilledWorker
    becomes the run's one-line ClusterError."""
    import dask

    from permenrich.errors import ClusterError

    expr, labels, _ = _cohort(n_genes=100)
    options = _genes_options(expr, labels, batch_size=200)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as one:
            with pytest.raises(ClusterError, match=r"^Dask workers died once while running one range of this "
                                                   r"run's permutations \(out of memory\?"):
                runner.run(_prepare_that_kills_its_worker, options, client=one)


def test_an_input_error_on_a_worker_is_the_same_one_line_error(client):
    expr, labels, _ = _cohort(n_genes=100)
    options = _genes_options(expr, labels, batch_size=50)
    with pytest.raises(InputError, match=r"^expr.gct: line 7, column 3: expected a number, found 'n/a'"):
        runner.run(_prepare_that_fails_on_workers, options, client=client)


def test_cli_scheduler_option_writes_the_local_table(client, tmp_path):
    expr, labels, _ = _cohort(n_genes=80 + 20)
    gct = tmp_path / "expr.gct"
    gct.write_text("#1.2\n100\t22\nNAME\tDescription\t" + "\t".join(expr.columns) + "\n" + "".join(
        f"{gene}\tna\t" + "\t".join(map(repr, row.tolist())) + "\n" for gene, row in zip(expr.index, expr.to_numpy())))
    cls = tmp_path / "pheno.cls"
    cls.write_text("22 2 1\n# A B\n" + " ".join(labels) + "\n")
    common = ["genes", "--expr", str(gct), "--cls", str(cls), "--permutations", "800", "--batch-size", "40",
              "--threads", "1", "--device", "cpu", "--quiet"]
    assert permenrich.cli.main(common + ["--out", str(tmp_path / "local")]) == 0
    address = client.scheduler.address
    assert permenrich.cli.main(common + ["--out", str(tmp_path / "cluster"), "--scheduler", address]) == 0
    assert (tmp_path / "cluster" / "results.tsv").read_bytes() == (tmp_path / "local" / "results.tsv").read_bytes()


def test_range_sizes_take_seconds_not_milliseconds():
    assert runner.range_size(1_000_000, 500, threads=200) == 1250  # 4 ranges per thread
    assert runner.range_size(10_000, 500, threads=64) == 500  # never less than one batch


def _permenrich_handlers() -> list[str]:
    return [type(handler).__name__ for handler in logging.getLogger("permenrich").handlers]


def test_worker_processes_do_not_print_the_inputs_warnings_again(client, caplog):
    """The client says the inputs' warnings (and records them in run.json); a worker
    process of its own would print each again through Python's last-resort handler."""
    expr, labels, _ = _cohort(n_genes=100)
    expr.iloc[3] = 1.0  # a constant gene: dropped with a warning
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        table = permenrich.genes(expr, labels, case="A", control="B", permutations=200, seed=1, batch_size=50,
                                 zero_variance="drop", threads=1, device="cpu", client=client)
    assert sum("constant" in r.getMessage() for r in caplog.records) == 1
    assert any("constant" in w for w in table.attrs["run"]["warnings"])
    assert all(handlers == ["NullHandler"] for handlers in client.run(_permenrich_handlers).values())
    assert "NullHandler" not in _permenrich_handlers()  # not in the client's own process
