#!/usr/bin/env python
"""Time permenrich and GSEApy side by side on the leukemia data (CPU).

Both tools get the same symbol-level matrix (the GCT collapsed to gene symbols through
the CHIP file, mean of probes), the same CLS, the same gene sets (MSigDB Hallmark v7.0 +
C2 KEGG v7.5.1, sizes 15-500), metric signal_to_noise, seed 0 and the same thread count.
Each tool runs in its own fresh process (multiprocessing "spawn"), so its peak resident
memory is its own; a short warm-up run (JIT compilation, thread pools) is timed
separately from the measured run. Agreement: observed ES does not depend on the
permutations, so ES should match closely; NES and p-values do not (different random
permutations), so only their rank correlation is reported.

Usage::

    python benchmarks/bench_leukemia.py                      # 1,000 and 10,000 permutations
    python benchmarks/bench_leukemia.py --permutations 1000  # one count
    python benchmarks/bench_leukemia.py --skip-gseapy-above 10000   # GSEApy at 10,000 too (slow)
    python benchmarks/bench_leukemia.py --tools gseapy       # one tool only

Writes ``benchmarks/results/leukemia_cpu_<date>.md`` (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
try:
    import permenrich  # noqa: F401
except ImportError:
    # Benchmark the checkout when permenrich is not installed (spawned children inherit sys.path).
    sys.path.insert(0, str(REPO / "src"))
DEFAULT_DATA = REPO.parent / "shared" / "data"
TOOLS = ("permenrich", "gseapy")
MIN_SIZE, MAX_SIZE = 15, 500
WARMUP_PERMUTATIONS = 20


# --- inputs -----------------------------------------------------------------------------

def input_paths(data_dir: Path) -> dict[str, Path]:
    paths = {
        "gct": data_dir / "leukemia" / "Leukemia_hgu95av2.gct",
        "cls": data_dir / "leukemia" / "Leukemia.cls",
        "chip": data_dir / "leukemia" / "Human_AFFY_HG_U95_MSigDB_7_0_final.chip",
        "hallmark": data_dir / "genesets" / "h.all.v7.0.symbols.gmt",
        "kegg": data_dir / "genesets" / "c2.cp.kegg.v7.5.1.symbols.gmt",
    }
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        sys.exit(f"bench_leukemia: missing input file(s): {', '.join(missing)}; pass --data-dir")
    return paths


def collapsed_matrix(paths: dict[str, Path]) -> tuple[pd.DataFrame, dict[str, int]]:
    """GCT probes -> gene symbols via the CHIP file, mean of probes per symbol."""
    gct = pd.read_csv(paths["gct"], sep="\t", skiprows=2, index_col=0)
    gct = gct.drop(columns=gct.columns[0])  # Description
    chip = pd.read_csv(paths["chip"], sep="\t", usecols=[0, 1], dtype=str)
    symbol_of = dict(zip(chip.iloc[:, 0], chip.iloc[:, 1]))
    symbols = gct.index.map(lambda probe: symbol_of.get(probe))
    mapped = gct[symbols.notna()]
    mapped.index = symbols[symbols.notna()]
    collapsed = mapped.groupby(level=0, sort=False).mean().astype(np.float64)
    collapsed.index.name = "gene"
    info = {"probes": int(gct.shape[0]), "probes_mapped": int(mapped.shape[0]),
            "genes": int(collapsed.shape[0]), "samples": int(collapsed.shape[1])}
    return collapsed, info


def read_gmt_dict(paths: list[Path]) -> dict[str, list[str]]:
    # Deliberately not permenrich's reader: GSEApy's input must not depend on the tool under test.
    sets: dict[str, list[str]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 3:
                sets[fields[0]] = [g for g in fields[2:] if g]
    return sets


# --- measurement in a child process -------------------------------------------------------

def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so the peak covers the run only.
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _run_permenrich(job: dict[str, Any], permutations: int) -> pd.DataFrame:
    from permenrich.api import gsea

    if job["permenrich_input"] == "gct":
        expr, chip = str(job["paths"]["gct"]), str(job["paths"]["chip"])
    else:
        expr, chip = job["matrix"], None
    res = gsea(expr, str(job["paths"]["cls"]), [str(job["paths"]["hallmark"]), str(job["paths"]["kegg"])],
               metric="signal_to_noise", permutations=permutations, seed=0, threads=job["threads"],
               min_size=MIN_SIZE, max_size=MAX_SIZE, chip=chip)
    return pd.DataFrame({"gene_set": res["gene_set"].astype(str), "es": res["es"], "nes": res["nes"],
                         "pval": res["pval"], "fdr": res["fdr"]})


def _run_gseapy(job: dict[str, Any], permutations: int) -> pd.DataFrame:
    import gseapy

    res = gseapy.gsea(data=job["matrix"], gene_sets=job["gene_sets"], cls=str(job["paths"]["cls"]),
                      permutation_type="phenotype", permutation_num=permutations, method="signal_to_noise",
                      threads=job["threads"], seed=0, outdir=None, no_plot=True,
                      min_size=MIN_SIZE, max_size=MAX_SIZE)
    table = res.res2d
    return pd.DataFrame({"gene_set": table["Term"].astype(str), "es": table["ES"].astype(float),
                         "nes": table["NES"].astype(float), "pval": table["NOM p-val"].astype(float),
                         "fdr": table["FDR q-val"].astype(float)})


def _child(tool: str, job: dict[str, Any], permutations: int, warmup: bool, queue: Any) -> None:
    out: dict[str, Any] = {"tool": tool, "permutations": permutations}
    try:
        t0 = time.perf_counter()
        if tool == "permenrich":
            import permenrich  # noqa: F401
            from permenrich import __version__ as version
            run = _run_permenrich
        else:
            import gseapy
            version = gseapy.__version__
            run = _run_gseapy
        out["version"] = version
        out["import_s"] = time.perf_counter() - t0
        if warmup:
            t0 = time.perf_counter()
            run(job, WARMUP_PERMUTATIONS)
            out["warmup_s"] = time.perf_counter() - t0
        out["baseline_rss_mb"] = (_status_kb("VmRSS") or 0) / 1024
        out["peak_reset"] = _reset_peak_rss()
        t0 = time.perf_counter()
        table = run(job, permutations)
        out["wall_s"] = time.perf_counter() - t0
        out["peak_rss_mb"] = (_status_kb("VmHWM") or 0) / 1024
        out["table"] = table
    except BaseException as exc:  # report any failure of the tool, keep the benchmark going
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=5)
    queue.put(out)


def measure(tool: str, job: dict[str, Any], permutations: int, warmup: bool, timeout: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(tool, job, permutations, warmup, queue))
    started = time.perf_counter()
    proc.start()
    try:
        result = queue.get(timeout=timeout)
    except Exception:
        proc.kill()
        result = {"tool": tool, "permutations": permutations, "error": f"no result within {timeout:.0f} s"}
    proc.join()
    result["process_s"] = time.perf_counter() - started
    return result


# --- report -------------------------------------------------------------------------------

def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kb / 1024**2:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "logical_cores": str(os.cpu_count()), "usable_cores": str(usable), "memory": memory,
            "os": platform.platform()}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("numpy", "pandas", "numba", "scipy", "gseapy", "permenrich"):
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", "?")
        except Exception:  # a tool that does not import is reported, not fatal
            found[name] = "not importable"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        found["permenrich git commit"] = commit or "none (no commits yet)"
    except (OSError, subprocess.SubprocessError):
        pass
    return found


def agreement(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    from scipy.stats import spearmanr

    merged = a.merge(b, on="gene_set", suffixes=("_pe", "_gp"))
    if len(merged) < 3:
        return {"shared": float(len(merged))}
    return {
        "shared": float(len(merged)),
        "only_permenrich": float(len(set(a.gene_set) - set(b.gene_set))),
        "only_gseapy": float(len(set(b.gene_set) - set(a.gene_set))),
        "es_spearman": float(spearmanr(merged.es_pe, merged.es_gp).statistic),
        "es_max_abs_diff": float(np.max(np.abs(merged.es_pe - merged.es_gp))),
        "nes_spearman": float(spearmanr(merged.nes_pe, merged.nes_gp).statistic),
        "pval_spearman": float(spearmanr(merged.pval_pe, merged.pval_gp).statistic),
    }


def fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def render(results: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, int], n_sets: int,
           started: dt.datetime) -> str:
    machine, vers = machine_info(), versions()
    lines = [
        f"# Leukemia GSEA benchmark, CPU — {started:%Y-%m-%d}",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC by `benchmarks/bench_leukemia.py` "
        f"(`{' '.join(sys.argv[1:]) or 'defaults'}`).",
        "",
        "## Machine and software",
        "",
        f"- CPU: {machine['cpu']}; {machine['logical_cores']} logical cores "
        f"({machine['usable_cores']} usable); memory {machine['memory']}",
        f"- OS: {machine['os']}",
        "- " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        "",
        "## Input",
        "",
        f"- `Leukemia_hgu95av2.gct`: {info['probes']:,} probes, {info['probes_mapped']:,} mapped by the CHIP "
        f"file, collapsed (mean) to {info['genes']:,} gene symbols x {info['samples']} samples "
        f"(`Leukemia.cls`: ALL vs AML)",
        f"- gene sets: `h.all.v7.0.symbols.gmt` + `c2.cp.kegg.v7.5.1.symbols.gmt`, {n_sets} sets read, "
        f"sizes {MIN_SIZE}-{MAX_SIZE} kept",
        f"- metric signal_to_noise, seed 0, {args.threads} threads per tool; permenrich input: "
        f"{'the same collapsed matrix' if args.permenrich_input == 'dataframe' else 'GCT + CHIP (its own collapse)'}",
        f"- warm-up run of {WARMUP_PERMUTATIONS} permutations before each measured run: "
        f"{'yes' if args.warmup else 'no'}",
        "",
        "## Timings",
        "",
        "| tool | permutations | wall (s) | ms / permutation | warm-up (s) | peak RSS during run (MiB) "
        "| RSS before run (MiB) | speed-up vs GSEApy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_key = {(r["tool"], r["permutations"]): r for r in results}
    for r in results:
        if "wall_s" not in r:
            reason = r.get("skipped") or r.get("error", "failed")
            lines.append(f"| {r['tool']} | {r['permutations']:,} | — | — | — | — | — | {reason} |")
            continue
        other = by_key.get(("gseapy", r["permutations"]))
        speedup = (f"{other['wall_s'] / r['wall_s']:.1f}x" if r["tool"] == "permenrich" and other
                   and "wall_s" in other else "")
        lines.append(
            f"| {r['tool']} {r.get('version', '')} | {r['permutations']:,} | {r['wall_s']:.2f} | "
            f"{1000 * r['wall_s'] / r['permutations']:.3f} | {fmt(r.get('warmup_s'), '.2f')} | "
            f"{r['peak_rss_mb']:.0f}{'' if r.get('peak_reset') else ' (process peak)'} | "
            f"{r['baseline_rss_mb']:.0f} | {speedup} |")
    lines += ["", "## Agreement (sets tested by both tools)", "",
              "| permutations | shared sets | ES Spearman | ES max abs diff | NES Spearman | nominal p Spearman |",
              "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    any_pair = False
    for p in args.permutations:
        a, b = by_key.get(("permenrich", p)), by_key.get(("gseapy", p))
        if a and b and "table" in a and "table" in b:
            any_pair = True
            ag = agreement(a["table"], b["table"])
            lines.append(f"| {p:,} | {ag['shared']:.0f} | {fmt(ag.get('es_spearman'), '.6f')} | "
                         f"{fmt(ag.get('es_max_abs_diff'), '.2e')} | {fmt(ag.get('nes_spearman'), '.4f')} | "
                         f"{fmt(ag.get('pval_spearman'), '.4f')} |")
    if not any_pair:
        lines.append("| — | — | — | — | — | — |")
        lines.append("")
        lines.append("No permutation count ran both tools successfully, so there is nothing to compare.")
    errors = [r for r in results if "error" in r]
    if errors:
        lines += ["", "## Failures", ""]
        for r in errors:
            lines.append(f"- {r['tool']} at {r['permutations']:,} permutations: {r['error']}")
    lines += ["", "Wall time covers the `gsea` call only (in-memory input, no output files); process start, "
              "imports and the warm-up are excluded. Peak RSS is the child's VmHWM, reset just before the "
              "measured run where the kernel allows it.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--permutations", type=int, nargs="+", default=[1000, 10000],
                        help="permutation counts to time (default: 1000 10000)")
    parser.add_argument("--skip-gseapy-above", type=int, default=1000, metavar="N",
                        help="run GSEApy only for counts <= N (default 1000; GSEApy at 10,000 takes minutes)")
    parser.add_argument("--threads", type=int, default=2, help="threads per tool (default 2)")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help=f"folder with leukemia/ and genesets/ (default {DEFAULT_DATA})")
    parser.add_argument("--permenrich-input", choices=("dataframe", "gct"), default="dataframe",
                        help="give permenrich the collapsed matrix (default) or the GCT + CHIP files")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the warm-up runs")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per measured run")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown report path (default benchmarks/results/leukemia_cpu_<date>.md)")
    args = parser.parse_args(argv)
    if any(p < 1 for p in args.permutations) or args.threads < 1:
        parser.error("--permutations and --threads must be positive")

    started = dt.datetime.now(dt.timezone.utc)
    paths = input_paths(args.data_dir)
    matrix, info = collapsed_matrix(paths)
    gene_sets = read_gmt_dict([paths["hallmark"], paths["kegg"]])
    job = {"paths": paths, "matrix": matrix, "gene_sets": gene_sets, "threads": args.threads,
           "permenrich_input": args.permenrich_input}
    print(f"leukemia: {info['genes']} genes x {info['samples']} samples, {len(gene_sets)} gene sets; "
          f"threads {args.threads}", flush=True)

    results: list[dict[str, Any]] = []
    for p in args.permutations:
        for tool in args.tools:
            if tool == "gseapy" and p > args.skip_gseapy_above:
                results.append({"tool": tool, "permutations": p,
                                "skipped": f"skipped (> --skip-gseapy-above {args.skip_gseapy_above})"})
                print(f"{tool:>10} {p:>7,} permutations: skipped", flush=True)
                continue
            r = measure(tool, job, p, args.warmup, args.timeout)
            results.append(r)
            if "wall_s" in r:
                print(f"{tool:>10} {p:>7,} permutations: {r['wall_s']:8.2f} s "
                      f"({1000 * r['wall_s'] / p:.3f} ms/perm), peak RSS {r['peak_rss_mb']:.0f} MiB, "
                      f"warm-up {fmt(r.get('warmup_s'), '.2f')} s", flush=True)
            else:
                print(f"{tool:>10} {p:>7,} permutations: FAILED: {r.get('error')}", flush=True)
                if r.get("traceback"):
                    print(r["traceback"], file=sys.stderr)

    report = render(results, args, info, len(gene_sets), started)
    out = args.out or REPO / "benchmarks" / "results" / f"leukemia_cpu_{started:%Y-%m-%d}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(report)
    os.replace(tmp, out)
    print(f"report written to {out}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
