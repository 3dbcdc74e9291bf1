"""Static census of the hot GPU kernels' PTX for sm_90, without a GPU.

Compiles the ES kernels (shared-memory slots, warp bitmap, global scratch), the block
ranking and the permutation kernels (labellings, random sets) for compute capability 9.0
(H100/H200) with the installed Numba-CUDA and NVVM, and counts per kernel: PTX
instructions, 64-bit integer multiplies (each several SASS instructions; Numba's int64
indexing makes them) and divisions or remainders (a subroutine of dozens), fused
multiply-adds (must be none: the
CPU rounds a*b+c twice), shared-memory atomics, barriers, and the instructions of each
innermost loop (a label to a branch back to it), largest first, with what the loop
touches. A device run measures time; this shows, between two commits and on any
machine, how much work each kernel asks of the GPU per step.

Needs a Numba-CUDA with NVVM (no GPU), best in its own virtual environment, e.g.
``python -m venv /tmp/ptx && /tmp/ptx/bin/pip install numpy scipy pandas h5py 'numba-cuda[cu13]'``.
Usage (``PYTHONPATH`` picks the checkout; its ``kernels/`` must be importable as
``permenrich.kernels``, e.g. a folder ``permenrich`` holding links to ``src/permenrich/*``
and ``kernels``)::

    PYTHONPATH=<tree> /tmp/ptx/bin/python benchmarks/ptx_census.py --label HEAD --out results/ptx_census_<date>.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import re
from pathlib import Path
from types import SimpleNamespace

def compile_kernels() -> dict[str, str]:
    """PTX of each hot kernel for sm_90, by name."""
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda
    from numba import types as t

    # Device functions called from a kernel compile for the current device's capability:
    # there is no device here, so say it is 9.0.
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=(9, 0))
    import permenrich.kernels.device  # noqa: F401 - installs the no-FMA option of every kernel
    from permenrich.kernels import enrichment
    from permenrich.kernels.ranking import RANK_THREADS, block_rank_kernel

    f2, i2 = t.Array(t.float64, 2, "C"), t.Array(t.int32, 2, "C")
    i1, l1 = t.Array(t.int32, 1, "C"), t.Array(t.int64, 1, "C")
    # Argument types by parameter name, so that older commits' kernels compile too.
    types = {"stat": f2, "rank": i2, "ranked_stat": f2, "weight": t.float64, "set_members": i1, "set_offsets": l1,
             "class_sets": l1, "bitonic": t.boolean, "out": f2, "starts": l1, "positions": i2, "flat_positions": i1,
             "stats": f2, "stats_bits": t.Array(t.uint64, 2, "C"), "keys": t.Array(t.uint32, 3, "C"),
             "genes": t.Array(t.int32, 3, "C"), "stat_by_gene": f2}
    from permenrich.kernels import permutations

    kernels = {"es_from_ranks_shared_kernel": enrichment.es_from_ranks_shared_kernel,
               "es_from_ranks_bitmap_kernel": enrichment.es_from_ranks_bitmap_kernel,
               "es_from_ranks_kernel": enrichment.es_from_ranks_kernel,
               "block_rank": block_rank_kernel(RANK_THREADS),
               "labellings_kernel": permutations.labellings_kernel,
               "random_set_kernel": permutations.random_set_kernel}
    # The permutation kernels' own argument types where a name means something else above.
    l2 = t.Array(t.int64, 2, "C")
    own = {"labellings_kernel": {"seed": t.uint64, "exact": t.boolean, "stratum_offsets": l1, "stratum_members": l1,
                                 "stratum_drawn": l1, "stratum_radix": l1, "binom": l2, "factorial": l1, "pool": l2,
                                 "out": l2},
           "random_set_kernel": {"seed": t.uint64, "ranked_stat": t.Array(t.float64, 1, "C"), "sizes": l1,
                                 "table_keys": l2, "table_values": l2, "sequence": l2, "prefix": l2, "out": f2}}
    signatures = {name: (kernel, tuple(own.get(name, {}).get(p, types.get(p, t.int64))
                                       for p in inspect.signature(kernel.py_func).parameters))
                  for name, kernel in kernels.items()}
    return {name: cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))[0]
            for name, (kernel, signature) in signatures.items()}


def instructions(ptx: str) -> list[str]:
    """The instruction lines of a PTX text (labels, directives and comments left out)."""
    return [line.strip() for line in ptx.splitlines()
            if line.startswith("\t") and not line.strip().startswith(("//", ".", "{", "}"))]


def innermost_loops(ptx: str) -> list[list[str]]:
    """Bodies of the innermost loops: from a label to the branch back to it, with no
    other such loop inside."""
    lines = [line.strip() for line in ptx.splitlines()]
    labels = {line[:-1]: i for i, line in enumerate(lines) if re.fullmatch(r"\$L__BB\d+_\d+:", line)}
    loops = []
    for i, line in enumerate(lines):
        target = re.search(r"bra(?:\.uni)?\s+(\$L__BB\d+_\d+);", line)
        if target and labels.get(target.group(1), i + 1) <= i:
            loops.append((labels[target.group(1)], i))
    innermost = [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]
    return [[x for x in lines[a:b + 1] if x and not x.startswith(("//", "$", "."))] for a, b in innermost]


def census(ptx: str) -> dict[str, object]:
    """Counts of one kernel's PTX; ``shared loops`` and ``global loops``: instructions per
    iteration of the innermost loops that touch shared memory (sorts, marks, scans) and
    of the others that touch global memory (gathers, closed-form passes, scatters)."""
    body = instructions(ptx)
    shared, other = [], []
    for loop in innermost_loops(ptx):
        text = "\n".join(loop)
        if ".shared" in text:
            shared.append(len(loop))
        elif "ld." in text or "st." in text:
            other.append(len(loop))
    return {"instructions": len(body), "mul.lo.s64": ptx.count("mul.lo.s64"),
            "64-bit division": ptx.count("rem.u64") + ptx.count("div.u64") + ptx.count("rem.s64") + ptx.count("div.s64"),
            "fma.rn.f64": ptx.count("fma.rn.f64"),
            "atom.shared": ptx.count("atom.shared"), "bar.sync": ptx.count("bar.sync"),
            "shared loops": ", ".join(map(str, sorted(shared))), "global loops": ", ".join(map(str, sorted(other)))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="this checkout", help="name of the code measured, in the table")
    parser.add_argument("--out", type=Path, default=None, help="append the table to this Markdown file")
    args = parser.parse_args()
    from importlib.metadata import version

    rows = [(args.label, name, census(ptx)) for name, ptx in compile_kernels().items()]
    lines = []
    if args.out is None or not args.out.exists():
        lines += [f"# PTX census of the hot GPU kernels, sm_90 — {dt.date.today().isoformat()}", "",
                  f"Run by `benchmarks/ptx_census.py` (Numba-CUDA {version('numba-cuda')}, no GPU). Loops: "
                  "PTX instructions per iteration of each innermost loop (as NVVM unrolled it) that touches "
                  "shared memory (sorts, bitmap marks and scans) or else global memory (gathers, closed-form "
                  "passes, scatters).", "",
                  "| code | kernel | PTX instructions | mul.lo.s64 | 64-bit div/rem | fma.rn.f64 | shared atomics | "
                  "barriers | shared-memory loops | global-memory loops |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for label, name, c in rows:
        lines.append(f"| {label} | {name} | {c['instructions']:,} | {c['mul.lo.s64']} | {c['64-bit division']} | "
                     f"{c['fma.rn.f64']} | "
                     f"{c['atom.shared']} | {c['bar.sync']} | {c['shared loops']} | {c['global loops']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        with args.out.open("a") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
