"""CPU set scoring alone, per permutation: running sum (weights 1 and 1.5), mean, maxmean.

Scores a batch of 256 random gene-statistic vectors with ``CpuBackend.set_scores`` (one
thread, best of 5 after a warm-up) on the cudaGSEA shape (20,639 genes, 4,725 sets of
15-500 genes: the walk scorer) and a leukemia-like shape (9,033 genes, 205 sets: the
bitmap scorer). To compare commits side by side, run it once per checkout in the same
session, e.g. with a worktree of the older commit::

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old/src python benchmarks/bench_set_scoring.py --label old
    python benchmarks/bench_set_scoring.py --label new --out benchmarks/results/set_scoring_cpu_<date>.md

``--out`` appends a table to the file, so both runs land in one report.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
if "PYTHONPATH" not in os.environ:  # an explicit PYTHONPATH picks the checkout to measure
    sys.path.insert(0, str(ROOT / "src"))

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import permenrich  # noqa: E402
from bench_gpu_kernels import workload_sets  # noqa: E402 (the cudaGSEA set sizes)
from permenrich.backends.cpu import CpuBackend  # noqa: E402


def best_seconds(function, repeats: int = 5) -> float:  # noqa: ANN001
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for shape, n_genes, n_sets, cases in (
            ("cudaGSEA", 20_639, 4_725, (("ks", 1.0), ("ks", 1.5), ("mean", 1.0), ("maxmean", 1.0))),
            ("leukemia-like", 9_033, 205, (("ks", 1.0), ("ks", 1.5)))):
        members, offsets = workload_sets(n_genes, n_sets)
        stats = np.random.default_rng(1).normal(size=(args.batch, n_genes))
        for statistic, weight in cases:
            backend = CpuBackend(threads=1)
            backend.prepare_sets(statistic, members, offsets, weight, n_genes)
            seconds = best_seconds(lambda: backend.set_scores(stats))
            rows.append((shape, statistic, weight, seconds / args.batch * 1e3))
            print(rows[-1], flush=True)
    lines = [f"## {args.label} ({Path(permenrich.__file__).parent})", "",
             "| shape | statistic | weight | ms per permutation |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {shape} | {statistic} | {weight} | {ms:.3f} |" for shape, statistic, weight, ms in rows]
    text = "\n".join(lines) + "\n\n"
    if args.out:
        with args.out.open("a") as handle:
            handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
