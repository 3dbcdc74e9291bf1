"""Command line: ``permenrich gsea`` and ``permenrich demo``, mirroring :mod:`permenrich.api`.

User mistakes (:class:`PermenrichError`) become one line on stderr and exit status 2;
nothing is written to the output directory unless the run completes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from . import __version__
from .errors import PermenrichError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class ProgressBar:
    """A progress bar on stderr, shown only once a run has taken a few seconds."""

    def __init__(self, stream: TextIO = sys.stderr, delay_seconds: float = 2.0, width: int = 30) -> None:
        self.stream = stream
        self.delay = delay_seconds
        self.width = width
        self.started = time.perf_counter()
        self.shown = False
        self.last_decile = -1
        self.interactive = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.started
        if elapsed < self.delay and done < total:
            return
        if not self.shown and done >= total and elapsed < self.delay:
            return
        self.shown = True
        fraction = done / total if total else 1.0
        if self.interactive:
            filled = int(self.width * fraction)
            eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
            self.stream.write(f"\rpermutations [{'#' * filled}{'.' * (self.width - filled)}] "
                              f"{done}/{total} {elapsed:.0f}s elapsed, ~{eta:.0f}s left ")
            if done >= total:
                self.stream.write("\n")
        else:
            decile = int(fraction * 10)
            if decile != self.last_decile:
                self.last_decile = decile
                self.stream.write(f"permutations {done}/{total} ({100 * fraction:.0f}%) {elapsed:.0f}s\n")
        self.stream.flush()


def _add_common_run_options(parser: argparse.ArgumentParser, permutations: int) -> None:
    parser.add_argument("--permutations", type=int, default=permutations,
                        help=f"label permutations (default {permutations})")
    parser.add_argument("--seed", type=int, default=0, help="permutation k is a pure function of (seed, k)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or warnings")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="permenrich", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"permenrich {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("gsea", help="phenotype-permutation GSEA on an expression matrix",
                       description="Phenotype-permutation GSEA. Writes OUT/results.tsv and OUT/run.json.")
    g.add_argument("--expr", required=True, help="expression: GCT, TSV/CSV/TXT, h5ad or HDF5")
    pheno = g.add_mutually_exclusive_group()
    pheno.add_argument("--cls", help="CLS phenotype file")
    pheno.add_argument("--sample-sheet", help="TSV/CSV with sample ids and a group column (--groupby)")
    g.add_argument("--groupby", help="group column of the sample sheet or of the h5ad's obs")
    g.add_argument("--case", help="case class (GSEA's class A, the positive phenotype)")
    g.add_argument("--control", help="control class (class B)")
    g.add_argument("--gene-sets", nargs="+", required=True, help="GMT/GMX files")
    g.add_argument("--metric", default="signal_to_noise",
                   help="signal_to_noise, t_test, ratio_of_classes, diff_of_classes, log2_ratio_of_classes")
    g.add_argument("--weight", type=float, default=1.0, help="running-sum weight p: 0, 1, 1.5 or 2 (default 1)")
    g.add_argument("--min-size", type=int, default=15)
    g.add_argument("--max-size", type=int, default=500)
    g.add_argument("--collapse", default="mean", help="merge duplicated genes/probes: mean, max, median")
    g.add_argument("--chip", help="GSEA CHIP file mapping probe ids to gene symbols")
    g.add_argument("--nan-policy", default="error", help="genes with missing values: error or drop")
    g.add_argument("--zero-variance", default="drop", help="constant genes: drop (with a warning) or error")
    g.add_argument("--batch-size", type=int, default=None, help="permutations per kernel call (default: from --memory)")
    g.add_argument("--memory", default="1GB", help="memory budget for permutation batches (default 1GB)")
    g.add_argument("--device", default="cpu", help="cpu")
    g.add_argument("--out", required=True, help="output directory")
    _add_common_run_options(g, permutations=1000)

    d = sub.add_parser("demo", help="GSEA on the embedded SIMULATED VTE-like cohort",
                       description="Generates (once) a SIMULATED cohort shaped like public VTE whole-blood "
                                   "studies and runs GSEA with JAK-STAT gene sets.")
    d.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    _add_common_run_options(d, permutations=10000)
    return parser


@contextlib.contextmanager
def _cli_logging(quiet: bool) -> Iterator[None]:
    """Warnings as ``permenrich: WARNING: ...`` lines on stderr while the command runs;
    the package logger is restored afterwards (``main`` may be called from Python)."""
    package_logger = logging.getLogger("permenrich")
    saved = (package_logger.handlers[:], package_logger.level, package_logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("permenrich: %(levelname)s: %(message)s"))
    package_logger.handlers[:] = [handler]
    package_logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    package_logger.propagate = False
    try:
        yield
    finally:
        package_logger.handlers[:], package_logger.level, package_logger.propagate = saved


def _run_gsea(args: argparse.Namespace) -> int:
    from .api import gsea, write_results
    from .io import check_output_dir

    if args.groupby and not (args.sample_sheet or args.expr.lower().endswith(".h5ad")):
        raise PermenrichError("--groupby needs --sample-sheet, or an h5ad --expr whose obs has that column")
    if not (args.cls or args.sample_sheet or args.groupby):
        raise PermenrichError("give the phenotype: --cls FILE, --sample-sheet FILE --groupby COL, "
                              "or --groupby COL for an h5ad")
    check_output_dir(args.out, create=False)  # fail before any compute, create nothing yet
    table = gsea(
        args.expr, args.cls or args.sample_sheet, args.gene_sets, groupby=args.groupby,
        case=args.case, control=args.control, metric=args.metric, weight=args.weight,
        permutations=args.permutations, seed=args.seed, min_size=args.min_size,
        max_size=args.max_size, collapse=args.collapse, chip=args.chip, nan_policy=args.nan_policy,
        zero_variance=args.zero_variance, batch_size=args.batch_size, memory=args.memory,
        threads=args.threads, device=args.device, progress=None if args.quiet else ProgressBar(),
    )
    paths = write_results(table, args.out)
    run = table.attrs["run"]
    plan = run["permutation_plan"]
    exact = " (exact enumeration of all labellings)" if plan["exact_enumeration"] else ""
    print(f"{len(table)} gene sets, {run['data']['n_genes']} genes, {plan['permutations']} permutations{exact}, "
          f"{run['timings']['total_seconds']:.1f}s; wrote {paths['results']} and {paths['run']}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import format_demo_summary, run_demo

    table = run_demo(args.out, permutations=args.permutations, seed=args.seed, threads=args.threads,
                     quiet=args.quiet, progress=None if args.quiet else ProgressBar())
    print(format_demo_summary(table))
    print(f"\nwrote {Path(args.out) / 'results.tsv'} and {Path(args.out) / 'run.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``permenrich`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _cli_logging(args.quiet):
            if args.command == "gsea":
                return _run_gsea(args)
            return _run_demo(args)
    except PermenrichError as error:
        print(f"permenrich: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("permenrich: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
