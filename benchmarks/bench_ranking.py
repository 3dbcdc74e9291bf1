"""Ranking cost on statistics with many exact and near ties, against NumPy's sorts.

The CPU ranking radix-sorts the high 33 bits of each statistic and finishes runs of
equal high bits exactly; sparse single-cell pseudobulk data give thousands of such
near-tied statistics. Each row times one ranking of n statistics (median of repeats,
after a warm-up call that loads the compiled kernel) beside NumPy's stable lexsort
(the tie rule's reference) and argsort.

    python benchmarks/bench_ranking.py [--n 20000] [--repeats 9] [--out FILE]

Run it from a checkout of another commit (PYTHONPATH=that/src) to compare versions.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, git_commit, publish  # noqa: E402

from permenrich import __version__  # noqa: E402
from permenrich.stats.ranking import rank_genes, ranking_reference  # noqa: E402


def workloads(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    near = 1.0 + rng.random(n) * 1e-9
    zeros_and_near = np.concatenate([np.zeros(n // 2), 0.5 + rng.random(n - n // 2) * 1e-10])
    rng.shuffle(zeros_and_near)
    return {
        "normal (no ties)": rng.normal(size=n),
        "exact ties (20 values)": np.repeat(rng.normal(size=20), n // 20),
        "near ties, random order": near,
        "near ties, ascending (worst case)": np.sort(near),
        "half zeros, half near ties (sparse pseudobulk)": zeros_and_near,
    }


def median_seconds(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name, stat in workloads(args.n, rng).items():
        assert np.array_equal(rank_genes(stat), ranking_reference(stat)), name
        ours = median_seconds(lambda: rank_genes(stat), args.repeats)
        lexsort = median_seconds(lambda: ranking_reference(stat), args.repeats)
        argsort = median_seconds(lambda: np.argsort(-stat, kind="stable"), args.repeats)
        rows.append(f"| {name} | {1e3 * ours:.3f} | {1e3 * lexsort:.3f} | {1e3 * argsort:.3f} | "
                    f"{lexsort / ours:.2f} |")
    commit = git_commit()
    report = "\n".join([
        f"# Ranking with ties, CPU, {datetime.date.today().isoformat()}",
        "",
        f"{cpu_model()}; Python {sys.version.split()[0]}, NumPy {np.__version__}, permenrich {__version__} "
        f"(commit {commit}); n = {args.n:,} statistics, median of {args.repeats} runs, one thread.",
        "",
        "| statistics | permenrich rank_genes (ms) | np.lexsort (ms) | np.argsort stable (ms) | lexsort / ours |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
    ])
    return publish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
