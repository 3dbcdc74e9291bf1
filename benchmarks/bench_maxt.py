"""Per-gene maxT side by side with multtest's mt.maxT (R/Bioconductor), CPU.

20,000 simulated genes x 200 samples (100 vs 100; 500 genes shifted), Welch's t
(multtest's ``test="t"``), two-sided (``side="abs"``), Westfall–Young maxT adjusted
p-values from random label permutations. Each tool runs in fresh processes at two
permutation counts, alternating; the marginal cost per permutation drops start-up out.
One thread each (multtest is single-threaded; permenrich's Numba pool is set to match).
multtest comes from Debian (``apt-get install r-bioc-multtest``).

    python benchmarks/bench_maxt.py [--rounds 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, git_commit, marginal_costs, publish  # noqa: E402

PERMENRICH_RUN = """
import json, resource, sys, time
t0 = time.perf_counter(); c0 = resource.getrusage(resource.RUSAGE_SELF)
import numpy as np, pandas as pd
import permenrich
matrix = pd.DataFrame(np.load(sys.argv[1]))
matrix.index = [f"G{i}" for i in range(matrix.shape[0])]
labels = ["a"] * (matrix.shape[1] // 2) + ["b"] * (matrix.shape[1] - matrix.shape[1] // 2)
table = permenrich.genes(matrix, labels, case="a", control="b", metric="welch_t", permutations=int(sys.argv[2]),
                         seed=0, threads=1, device="cpu")
c1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime,
                  "n_genes": len(table)}))
"""

MULTTEST_RUN = """
suppressMessages(library(multtest))
args <- commandArgs(trailingOnly = TRUE)
t0 <- proc.time()
x <- as.matrix(read.table(args[1], sep = "\\t"))
labels <- rep(c(0, 1), c(ncol(x) %/% 2, ncol(x) - ncol(x) %/% 2))
set.seed(0)
res <- mt.maxT(x, labels, test = "t", side = "abs", B = as.integer(args[2]))
t1 <- proc.time() - t0
cat(sprintf('{"wall": %f, "cpu": %f, "n_genes": %d}\\n', t1[["elapsed"]],
            t1[["user.self"]] + t1[["sys.self"]], nrow(res)))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_maxt_"))
    rng = np.random.default_rng(0)
    values = rng.normal(size=(args.genes, args.samples))
    values[:500, : args.samples // 2] += 0.5
    np.save(folder / "matrix.npy", values)
    np.savetxt(folder / "matrix.tsv", values, delimiter="\t", fmt="%.17g")
    environment = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    tools = {
        "permenrich genes, welch_t": lambda n: [sys.executable, "-c", PERMENRICH_RUN, str(folder / "matrix.npy"),
                                                 str(n)],
        "multtest mt.maxT": lambda n: ["Rscript", "-e", MULTTEST_RUN, str(folder / "matrix.tsv"), str(n)],
    }
    counts = (200, 2000)  # permenrich needs ~1 ms each: a span that dwarfs start-up noise
    marginal, _ = marginal_costs(tools, counts, args.rounds, environment)
    rows = [f"| {name} | {m['cpu']:.2f} ({m['cpu_range'][0]:.2f}-{m['cpu_range'][1]:.2f}) | {m['wall']:.2f} |"
            for name, m in marginal.items()]
    ours, peer = marginal["permenrich genes, welch_t"], marginal["multtest mt.maxT"]
    r_version = subprocess.run(["Rscript", "-e", "cat(R.version.string, as.character(packageVersion('multtest')))"],
                               capture_output=True, text=True).stdout.strip()
    report = "\n".join([
        f"# Per-gene maxT vs multtest mt.maxT, CPU, {datetime.date.today().isoformat()}",
        "",
        f"{cpu_model()}; Python {sys.version.split()[0]}, permenrich (commit {git_commit()}); {r_version} (multtest). "
        f"{args.genes:,} genes x {args.samples} samples, Welch's t, two-sided maxT, one thread each, "
        f"{args.rounds} rounds alternating, fresh processes; marginal cost between {counts[0]} and {counts[1]} "
        "permutations.",
        "",
        "| tool | ms / permutation, CPU (min-max) | ms / permutation, wall |",
        "| --- | --- | --- |",
        *rows,
        "",
        f"* per permutation, CPU time: multtest / permenrich = **{peer['cpu'] / ours['cpu']:.1f}x**; wall: "
        f"**{peer['wall'] / ours['wall']:.1f}x**",
        "",
    ])
    return publish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
