"""Meta-analysis GSEA of three studies against the three single-study GSEA runs, CPU.

Three simulated studies of 20,000 genes (the Hallmark + KEGG symbols, topped up with
filler ids) x 100, 150 and 200 samples (half cases), correlated genes, GSEA (running
sum, weight 1, welch_t) on MSigDB Hallmark + KEGG from ../shared/data. Reports
permutations per second of ``permenrich.meta(..., mode="gsea")`` and of the three
``permenrich.gsea`` runs, after a warm-up, alternating, median of ``--rounds``; the
goal is a meta-analysis costing no more than the sum of the single-study runs + 10%.

    python benchmarks/bench_meta.py [--permutations 10000] [--rounds 2] [--threads 2] [--out FILE]
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


def _studies(gene_sets: list[str], n_genes: int = 20_000, sizes: tuple[int, ...] = (100, 150, 200)) -> list[dict]:
    import numpy as np
    import pandas as pd

    symbols: dict[str, None] = {}
    for path in gene_sets:
        for line in Path(path).read_text().splitlines():
            symbols.update((g, None) for g in line.split("\t")[2:] if g)
    genes = list(symbols)[:n_genes]
    genes += [f"FILLER{i}" for i in range(n_genes - len(genes))]
    rng = np.random.default_rng(0)
    studies = []
    for s, n in enumerate(sizes):
        modules = rng.normal(size=(n_genes // 50, n))
        values = rng.normal(size=(n_genes, n)) + 0.5 * np.repeat(modules, 50, axis=0)
        labels = ["case"] * (n // 2) + ["control"] * (n - n // 2)
        studies.append({"name": f"study{s + 1}", "expr": pd.DataFrame(values, index=genes),
                        "phenotype": labels, "case": "case", "control": "control"})
    return studies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import numpy as np

    import permenrich

    gene_sets = [str(args.data_dir / "genesets" / "h.all.v7.0.symbols.gmt"),
                 str(args.data_dir / "genesets" / "c2.cp.kegg.v7.5.1.symbols.gmt")]
    studies = _studies(gene_sets)
    common = dict(metric="welch_t", seed=0, device="cpu", threads=args.threads, memory="4GB")

    def singles(permutations: int) -> None:
        for study in studies:
            permenrich.gsea(study["expr"], study["phenotype"], gene_sets, case="case", control="control",
                            permutations=permutations, **common)

    def combined(permutations: int) -> None:
        permenrich.meta(studies, gene_sets, mode="gsea", permutations=permutations, **common)

    runs = {"three single-study gsea runs": singles, "meta --mode gsea (Stouffer) of the three": combined}
    for run in runs.values():
        run(128)  # compile or load the kernels, warm the caches
    walls: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run(args.permutations)
            walls[name].append(time.perf_counter() - started)
    rows = []
    for name, values in walls.items():
        wall = statistics.median(values)
        rows.append(f"| {name} | {wall:.1f} | {1000 * wall / args.permutations:.3f} |")
    single, meta = (statistics.median(v) for v in walls.values())
    report = "\n".join([
        f"# Meta-analysis GSEA vs the single-study runs, CPU, {datetime.date.today().isoformat()}",
        "",
        f"{cpu_model()}; Python {sys.version.split()[0]}, NumPy {np.__version__}, permenrich "
        f"{permenrich.__version__} (commit {git_commit()}); three simulated studies of 20,000 genes x 100, 150, "
        f"200 samples; Hallmark + KEGG; {args.permutations:,} permutations, {args.threads} threads, "
        f"{args.rounds} rounds alternating (median).",
        "",
        "| run | wall (s) | ms / permutation |",
        "| --- | --- | --- |",
        *rows,
        "",
        f"* meta / sum of single runs: **{meta / single:.2f}x** (goal <= 1.10)",
        "",
    ])
    return publish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
