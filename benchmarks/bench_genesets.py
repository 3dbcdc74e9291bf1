"""Reading and indexing a very large GMT: time and peak memory.

Workload (issue: "a GMT of 1e6 sets took 5.8 min and 6.9 GB"): a synthetic GMT of
1,000,000 sets drawn from a 20,000-gene universe, most of them outside the default size
bounds [15, 500] (80% with 1-14 genes, 10% with 501-600, 10% with 15-200), written to a
temporary folder. Each measured run is a fresh process that imports permenrich and calls
``permenrich._pipeline.load_gene_sets`` (read + index, what every mode does) on it.

``--src`` runs the measurement with another source tree, e.g. an older commit exported
with ``git archive``, to compare before and after on the same file.

Usage::

    python benchmarks/bench_genesets.py [--sets 1000000] [--src OLD/src ...] [--out REPORT]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import publish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def write_gmt(path: Path, n_sets: int, n_universe: int, seed: int = 0, chunk: int = 20_000) -> int:
    """The synthetic GMT; returns the number of gene cells written."""
    rng = np.random.default_rng(seed)
    names = np.array([f"G{i:05d}" for i in range(n_universe)], dtype=object)
    n_cells = 0
    with open(path, "w") as handle:
        for start in range(0, n_sets, chunk):
            n = min(chunk, n_sets - start)
            kind = rng.random(n)
            sizes = np.where(kind < 0.8, rng.integers(1, 15, n),
                             np.where(kind < 0.9, rng.integers(501, 601, n), rng.integers(15, 201, n)))
            genes = names[rng.integers(0, n_universe, int(sizes.sum()))]
            bounds = np.concatenate([[0], np.cumsum(sizes)])
            handle.write("".join(f"SET{start + s}\tsynthetic\t" + "\t".join(genes[bounds[s]:bounds[s + 1]]) + "\n"
                                 for s in range(n)))
            n_cells += int(sizes.sum())
    return n_cells


def measure(gmt: Path, n_universe: int, min_size: int, max_size: int) -> dict:
    """Run in a fresh process: read + index ``gmt`` once; time and peak RSS."""
    import resource

    from permenrich._pipeline import load_gene_sets

    gene_ids = np.array([f"G{i:05d}" for i in range(n_universe)], dtype=object)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    index = load_gene_sets(str(gmt), gene_ids, min_size=min_size, max_size=max_size)
    seconds = time.perf_counter() - started
    import permenrich

    return {"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_imports_mib": rss_before, "n_read": index.n_read, "n_kept": index.n_sets,
            "permenrich": str(Path(permenrich.__file__).parents[1])}


def run_child(src: Path, gmt: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    command = [sys.executable, __file__, "--measure", str(gmt), "--universe", str(args.universe),
               "--min-size", str(args.min_size), "--max-size", str(args.max_size)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measurement with {src} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def git_commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=1_000_000)
    parser.add_argument("--universe", type=int, default=20_000)
    parser.add_argument("--min-size", type=int, default=15)
    parser.add_argument("--max-size", type=int, default=500)
    parser.add_argument("--src", type=Path, action="append", default=[],
                        help="also measure with this source tree (e.g. an older commit's src/); repeatable")
    parser.add_argument("--out", type=Path, default=None, help="write the report here")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.universe, args.min_size, args.max_size)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_genesets_") as folder:
        gmt = Path(folder) / "synthetic.gmt"
        started = time.perf_counter()
        n_cells = write_gmt(gmt, args.sets, args.universe)
        write_seconds = time.perf_counter() - started
        size_mb = gmt.stat().st_size / 1e6
        runs = [(f"given: {src}", run_child(src, gmt, args)) for src in args.src]
        runs.append((f"this checkout ({git_commit()})", run_child(ROOT / "src", gmt, args)))

    import numpy

    lines = [
        f"Gene-set reading + indexing, CPU - {dt.date.today().isoformat()}",
        f"Run by benchmarks/bench_genesets.py; python {platform.python_version()}, numpy {numpy.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} logical cores.",
        f"GMT: {args.sets:,} sets, {n_cells:,} gene cells, {size_mb:,.0f} MB, drawn from {args.universe:,} genes "
        f"(80% with 1-14 genes, 10% with 501-600, 10% with 15-200; written in {write_seconds:.0f} s).",
        f"Measured: permenrich._pipeline.load_gene_sets(gmt, genes, min_size={args.min_size}, "
        f"max_size={args.max_size}) in a fresh process; peak RSS = ru_maxrss of that process.",
        "",
        f"{'code':<48} {'seconds':>8} {'peak RSS (MiB)':>15} {'RSS after imports':>18} {'read':>10} {'kept':>8}",
    ]
    for label, result in runs:
        lines.append(f"{label:<48} {result['seconds']:>8.1f} {result['peak_rss_mib']:>15,.0f} "
                     f"{result['rss_after_imports_mib']:>18,.0f} {result['n_read']:>10,} {result['n_kept']:>8,}")
    report = "\n".join(lines) + "\n"
    return publish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
