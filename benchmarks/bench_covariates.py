"""Covariate-adjusted per-gene tests (Freedman–Lane) against the same run without
covariates, CPU.

20,000 simulated genes x 200 samples (100 vs 100), 3 covariates (age, sex, BMI), genes
mode with maxT, ``--permutations`` (default 10,000), alternating runs in one process
after a warm-up; reports permutations per second and the slowdown (goal: at most 2x).

    python benchmarks/bench_covariates.py [--permutations 10000] [--rounds 2] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, git_commit, publish  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import numpy as np
    import pandas as pd

    import permenrich

    rng = np.random.default_rng(0)
    n_genes, n = 20_000, 200
    expr = pd.DataFrame(rng.normal(size=(n_genes, n)), index=[f"g{i}" for i in range(n_genes)],
                        columns=[f"s{j}" for j in range(n)])
    sheet = pd.DataFrame({"group": ["a"] * 100 + ["b"] * 100, "age": rng.normal(50, 10, n),
                          "sex": rng.choice(["F", "M"], n), "bmi": rng.normal(25, 3, n)}, index=expr.columns)
    common = dict(groupby="group", case="a", control="b", metric="student_t", seed=0, device="cpu",
                  threads=args.threads)
    setups = {"student_t": {}, "student_t + age, sex, BMI (Freedman-Lane)": {"covariates": ["age", "sex", "bmi"]}}
    for extra in setups.values():
        permenrich.genes(expr, sheet, permutations=128, **common, **extra)
    walls: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(args.rounds):
        for name, extra in setups.items():
            started = time.perf_counter()
            permenrich.genes(expr, sheet, permutations=args.permutations, **common, **extra)
            walls[name].append(time.perf_counter() - started)
    rows, rates = [], {}
    for name, values in walls.items():
        rates[name] = args.permutations / statistics.median(values)
        rows.append(f"| {name} | {statistics.median(values):.1f} | {rates[name]:,.0f} |")
    plain, adjusted = rates.values()
    commit = git_commit()
    report = "\n".join([
        f"# Covariates (Freedman-Lane) vs none, genes mode with maxT, CPU, {datetime.date.today().isoformat()}",
        "",
        f"{cpu_model()}; Python {sys.version.split()[0]}, NumPy {np.__version__}, permenrich {permenrich.__version__} "
        f"(commit {commit}); 20,000 genes x 200 samples (100 vs 100), {args.permutations:,} permutations, "
        f"{args.threads} threads, {args.rounds} rounds alternating (median).",
        "",
        "| statistic | wall (s) | permutations / s |",
        "| --- | --- | --- |",
        *rows,
        "",
        f"* slowdown with 3 covariates: **{plain / adjusted:.2f}x** (goal <= 2)",
        "",
    ])
    return publish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
