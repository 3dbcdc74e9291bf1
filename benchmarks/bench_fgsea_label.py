"""Phenotype-permutation GSEA side by side with fgsea's fgseaLabel (R), CPU.

fgseaLabel ranks genes by their Pearson correlation with the (scaled) label, so both
tools get the same statistic: permenrich's ``pearson`` metric on the 0/1 class label.
Data: leukemia (../shared/data, probes mapped with the CHIP and collapsed by mean,
9,033 genes x 48 samples) with Hallmark + KEGG (sets of 15-500 genes); optionally the
cudaGSEA workload's shape (``--cudagsea``: 20,639 simulated genes x 200 samples, 183 vs
17, 4,725 random sets of 15-500 genes). Each tool runs in fresh processes at two
permutation counts, alternating; the marginal cost per permutation drops start-up out.
Same threads for both (``--threads``): fgsea's BiocParallel workers, permenrich's Numba
pool (NUMBA_NUM_THREADS, as ``--threads`` sets).

    python benchmarks/bench_fgsea_label.py [--rounds 3] [--threads 1] [--cudagsea] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, git_commit, marginal_costs, publish, whole_run  # noqa: E402

PERMENRICH_RUN = """
import json, resource, sys, time
import numpy as np, pandas as pd
t0 = time.perf_counter(); c0 = resource.getrusage(resource.RUSAGE_SELF)
import permenrich
matrix = pd.read_csv(sys.argv[1], sep="\\t", index_col=0)
labels = pd.read_csv(sys.argv[2], sep="\\t", index_col=0)
table = permenrich.gsea(matrix, labels, sys.argv[3:-2], metric="pearson", phenotype_column="label",
                        permutations=int(sys.argv[-2]), seed=0, threads=int(sys.argv[-1]), device="cpu")
c1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime,
                  "n_sets": len(table)}))
"""

FGSEA_RUN = """
suppressMessages({library(fgsea); library(data.table); library(BiocParallel)})
args <- commandArgs(trailingOnly = TRUE)
n <- length(args)
mat <- as.matrix(read.table(args[1], header = TRUE, sep = "\\t", row.names = 1, check.names = FALSE))
labels <- read.table(args[2], header = TRUE, sep = "\\t", row.names = 1)$label
pathways <- do.call(c, lapply(args[3:(n - 2)], gmtPathways))
threads <- as.integer(args[n])
bp <- if (threads > 1) MulticoreParam(workers = threads) else SerialParam()
set.seed(0)
t0 <- proc.time()
res <- fgseaLabel(pathways, mat, labels, nperm = as.integer(args[n - 1]), minSize = 15, maxSize = 500, BPPARAM = bp)
t1 <- proc.time() - t0
cat(sprintf('{"wall": %f, "cpu": %f, "n_sets": %d}\\n', t1[["elapsed"]],
            t1[["user.self"]] + t1[["sys.self"]] + t1[["user.child"]] + t1[["sys.child"]], nrow(res)))
"""


# The whole run as a user meets it: the same script, then the table written to a file.
FGSEA_WHOLE = FGSEA_RUN + 'fwrite(res, file = Sys.getenv("BENCH_OUT"), sep = "\\t", sep2 = c("", " ", ""))\n'
WHOLE_RUN_PERMUTATIONS = 1000


def _whole_runs(matrix: Path, labels: Path, gmts: list[str], folder: Path, threads: int, rounds: int,
                environment: dict) -> dict[str, list[tuple[float, float]]]:
    """Wall and CPU seconds of whole runs at 1,000 permutations (fresh processes, start-up,
    reading and writing included), alternating: permenrich's command line against an R
    script running fgseaLabel and writing its table."""
    commands = {
        "permenrich gsea, pearson": [sys.executable, "-m", "permenrich.cli", "gsea", "--expr", str(matrix),
                                     "--sample-sheet", str(labels), "--phenotype-column", "label", "--metric",
                                     "pearson", "--gene-sets", *gmts, "--permutations", str(WHOLE_RUN_PERMUTATIONS),
                                     "--threads", str(threads), "--device", "cpu", "--quiet", "--out",
                                     str(folder / "permenrich_out")],
        "fgsea fgseaLabel": ["Rscript", "-e", FGSEA_WHOLE, str(matrix), str(labels), *gmts,
                             str(WHOLE_RUN_PERMUTATIONS), str(threads)],
    }
    environment = {**environment, "BENCH_OUT": str(folder / "fgsea_out.tsv")}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            runs[name].append(whole_run(command, environment))
    return runs


def _leukemia(data: Path, folder: Path) -> tuple[Path, Path, list[str]]:
    import pandas as pd

    from permenrich.io import apply_chip, read_expression
    from permenrich.io.phenotype import read_cls

    base = data / "leukemia"
    expression = apply_chip(read_expression(base / "Leukemia_hgu95av2.gct"),
                            base / "Human_AFFY_HG_U95_MSigDB_7_0_final.chip", method="mean")
    matrix = pd.DataFrame(expression.values, index=expression.gene_ids, columns=expression.sample_ids)
    class_names, classes = read_cls(base / "Leukemia.cls")
    labels = pd.DataFrame({"label": [1.0 if c == class_names[0] else 0.0 for c in classes]}, index=matrix.columns)
    return _write(folder, matrix, labels), [str(data / "genesets" / "h.all.v7.0.symbols.gmt"),
                                            str(data / "genesets" / "c2.cp.kegg.v7.5.1.symbols.gmt")]


def _cudagsea(folder: Path) -> tuple[tuple[Path, Path], list[str]]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n_genes, n_case, n_control = 20_639, 183, 17
    genes = np.array([f"G{i}" for i in range(n_genes)])
    matrix = pd.DataFrame(rng.normal(size=(n_genes, n_case + n_control)), index=genes,
                          columns=[f"S{j}" for j in range(n_case + n_control)])
    labels = pd.DataFrame({"label": [1.0] * n_case + [0.0] * n_control}, index=matrix.columns)
    gmt = folder / "cudagsea_sets.gmt"
    gmt.write_text("".join(f"SET{i}\tna\t" + "\t".join(rng.choice(genes, int(k), replace=False)) + "\n"
                           for i, k in enumerate(rng.integers(15, 501, size=4725))))
    return _write(folder, matrix, labels), [str(gmt)]


def _write(folder: Path, matrix, labels) -> tuple[Path, Path]:  # noqa: ANN001
    matrix_path, labels_path = folder / "matrix.tsv", folder / "labels.tsv"
    matrix.to_csv(matrix_path, sep="\t", float_format="%.17g")
    labels.to_csv(labels_path, sep="\t")
    return matrix_path, labels_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cudagsea", action="store_true", help="the cudaGSEA workload's shape instead of leukemia")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_fgsea_label_"))
    if args.cudagsea:
        (matrix, labels), gmts = _cudagsea(folder)
        counts, workload = (50, 250), "cudaGSEA shape (20,639 genes x 200 samples, 183 vs 17, 4,725 sets)"
    else:
        (matrix, labels), gmts = _leukemia(args.data_dir, folder)
        counts, workload = (500, 2500), "leukemia (9,033 genes x 48 samples, Hallmark + KEGG)"
    environment = {**os.environ, "NUMBA_NUM_THREADS": str(args.threads)}
    tools = {
        "permenrich gsea, pearson": lambda n: [sys.executable, "-c", PERMENRICH_RUN, str(matrix), str(labels), *gmts,
                                               str(n), str(args.threads)],
        "fgsea fgseaLabel": lambda n: ["Rscript", "-e", FGSEA_RUN, str(matrix), str(labels), *gmts, str(n),
                                       str(args.threads)],
    }

    marginal, first = marginal_costs(tools, counts, args.rounds, environment)
    whole = None if args.cudagsea else _whole_runs(matrix, labels, gmts, folder, args.threads, args.rounds,
                                                   environment)
    small, big = counts
    rows = [f"| {name} | {first[name]['n_sets']} | {m['cpu']:.3f} ({m['cpu_range'][0]:.3f}-{m['cpu_range'][1]:.3f}) "
            f"| {m['wall']:.3f} |" for name, m in marginal.items()]
    ours, peer = marginal["permenrich gsea, pearson"], marginal["fgsea fgseaLabel"]
    commit = git_commit()
    r_version = subprocess.run(["Rscript", "-e", "cat(R.version.string, as.character(packageVersion('fgsea')))"],
                               capture_output=True, text=True).stdout.strip()
    report = "\n".join([
        f"# Phenotype GSEA vs fgseaLabel, {workload}, CPU, {datetime.date.today().isoformat()}",
        "",
        f"{cpu_model()}; Python {sys.version.split()[0]}, permenrich (commit {commit}); {r_version} (fgsea). "
        f"Pearson correlation with the 0/1 label (fgseaLabel's statistic), {args.threads} thread(s) each, "
        f"{args.rounds} rounds alternating, fresh processes; marginal cost between {small:,} and {big:,} "
        "permutations.",
        "",
        "| tool | sets | ms / permutation, CPU (min-max) | ms / permutation, wall |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        f"* per permutation, CPU time: fgseaLabel / permenrich = **{peer['cpu'] / ours['cpu']:.1f}x**; wall: "
        f"**{peer['wall'] / ours['wall']:.1f}x**",
        "",
    ])
    if whole is not None:
        import statistics

        def cell(values: list[float]) -> str:
            return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

        walls = {name: [w for w, _ in runs] for name, runs in whole.items()}
        report += "\n".join([
            "",
            f"Whole runs at {WHOLE_RUN_PERMUTATIONS:,} permutations, fresh processes (start-up, reading the TSV "
            "files and the GMTs, the run, writing the table): permenrich's command line (`permenrich gsea ... "
            "--metric pearson`, results.tsv + run.json) and Rscript running the script above plus `fwrite`.",
            "",
            "| tool | wall s (min-max) | CPU s (min-max) |",
            "| --- | --- | --- |",
            *[f"| {name} | {cell(walls[name])} | {cell([c for _, c in runs])} |" for name, runs in whole.items()],
            "",
            f"* whole run, wall: fgseaLabel / permenrich = "
            f"**{statistics.median(walls['fgsea fgseaLabel']) / statistics.median(walls['permenrich gsea, pearson']):.2f}x**",
            "",
        ])
    return publish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
