"""Preranked GSEA side by side with fgsea's fgseaSimple (R), CPU, one thread each.

The ranking is the leukemia signal-to-noise statistic (../shared/data: GCT + CHIP + CLS,
computed once by permenrich) and the sets are MSigDB Hallmark + KEGG, sizes 15-500. Each
tool runs in a fresh process at 1,000 and 10,000 permutations, alternating, for
``--rounds`` rounds; the marginal cost per permutation is
(t(10,000) - t(1,000)) / 9,000, so that start-up and reading drop out, in CPU time
(process user + system) and wall time. The whole-run time at 1,000 permutations
(``permenrich prerank`` command vs ``Rscript`` with fgsea) is reported beside.

fgsea: R from Debian (r-base-core, r-cran-rcpp, r-cran-data.table, r-bioc-biocparallel,
r-cran-fastmatch, r-cran-ggplot2, r-cran-cowplot, r-cran-bh) and fgsea's source
(``R CMD INSTALL``), as benchmarks/README.md says.

    python benchmarks/bench_fgsea.py [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, git_commit, publish, whole_run  # noqa: E402

PERMENRICH_RUN = """
import json, resource, sys, time
t0 = time.perf_counter(); c0 = resource.getrusage(resource.RUSAGE_SELF)
import permenrich
table = permenrich.prerank(sys.argv[1], sys.argv[2:4], permutations=int(sys.argv[4]), seed=0, threads=1, device="cpu")
c1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime,
                  "n_sets": len(table)}))
"""

#: Reads the RNK and the two GMTs of the command line, seeds R, starts the clock.
R_PREAMBLE = """
suppressMessages({library(fgsea); library(data.table); library(BiocParallel)})
args <- commandArgs(trailingOnly = TRUE)
rnk <- read.table(args[1], header = FALSE, sep = "\\t", quote = "", stringsAsFactors = FALSE)
stats <- setNames(rnk$V2, rnk$V1)
pathways <- c(gmtPathways(args[2]), gmtPathways(args[3]))
set.seed(0)
t0 <- proc.time()
"""

PERMENRICH_MULTILEVEL = """
import json, resource, sys, time
from permenrich import prerank  # the package's modules load here, before the clock, as R's library() calls do
t0 = time.perf_counter(); c0 = resource.getrusage(resource.RUSAGE_SELF)
table = prerank(sys.argv[1], sys.argv[2:4], permutations=1000, seed=0, threads=int(sys.argv[4]),
                           device="cpu", p_method="multilevel", eps=0.0)
c1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime,
                  "min_p": float(table.pval.min()), "median_log2err": float(table.log2err.median())}))
"""

FGSEA_MULTILEVEL = R_PREAMBLE + """workers <- as.integer(args[4])
res <- suppressWarnings(fgsea(pathways, stats, minSize = 15, maxSize = 500, eps = 0, nPermSimple = 1000,
                              BPPARAM = if (workers == 1) SerialParam() else MulticoreParam(workers)))
t1 <- proc.time() - t0
cat(sprintf('{"wall": %f, "cpu": %f, "min_p": %.17g, "median_log2err": %f}\\n', t1[["elapsed"]],
            t1[["user.self"]] + t1[["sys.self"]], min(res$pval), median(res$log2err, na.rm = TRUE)))
"""

FGSEA_RUN = R_PREAMBLE + """res <- fgseaSimple(pathways, stats, nperm = as.integer(args[4]), minSize = 15, maxSize = 500,
                   BPPARAM = SerialParam())
t1 <- proc.time() - t0
cat(sprintf('{"wall": %f, "cpu": %f, "n_sets": %d}\\n', t1[["elapsed"]], t1[["user.self"]] + t1[["sys.self"]],
            nrow(res)))
"""


def _ranking(data: Path, folder: Path) -> Path:
    """The leukemia signal-to-noise ranking, written as an RNK file."""
    import permenrich

    base = data / "leukemia"
    genes = permenrich.genes(base / "Leukemia_hgu95av2.gct", base / "Leukemia.cls",
                             chip=base / "Human_AFFY_HG_U95_MSigDB_7_0_final.chip", metric="signal_to_noise",
                             permutations=10, device="cpu")
    path = folder / "leukemia_s2n.rnk"
    path.write_text("".join(f"{gene}\t{score!r}\n" for gene, score in zip(genes.gene, genes.statistic)))
    return path


# A one-thread run: Numba's pool sized to it (as `permenrich --threads 1` does), so that
# no idle pool thread spins and burns CPU time.
ONE_THREAD = {**os.environ, "NUMBA_NUM_THREADS": "1"}


#: Two threads (the multilevel rows that compare the tools' parallel runs).
TWO_THREADS = {**os.environ, "NUMBA_NUM_THREADS": "2"}


def _run(command: list[str], env: dict | None = None) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env or ONE_THREAD)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_fgsea_"))
    rnk = _ranking(args.data_dir, folder)
    gmts = [str(args.data_dir / "genesets" / "h.all.v7.0.symbols.gmt"),
            str(args.data_dir / "genesets" / "c2.cp.kegg.v7.5.1.symbols.gmt")]
    tools = {
        "permenrich prerank": lambda n: [sys.executable, "-c", PERMENRICH_RUN, str(rnk), *gmts, str(n)],
        "fgsea fgseaSimple": lambda n: ["Rscript", "-e", FGSEA_RUN, str(rnk), *gmts, str(n)],
    }
    whole = {
        "permenrich prerank": [sys.executable, "-m", "permenrich.cli", "prerank", "--rnk", str(rnk), "--gene-sets",
                               *gmts, "--permutations", "1000", "--threads", "1", "--device", "cpu", "--quiet",
                               "--out", str(folder / "out")],
        "fgsea fgseaSimple": ["Rscript", "-e", FGSEA_RUN, str(rnk), *gmts, "1000"],
    }
    for name in tools:  # warm-up: Numba's cache, R's package load
        _run(tools[name](100))
    runs: dict[str, dict[int, list[dict]]] = {name: {1000: [], 10000: []} for name in tools}
    whole_runs: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
    for _ in range(args.rounds):
        for name, command in tools.items():
            for n in (1000, 10000):
                runs[name][n].append(_run(command(n)))
            whole_runs[name].append(whole_run(whole[name]))
    multilevel = {  # name: (command, environment)
        "permenrich prerank, multilevel": ([sys.executable, "-c", PERMENRICH_MULTILEVEL, str(rnk), *gmts, "1"],
                                           ONE_THREAD),
        "fgsea fgseaMultilevel": (["Rscript", "-e", FGSEA_MULTILEVEL, str(rnk), *gmts, "1"], ONE_THREAD),
        "permenrich prerank, multilevel, 2 threads": ([sys.executable, "-c", PERMENRICH_MULTILEVEL, str(rnk), *gmts,
                                                       "2"], TWO_THREADS),
        "fgsea fgseaMultilevel, 2 workers (MulticoreParam)": (["Rscript", "-e", FGSEA_MULTILEVEL, str(rnk), *gmts,
                                                               "2"], TWO_THREADS),
    }
    multilevel_runs: dict[str, list[dict]] = {name: [] for name in multilevel}
    for _ in range(args.rounds):
        for name, (command, env) in multilevel.items():
            started = time.perf_counter()
            result = _run(command, env)
            multilevel_runs[name].append({**result, "process": time.perf_counter() - started})
    multilevel_rows = []
    for name, results in multilevel_runs.items():
        walls_ml = [r["wall"] for r in results]
        process = [r["process"] for r in results]
        multilevel_rows.append(f"| {name} | {statistics.median(walls_ml):.2f} ({min(walls_ml):.2f}-{max(walls_ml):.2f}) | "
                               f"{statistics.median(r['cpu'] for r in results):.2f} | "
                               f"{statistics.median(process):.2f} | {results[0]['min_p']:.3g} | "
                               f"{results[0]['median_log2err']:.2f} |")
    def ml_ratio_of(ours: str, theirs: str) -> float:
        return (statistics.median(r["wall"] for r in multilevel_runs[ours])
                / statistics.median(r["wall"] for r in multilevel_runs[theirs]))

    ml_ratio = ml_ratio_of("permenrich prerank, multilevel", "fgsea fgseaMultilevel")
    ml_ratio_two = ml_ratio_of("permenrich prerank, multilevel, 2 threads",
                               "fgsea fgseaMultilevel, 2 workers (MulticoreParam)")
    marginal = {}
    rows = []
    for name in tools:
        per = {kind: [(big[kind] - small[kind]) / 9000 * 1000 for small, big in zip(runs[name][1000], runs[name][10000])]
               for kind in ("cpu", "wall")}
        marginal[name] = {kind: statistics.median(values) for kind, values in per.items()}
        whole_wall = [w for w, _ in whole_runs[name]]
        whole_cpu = [c for _, c in whole_runs[name]]
        rows.append(f"| {name} | {runs[name][1000][0]['n_sets']} | {marginal[name]['cpu']:.4f} "
                    f"({min(per['cpu']):.4f}-{max(per['cpu']):.4f}) | {marginal[name]['wall']:.4f} | "
                    f"{statistics.median(whole_wall):.2f} ({min(whole_wall):.2f}-{max(whole_wall):.2f}) | "
                    f"{statistics.median(whole_cpu):.2f} |")
    ours, peer = marginal["permenrich prerank"], marginal["fgsea fgseaSimple"]
    whole_ratio = statistics.median(w for w, _ in whole_runs["fgsea fgseaSimple"]) / statistics.median(
        w for w, _ in whole_runs["permenrich prerank"])
    r_version = subprocess.run(["Rscript", "-e", "cat(R.version.string, as.character(packageVersion('fgsea')))"],
                               capture_output=True, text=True).stdout.strip()
    commit = git_commit()
    import numpy as np

    import permenrich

    report = "\n".join([
        f"# Preranked GSEA vs fgsea, CPU, {datetime.date.today().isoformat()}",
        "",
        f"{cpu_model()}; Python {sys.version.split()[0]}, NumPy {np.__version__}, permenrich {permenrich.__version__} "
        f"(commit {commit}); {r_version} (fgsea). Leukemia signal-to-noise ranking (9,033 genes), Hallmark + KEGG "
        f"sets of 15-500 genes, one thread each (permenrich with NUMBA_NUM_THREADS=1, as `--threads 1` sets), "
        f"{args.rounds} rounds alternating, fresh processes.",
        "",
        "| tool | sets | ms / permutation, CPU (min-max) | ms / permutation, wall | whole run at 1,000 "
        "permutations, wall s (min-max) | whole run, CPU s |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"* per permutation, CPU time: fgseaSimple / permenrich = **{peer['cpu'] / ours['cpu']:.1f}x** (target >= 2)",
        f"* whole run at 1,000 permutations, wall: fgseaSimple / permenrich = **{whole_ratio:.2f}x**",
        "",
        "Multilevel p-values (1,000 permutations for NES and P(sign), eps = 0; the sets' p-values go as low as "
        "the data make them):",
        "",
        "| tool | the call, wall s (min-max) | the call, CPU s | whole process, wall s | smallest p | "
        "median log2err |",
        "| --- | --- | --- | --- | --- | --- |",
        *multilevel_rows,
        "",
        f"* permenrich multilevel wall / fgseaMultilevel wall, the call = **{ml_ratio:.2f}** (target <= 2). The "
        "call: `permenrich.prerank(...)`, reading the RNK and GMT files included, against `fgsea(...)` after R "
        "has loaded its packages and read the files; the whole process adds Python's or R's start-up and imports",
        f"* the same with two threads (permenrich's rulers of different sizes on two threads; fgsea's "
        f"MulticoreParam(2) over set sizes): **{ml_ratio_two:.2f}**",
        "* the two tools draw different random sets (each its own generator), so their p-values agree within "
        "Monte Carlo error, not exactly; ES is the same statistic (fgsea replaces a score of exactly 0 by a tiny "
        "value, permenrich does not)",
        "",
    ])
    return publish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
