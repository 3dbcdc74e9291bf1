"""The cudaGSEA workload (BMC Bioinformatics 2016, 17:394) on GPU and/or CPU.

20,639 genes x 200 samples (183 cases + 17 controls), 4,725 gene sets with sizes 15-500
(a realistic, right-skewed distribution), signal-to-noise, phenotype permutations
1e4 / 1e5 / 1e6. Reports wall time, permutations per second and peak device memory, and
runs the leukemia data (Hallmark + KEGG) on the same devices in the same run. Writes a
Markdown table to ``benchmarks/results/cudagsea_<devices>_<date>.md`` with the GPU name,
driver and CuPy/Numba versions. Target on one H100: 1e6 permutations in under 60 s.

Usage::

    python benchmarks/bench_cudagsea.py --devices gpu cpu --permutations 10000 100000 1000000
    python benchmarks/bench_cudagsea.py --devices cpu --permutations 1000 --cpu-max 1000   # smoke run

``--devices gpu-per-permutation`` runs the first GPU kernel (one thread per permutation)
for a side-by-side comparison with the default kernels, up to ``--old-max`` permutations.

``--prerank`` runs preranked GSEA instead (the gene-set null: random sets drawn on the
device), on the workload's genes ranked by their case-control mean difference, with the
same sets; the leukemia runs are left out.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import pstats
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import permenrich  # noqa: E402
from _machine import cpu_model  # noqa: E402


def cudagsea_workload(seed: int = 0) -> tuple[pd.DataFrame, list[str], dict[str, list[str]]]:
    rng = np.random.default_rng(seed)
    n_genes, n_case, n_control = 20_639, 183, 17
    n = n_case + n_control
    factors = rng.normal(size=(n_genes // 50 + 1, n))
    values = 7 + 1.5 * rng.random((n_genes, 1)) + 0.5 * np.repeat(factors, 50, axis=0)[:n_genes] \
        + rng.normal(size=(n_genes, n))
    genes = [f"G{i:05d}" for i in range(n_genes)]
    expr = pd.DataFrame(values, index=genes, columns=[f"S{i:03d}" for i in range(n)])
    # sizes 15-500, log-uniform-like (most sets small, as in MSigDB)
    sizes = np.clip(np.exp(rng.uniform(np.log(15), np.log(500), size=4725)).astype(int), 15, 500)
    sets = {f"SET{s:04d}": [genes[i] for i in rng.choice(n_genes, size=k, replace=False)] for s, k in enumerate(sizes)}
    return expr, ["case"] * n_case + ["control"] * n_control, sets


class DeviceMemoryWatch:
    """Progress callback that samples used device memory after each batch."""

    def __init__(self) -> None:
        self.peak = 0
        try:
            from numba import cuda

            self.context = cuda.current_context()
        except Exception:  # noqa: BLE001 - no GPU: nothing to watch
            self.context = None

    def __call__(self, done: int, total: int) -> None:
        if self.context is not None:
            free, total_bytes = self.context.get_memory_info()
            self.peak = max(self.peak, total_bytes - free)


def gpu_description() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        import cupy
        import numba
        return f"{out}; CuPy {cupy.__version__}, Numba {numba.__version__}"
    except Exception:  # noqa: BLE001
        return "no GPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["gpu", "cpu"])
    parser.add_argument("--permutations", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--cpu-max", type=int, default=10_000, help="largest permutation count run on the CPU")
    parser.add_argument("--old-max", type=int, default=10_000,
                        help="largest permutation count run with the first GPU kernel (gpu-per-permutation)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--leukemia-cpu-threads", nargs="+", type=int, default=[],
                        help="also run leukemia on the CPU at these thread counts (the GPU target compares "
                             "with the 2-thread CPU run)")
    parser.add_argument("--memory", default="8GB")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--prerank", action="store_true",
                        help="preranked GSEA (random-set null) on the workload's ranked genes instead")
    parser.add_argument("--profile", type=Path, default=None,
                        help="file for cProfile summaries of the GPU runs (cudaGSEA workload, then leukemia), one "
                             "after the other (where the host waits: the part of a run that is not the kernels)")
    args = parser.parse_args()

    expr, labels, sets = cudagsea_workload()
    case = np.array(labels) == "case"
    ranked = expr.loc[:, case].mean(axis=1) - expr.loc[:, ~case].mean(axis=1)

    def workload(n_perm: int, device: str, **options: object) -> pd.DataFrame:
        """The run being timed: phenotype permutations, or the preranked list's random sets."""
        if args.prerank:
            return permenrich.prerank(ranked, sets, permutations=n_perm, device=device, threads=args.threads,
                                      **options)
        return permenrich.gsea(expr, labels, sets, case="case", control="control", permutations=n_perm,
                               device=device, threads=args.threads, **options)

    rows = []
    for label in args.devices:
        device = "gpu" if label.startswith("gpu") else label
        if label.startswith("gpu-"):  # an older GPU kernel, for the side-by-side figures
            os.environ["PERMENRICH_GPU_ES_KERNEL"] = label[len("gpu-"):]
        else:
            os.environ.pop("PERMENRICH_GPU_ES_KERNEL", None)
        if args.prerank:  # compile
            permenrich.prerank(ranked, dict(list(sets.items())[:50]), permutations=64, device=device,
                               threads=args.threads)
        else:
            permenrich.gsea(expr.iloc[:2000], labels, dict(list(sets.items())[:50]), case="case", control="control",
                            permutations=64, device=device, threads=args.threads)
        for n_perm in args.permutations:
            if (device == "cpu" and n_perm > args.cpu_max) or (label != device and n_perm > args.old_max):
                continue
            watch = DeviceMemoryWatch() if device == "gpu" else None
            profiler = cProfile.Profile() if args.profile and device == "gpu" else None
            start = time.perf_counter()
            if profiler:
                profiler.enable()
            result = workload(n_perm, device, seed=0, memory=args.memory, progress=watch)
            wall = time.perf_counter() - start
            if profiler:
                profiler.disable()
                write_profile(profiler, args.profile, f"{label}, {n_perm:,} permutations", wall)
            run = result.attrs["run"]
            rows.append((f"cudaGSEA workload{', preranked' if args.prerank else ''}", label, n_perm, wall,
                         setup_and_first_batch(result), n_perm / wall,
                         f"{watch.peak / 2**30:.2f} GiB" if watch else "—", run["null_storage"]))
            print(rows[-1], flush=True)
            write_report(args, rows)
        leukemia = args.data_dir / "leukemia"
        if args.prerank or not leukemia.is_dir():
            continue
        gmts = [args.data_dir / "genesets" / "h.all.v7.0.symbols.gmt",
                args.data_dir / "genesets" / "c2.cp.kegg.v7.5.1.symbols.gmt"]
        thread_counts = [args.threads] + (args.leukemia_cpu_threads if device == "cpu" else [])
        for threads in thread_counts:
            profiler = cProfile.Profile() if args.profile and label == "gpu" else None
            start = time.perf_counter()
            if profiler:
                profiler.enable()
            result = permenrich.gsea(leukemia / "Leukemia_hgu95av2.gct", leukemia / "Leukemia.cls", gmts,
                            chip=leukemia / "Human_AFFY_HG_U95_MSigDB_7_0_final.chip", permutations=10_000,
                            seed=0, device=device, threads=threads)
            wall = time.perf_counter() - start
            if profiler:
                profiler.disable()
                write_profile(profiler, args.profile, f"{label}, leukemia, 10,000 permutations", wall)
            name = label if threads is None else f"{label}, {threads} threads"
            rows.append(("leukemia (Hallmark + KEGG)", name, 10_000, wall, setup_and_first_batch(result), 10_000 / wall, "—",
                         ""))
            print(rows[-1], flush=True)
            write_report(args, rows)
    print("report written", flush=True)
    return 0


def write_profile(profiler: cProfile.Profile, path: Path, title: str, wall: float) -> None:
    """Append the 40 functions with the most cumulative time, and the 25 with the most own
    time, under ``title``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    text.write(f"## {title}: wall {wall:.3f} s\n")
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    with path.open("a") as handle:
        handle.write(text.getvalue())


def setup_and_first_batch(result: pd.DataFrame) -> str:
    """Report cell ``setup + first batch`` in seconds, from the run record: the time before
    the first permutation (reading the inputs, the observed statistics, preparing the
    device: what no kernel speeds up) and the first batch's (which also loads or compiles
    the kernels)."""
    timings = result.attrs["run"]["timings"]
    return f"{timings['setup_seconds']:.2f} + {timings.get('first_batch_seconds', 0.0):.2f}"


def write_report(args: argparse.Namespace, rows: list[tuple]) -> None:
    """(Re)write the report after each run, so that a run cut short still leaves its rows."""
    today = dt.date.today().isoformat()
    out = args.out or ROOT / "benchmarks" / "results" / f"cudagsea_{'_'.join(args.devices)}_{today}.md"
    cpu = cpu_model()
    lines = [f"# cudaGSEA workload — {today}", "",
             f"Run by `benchmarks/bench_cudagsea.py`. GPU: {gpu_description()}. CPU: {cpu}. "
             f"python {platform.python_version()}, permenrich {permenrich.__version__}.", "",
             "Workload: 20,639 genes x 200 samples (183 + 17), 4,725 sets of 15-500 genes, "
             + ("preranked by the case-control mean difference, random-set (gene-set) permutations"
                if args.prerank else "signal-to-noise, phenotype permutations")
             + "; exact ES (no approximation). GPU ES sort per size class: "
             f"{os.environ.get('PERMENRICH_GPU_ES_SORT') or 'heap (the default)'}.", "",
             "| data | device | permutations | wall (s) | of which setup + first batch (s) | permutations / s "
             "| peak device memory | null |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    lines += [f"| {d} | {dev} | {n:,} | {w:.2f} | {setup} | {r:,.0f} | {m} | {note} |"
              for d, dev, n, w, setup, r, m, note in rows]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
