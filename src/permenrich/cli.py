"""Command line: ``permenrich gsea|prerank|genes|ora|meta|report|demo``, mirroring :mod:`permenrich.api`.

User mistakes (:class:`PermenrichError`, argparse usage errors) become one line on stderr
and exit status 2; Ctrl-C or SIGTERM one line and exit status 130. The output folder
appears whole when the run completes, or not at all (:mod:`permenrich.io.output`); the
run holds its lock from start to end, so a second run on the same ``--out`` is refused.

This module imports only the standard library at import time: NumPy, pandas and Numba
are imported inside :func:`main`, where an interrupt is handled.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import math
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn, TextIO

from . import __version__
from .errors import PermenrichError, cli_option_names

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# Seconds before the progress bar shows (default 2); 0 prints a line after the first batch.
PROGRESS_DELAY_ENV = "PERMENRICH_PROGRESS_DELAY"


class UsageError(PermenrichError):
    """A command-line usage mistake: unknown option, missing argument, value of the wrong type."""


class _Parser(argparse.ArgumentParser):
    """argparse with usage mistakes as one line (main prints it) instead of the usage block."""

    commands: dict[str, argparse.ArgumentParser]  # the top parser's subcommands, set by build_parser

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No prefixes of long options: a typo (--gene-set for --gene-sets) must not pass for
        # an abbreviation, and a new option must not change what an old prefix means.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see '{self.prog} --help'")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse reports these from the top parser: point to the command's help instead
            getattr(self, "commands", {}).get(getattr(parsed, "command", None), self).error(
                f"unrecognized arguments: {' '.join(extras)}")
        return parsed


class ProgressBar:
    """A progress bar on stderr, shown only once a run has taken ``delay_seconds``."""

    def __init__(self, stream: TextIO | None = None, delay_seconds: float = 2.0, width: int = 30) -> None:
        self.stream = sys.stderr if stream is None else stream
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


#: Line breaks inside an error's text (a library's message, such as h5py's, may span
#: lines): the CLI prints every error on one line.
_ONE_LINE = re.compile(r"\s*[\r\n]+\s*")


def _column_names(text: str) -> list[str]:
    """``age,sex`` -> ['age', 'sex']; a list naming no column is a usage error, not an
    unadjusted run."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no column; give e.g. age,sex")
    return names

def _count(text: str) -> int:
    """A whole number, also written as a float literal (1e5, as the README writes limits)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (e.g. 10000 or 1e4)")
    return int(value)


def _add_run_options(parser: argparse.ArgumentParser, permutations: int, *, labellings: bool = True,
                     enumerated: bool = True) -> None:
    exact = (": random gene sets of each set's size" if not labellings
             else "; all labellings are enumerated exactly when there are no more than this" if enumerated
             else ": each relabels every study at once, always drawn (never enumerated)")
    parser.add_argument("--permutations", type=_count, default=permutations,
                        help=f"permutations (default {permutations}){exact}")
    parser.add_argument("--seed", type=int, default=0, help="permutation k is a pure function of (seed, k) (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--batch-size", type=int, default=None, help="permutations per batch (default: from --memory)")
    parser.add_argument("--memory", default="1GB",
                        help="memory budget (default 1GB) shared by what the run holds: an expression matrix "
                             "(streamed from an HDF5/h5ad file when over half of it), the permutation batches and "
                             "the null scores GSEA keeps for FDR")
    parser.add_argument("--device", default="auto",
                        help="cpu, gpu or auto (default: the GPU when Numba sees a CUDA device, else the CPU)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar or warnings on the console (run.json still records the warnings)")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--scheduler", help="address of a Dask scheduler (e.g. tcp://node01:8786): the permutations "
                                             "run as ranges on its workers (needs the dask extra)")
    cluster.add_argument("--scheduler-file", help="the scheduler file written by 'dask scheduler --scheduler-file', "
                                                  "dask-jobqueue or dask-mpi")
    parser.add_argument("--report", action="store_true",
                        help="also write OUT/report.html: parameters, design, top results and figures in one "
                             "self-contained page (needs the plot extra)")


def _add_expression_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--expr", required=required, help="expression: GCT, TSV/CSV/TXT, GEO series matrix, h5ad, 10x or plain HDF5")
    pheno = parser.add_mutually_exclusive_group()
    pheno.add_argument("--cls", help="CLS phenotype file (categorical; #numeric for correlation metrics)")
    pheno.add_argument("--sample-sheet", help="TSV/CSV with sample ids and annotation columns")
    parser.add_argument("--groupby", help="group column of the sample sheet or of the h5ad's obs")
    parser.add_argument("--case", help="case class (GSEA's class A, the positive phenotype)")
    parser.add_argument("--control", help="control class (class B)")
    parser.add_argument("--phenotype-column", help="numeric phenotype column (metrics pearson, spearman)")
    parser.add_argument("--strata", help="column of strata: labels are permuted within strata only")
    parser.add_argument("--pairs", help="column of pair ids (one case + one control each): swaps within pairs")
    parser.add_argument("--covariates", type=_column_names,
                        help="comma-separated columns to adjust for (e.g. age,sex): t of the phenotype in "
                             "expression ~ covariates + phenotype, Freedman-Lane permutations "
                             "(metric student_t or pearson)")
    parser.add_argument("--collapse", default="mean", help="merge duplicated genes/probes: mean (default), max, median")
    parser.add_argument("--chip", help="probe ids -> gene symbols: a GSEA CHIP, a GEO platform table (GPL) or a two-column TSV")
    parser.add_argument("--nan-policy", default="error",
                        help="genes with missing values in the analysed samples: error (default) or drop")
    parser.add_argument("--zero-variance", default="drop", help="constant genes: drop (default, with a warning) or error")
    parser.add_argument("--normalize", default="none",
                        help="none (default), log1p_cpm (for counts) or log2 (a linear-scale matrix, e.g. an unlogged "
                             "GEO series)")
    parser.add_argument("--pseudobulk", help="obs column (e.g. donor): sum cells per value and group before testing")
    parser.add_argument("--pseudobulk-method", default="sum", help="sum (counts, default) or mean (normalised data)")
    parser.add_argument("--min-cells", type=int, default=10,
                        help="with --pseudobulk: drop pseudo-samples (donor x group) of fewer cells (default 10; "
                             "0 keeps all)")
    parser.add_argument("--layer", help="h5ad: analyse layers/NAME (e.g. counts) instead of X")
    parser.add_argument("--use-raw", action="store_true", help="h5ad: analyse raw/X (genes from raw/var) instead of X")


def _add_set_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gene-sets", nargs="+", required=True, help="GMT/GMX files")
    parser.add_argument("--min-size", type=int, default=15,
                        help="smallest set size among the analysed genes (ORA: the universe; default 15)")
    parser.add_argument("--max-size", type=int, default=500,
                        help="largest set size among the analysed genes (ORA: the universe; default 500)")


OUT_HELP = ("output folder: new, empty, or an earlier permenrich output, which is replaced as a whole "
            "when the run completes")
WEIGHT_HELP = ("running-sum weight p: any finite number >= 0 (GSEA's choices are 0 = classic KS, "
               "1 = default, 1.5, 2)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="permenrich",
                     description="Gene-set enrichment and permutation tests (GSEA, preranked GSEA, per-gene tests, "
                                 "ORA, meta-analysis) on the CPU or a GPU. 'permenrich COMMAND --help' for each "
                                 "command; 'permenrich demo' runs one on embedded simulated data.")
    parser.add_argument("--version", action="version", version=f"permenrich {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    parser.commands = sub.choices

    g = sub.add_parser("gsea", help="phenotype-permutation GSEA on an expression matrix",
                       description="Phenotype-permutation GSEA. Writes OUT/results.tsv, OUT/ranking.tsv (the observed "
                                   "ranked list) and OUT/run.json; with --contrasts or --one-vs-rest, one table "
                                   "per contrast instead of the ranked list.")
    _add_expression_options(g)
    _add_set_options(g)
    g.add_argument("--metric", default="signal_to_noise",
                   help="signal_to_noise (default), t_test, ratio_of_classes, diff_of_classes, log2_ratio_of_classes, "
                        "student_t, welch_t, mann_whitney, hedges_g, pearson, spearman")
    g.add_argument("--set-statistic", default="ks", help="ks (weighted running sum, default), mean, maxmean")
    g.add_argument("--weight", type=float, default=1.0, help=WEIGHT_HELP)
    _add_contrast_options(g)
    g.add_argument("--out", required=True, help=OUT_HELP)
    _add_run_options(g, permutations=1000)

    p = sub.add_parser("prerank", help="preranked GSEA with the gene-set permutation null",
                       description="Preranked GSEA on an RNK list (gene, score). "
                                   "Writes OUT/results.tsv, OUT/ranking.tsv and OUT/run.json.")
    p.add_argument("--rnk", required=True, help="ranked list: two columns, gene and score")
    p.add_argument("--duplicates", default="error",
                   help="duplicated genes in the list: error (default), mean, max, min, first")
    _add_set_options(p)
    p.add_argument("--set-statistic", default="ks", help="ks (weighted running sum, default), mean, maxmean")
    p.add_argument("--weight", type=float, default=1.0, help=WEIGHT_HELP)
    p.add_argument("--p-method", default="permutation",
                   help="permutation (default) or multilevel: p-values far below 1/permutations with a log2 "
                        "error (fgseaMultilevel's method)")
    p.add_argument("--sample-size", type=int, default=101,
                   help="multilevel: random sets per level (default 101; an even number is raised by one)")
    p.add_argument("--eps", type=float, default=1e-50,
                   help="multilevel: smallest p-value estimated, smaller ones reported as it (default 1e-50; 0: no "
                        "bound)")
    p.add_argument("--out", required=True, help=OUT_HELP)
    _add_run_options(p, permutations=1000, labellings=False)

    n = sub.add_parser("genes", help="per-gene permutation tests with maxT (FWER) adjustment",
                       description="Per-gene permutation p-values, BH q-values and Westfall-Young maxT. "
                                   "Writes OUT/results.tsv and OUT/run.json (with --contrasts or --one-vs-rest, "
                                   "also one table per contrast).")
    _add_expression_options(n)
    n.add_argument("--metric", default="welch_t",
                   help="welch_t (default), student_t, mann_whitney, hedges_g, pearson, spearman, or a GSEA metric")
    n.add_argument("--alternative", default="two-sided", help="two-sided (default); greater: case above control (or positive correlation); less: below")
    _add_contrast_options(n)
    n.add_argument("--out", required=True, help=OUT_HELP)
    _add_run_options(n, permutations=10000)

    o = sub.add_parser("ora", help="over-representation: gene list, or altered genes with a permutation null",
                       description="Over-representation analysis. List mode: --gene-list (+ --universe). "
                                   "Expression mode: --expr + phenotype + --top N or --fdr Q. "
                                   "Writes OUT/results.tsv and OUT/run.json.")
    o.add_argument("--gene-list", help="list mode: genes of interest, one per line")
    o.add_argument("--universe", help="background genes, one per line (default: the expression data's genes; in list "
                                      "mode those of --expr or of the --map)")
    o.add_argument("--map", help="list mode: TSV with the columns item and gene (e.g. miRNA -> target genes, "
                                 "protein -> gene), applied to the list and the universe alike")
    o.add_argument("--lists", help="several lists in one run: TSV with the columns list, genes[, universe, map] "
                                   "(paths relative to it); BH across all lists x sets in padj_bh_all")
    _add_expression_options(o, required=False)
    _add_set_options(o)
    o.add_argument("--metric", default="student_t", help="expression mode: per-gene statistic (default student_t)")
    o.add_argument("--top", type=int, help="expression mode: the N most extreme genes are 'altered'")
    o.add_argument("--fdr", type=float, help="expression mode: genes with BH q < FDR are 'altered'")
    o.add_argument("--direction", default="both", help="expression mode: up, down or both (default)")
    o.add_argument("--out", required=True, help=OUT_HELP)
    _add_run_options(o, permutations=1000)

    m = sub.add_parser("meta", help="per-gene meta-analysis of several studies, permuted within each study",
                       description="Combines each study's per-gene statistic (Stouffer, fixed or random effects); "
                                   "permutation k relabels every study at once. Writes OUT/results.tsv "
                                   "(per-study statistic columns) and OUT/run.json.")
    m.add_argument("--manifest", required=True,
                   help="TSV, one row per study: study, expr (required); phenotype (CLS or sample sheet), groupby, "
                        "case, control, phenotype_column, strata, pairs, covariates, chip, collapse, normalize, "
                        "nan_policy, zero_variance, pseudobulk, pseudobulk_method, min_cells, layer, use_raw "
                        "(optional); paths relative to the manifest")
    m.add_argument("--method", default="stouffer",
                   help="stouffer (default; weights sqrt(n)), fixed or random (DerSimonian-Laird) on Hedges' g")
    m.add_argument("--join", default="inner", help="inner (genes in every study, default) or outer (any study)")
    m.add_argument("--metric", default=None,
                   help="per-study statistic: welch_t for stouffer (default), hedges_g for fixed/random")
    m.add_argument("--alternative", default="two-sided", help="two-sided (default); greater: case above control (or positive correlation); less: below")
    m.add_argument("--nan-policy", default="error",
                   help="genes with missing values in the analysed samples: error or drop, for studies whose manifest row sets none")
    m.add_argument("--zero-variance", default="drop",
                   help="constant genes: drop (with a warning) or error, for studies whose manifest row sets none")
    m.add_argument("--mode", default="genes",
                   help="genes (default: per-gene p-values and maxT of the combined statistic), gsea (GSEA on the "
                        "combined ranking) or ora (the --top genes of the combined statistic); gsea and ora need "
                        "--gene-sets")
    m.add_argument("--top", type=int, help="--mode ora: the N most extreme genes of the combined statistic")
    m.add_argument("--direction", default="both", help="--mode ora: up, down or both (default)")
    m.add_argument("--gene-sets", nargs="+", help="GMT/GMX files (--mode gsea or ora)")
    m.add_argument("--leave-one-out", action="store_true",
                   help="also the meta-analysis without each study, from the same permutations "
                        "(columns *_without_<study>)")
    m.add_argument("--set-statistic", default="ks", help="--mode gsea: ks (default), mean or maxmean")
    m.add_argument("--weight", type=float, default=1.0, help=WEIGHT_HELP)
    m.add_argument("--min-size", type=int, default=15, help="smallest set size in the data (default 15)")
    m.add_argument("--max-size", type=int, default=500, help="largest set size in the data (default 500)")
    m.add_argument("--out", required=True, help=OUT_HELP)
    _add_run_options(m, permutations=10000, enumerated=False)

    r = sub.add_parser("report", help="write OUT/report.html for a finished run's output folder",
                       description="Writes one self-contained HTML page (figures embedded, no network needed): "
                                   "parameters and provenance from OUT/run.json, the design, the top results of "
                                   "OUT/results.tsv and figures. Needs matplotlib: pip install 'permenrich[plot]'. "
                                   "Enrichment plots come from OUT/ranking.tsv and the run's gene-set files, "
                                   "while these are unchanged.")
    r.add_argument("out", help="output folder of a finished permenrich run (holds run.json and results.tsv)")

    d = sub.add_parser("demo", help="GSEA on the embedded SIMULATED VTE-like cohort",
                       description="Generates (once) a SIMULATED cohort shaped like public VTE whole-blood "
                                   "studies and runs GSEA with JAK-STAT gene sets.")
    d.add_argument("--out", default=None,
                   help=OUT_HELP + " (default demo_out; demo_cohort_out with --cohort, demo_meta_out with --meta)")
    d.add_argument("--permutations", type=_count, default=None,
                   help="permutations (default 10000; 2000 with --cohort or --meta, which run several analyses)")
    d.add_argument("--seed", type=int, default=0, help="permutation k is a pure function of (seed, k)")
    d.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    d.add_argument("--quiet", action="store_true", help="no progress bar or warnings")
    d.add_argument("--report", action="store_true",
                   help="also write OUT/report.html (needs permenrich[plot]; not with --cohort, whose folder holds "
                        "two analyses)")
    d.add_argument("--meta", action="store_true",
                   help="three SIMULATED studies instead (GEO series + platform table, GCT + CHIP, RNA-seq counts): "
                        "GSEA of each alone and their meta-analysis (Stouffer, leave-one-out)")
    d.add_argument("--cohort", action="store_true",
                   help="the SIMULATED confounded cohort instead: a GEO series matrix + platform table, cases older "
                        "and more often male; GSEA without and with --covariates age,gender (Freedman-Lane)")
    return parser


@contextlib.contextmanager
def _cli_logging(quiet: bool) -> Iterator[None]:
    """Warnings as ``permenrich: WARNING: ...`` lines on stderr while the command runs;
    the package logger is restored afterwards (``main`` may be called from Python)."""
    package_logger = logging.getLogger("permenrich")
    saved = (package_logger.handlers[:], package_logger.level, package_logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("permenrich: %(levelname)s: %(message)s"))
    # --quiet silences the console only: run.json still records the warnings
    handler.setLevel(logging.ERROR if quiet else logging.WARNING)
    package_logger.handlers[:] = [handler]
    package_logger.setLevel(logging.WARNING)
    package_logger.propagate = False
    try:
        yield
    finally:
        package_logger.handlers[:], package_logger.level, package_logger.propagate = saved


def _phenotype_source(args: argparse.Namespace) -> object:
    from .io.geo import looks_like_series_matrix

    annotated = str(args.expr).lower().endswith(".h5ad") or looks_like_series_matrix(args.expr or "")
    if args.groupby and not (args.sample_sheet or args.cls or annotated):
        raise PermenrichError("--groupby needs --sample-sheet, an h5ad --expr whose obs has that column, or a GEO "
                              "series matrix --expr whose characteristics name it")
    if not (args.cls or args.sample_sheet or args.groupby or args.phenotype_column):
        raise PermenrichError("give the phenotype: --cls FILE, --sample-sheet FILE --groupby COL, "
                              "or --groupby COL for an h5ad")
    return args.cls or args.sample_sheet


def _expression_kwargs(args: argparse.Namespace) -> dict:
    return dict(groupby=args.groupby, case=args.case, control=args.control,
                phenotype_column=args.phenotype_column, strata=args.strata, pairs=args.pairs,
                covariates=args.covariates,
                collapse=args.collapse, chip=args.chip, nan_policy=args.nan_policy,
                zero_variance=args.zero_variance, normalize=args.normalize, pseudobulk=args.pseudobulk,
                pseudobulk_method=args.pseudobulk_method, min_cells=args.min_cells, layer=args.layer,
                use_raw=args.use_raw)


def _add_contrast_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--contrasts", help="TSV of contrasts (name, groupby, case, control; control may be 'rest'): "
                                           "all run over one read of the data; OUT/results.tsv has a contrast column "
                                           "and OUT/<file>.tsv each contrast (run.json's contrast_files maps names "
                                           "to files)")
    group.add_argument("--one-vs-rest", help="group column: every level against all other samples")


def _run_contrasts(args: argparse.Namespace, mode: str, **mode_options: object) -> int:
    from .api import contrasts

    expression = _expression_kwargs(args)
    for key in ("groupby", "case", "control"):
        if expression.pop(key) is not None:  # each contrast names its own groups
            flag = "--contrasts" if args.contrasts else "--one-vs-rest"
            raise PermenrichError(f"{flag} names the groups of every contrast; drop --{key}")
    run = _run_kwargs(args)
    table = contrasts(args.expr, args.contrasts, getattr(args, "gene_sets", None), mode=mode,
                      one_vs_rest=args.one_vs_rest, phenotype=args.sample_sheet or args.cls, **expression,
                      **run, **mode_options)
    n = len(table.attrs["run"]["contrasts"])
    _report(table, args.out, f"rows from {n} contrasts")
    return 0


def _run_kwargs(args: argparse.Namespace) -> dict:
    return dict(permutations=args.permutations, seed=args.seed, batch_size=args.batch_size, memory=args.memory,
                threads=args.threads, device=args.device, client=getattr(args, "client", None),
                progress=_progress_bar(args))


def _progress_bar(args: argparse.Namespace) -> ProgressBar | None:
    if args.quiet:
        return None
    text = os.environ.get(PROGRESS_DELAY_ENV, "").strip()
    try:
        delay = float(text) if text else 2.0
    except ValueError:
        delay = math.nan
    if not (math.isfinite(delay) and delay >= 0):
        raise PermenrichError(f"{PROGRESS_DELAY_ENV} must be a number of seconds >= 0, got {text!r}; "
                              "unset it for the default (2)")
    return ProgressBar(delay_seconds=delay)


# The result table the command just wrote (set by _report), for --report.
_WRITTEN_RESULT: ContextVar[object | None] = ContextVar("permenrich_written_result", default=None)


def _write_html_report(args: argparse.Namespace) -> None:
    """``--report``: OUT/report.html from the output just written and its in-memory result."""
    from .report import report

    path = report(args.out, result=_WRITTEN_RESULT.get())
    print(f"wrote {path}")


def _files_written(out: str, note: str = "") -> str:
    """``wrote OUT/a, OUT/b and OUT/run.json``: the files a run just wrote into ``out``,
    as its run.json lists them (``note`` follows the first, the result table)."""
    import json

    folder = Path(out)
    files = json.loads((folder / "run.json").read_text(encoding="utf-8"))["output"]["files"]
    named = [str(folder / name) + (note if i == 0 else "") for i, name in enumerate(files)]
    return "wrote " + (", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0])


def _run_report(args: argparse.Namespace) -> int:
    from .report import report

    print(f"wrote {report(args.out)}")
    return 0


def _report(table: object, out: str, what: str) -> None:
    from .api import write_results

    paths = write_results(table, out)
    _WRITTEN_RESULT.set(table)  # for --report, whose enrichment plots need the in-memory ranking
    run = table.attrs["run"]  # type: ignore[attr-defined]
    contrast_tables = len(table.attrs.get("per_contrast") or {})  # type: ignore[attr-defined]
    kind = "list" if "lists" in run.get("command", "") else "contrast"  # ora --lists: one table per list
    written = (f"wrote {Path(paths['results']).parent} (results.tsv, run.json and {contrast_tables} {kind} tables)"
               if contrast_tables else _files_written(str(Path(paths["run"]).parent)))
    plan = run.get("permutation_plan") or {}
    exact = " (exact enumeration of all labellings)" if plan.get("exact_enumeration") else ""
    permutations = f", {plan['permutations']} permutations{exact}" if plan else ""
    # which class is the case decides every sign: say it (a sample sheet's default is its first sample's)
    design, parameters = run.get("design") or {}, run.get("parameters") or {}
    case, control = (parameters.get(key) or design.get(key) for key in ("case", "control"))
    classes = (f", {case} (n = {design['n_case']}) vs {control} (n = {design['n_control']})"
               if case is not None and control is not None and "n_case" in design else "")
    print(f"{len(table)} {what}{classes}{permutations}, {run['timings']['total_seconds']:.1f}s; {written}")


def _run_gsea(args: argparse.Namespace) -> int:
    from .api import gsea

    if args.contrasts or args.one_vs_rest:
        return _run_contrasts(args, "gsea", metric=args.metric, set_statistic=args.set_statistic, weight=args.weight,
                              min_size=args.min_size, max_size=args.max_size)
    phenotype = _phenotype_source(args)
    table = gsea(args.expr, phenotype, args.gene_sets, metric=args.metric, set_statistic=args.set_statistic,
                 weight=args.weight, min_size=args.min_size, max_size=args.max_size, **_expression_kwargs(args),
                 **_run_kwargs(args))
    _report(table, args.out, f"gene sets, {table.attrs['run']['data']['n_genes']} genes")
    return 0


def _run_prerank(args: argparse.Namespace) -> int:
    from .api import prerank

    table = prerank(args.rnk, args.gene_sets, set_statistic=args.set_statistic, weight=args.weight,
                    min_size=args.min_size, max_size=args.max_size, duplicates=args.duplicates,
                    p_method=args.p_method, sample_size=args.sample_size, eps=args.eps, **_run_kwargs(args))
    _report(table, args.out, f"gene sets, {table.attrs['run']['data']['n_genes']} ranked genes")
    return 0


def _run_genes(args: argparse.Namespace) -> int:
    from .api import genes

    if args.contrasts or args.one_vs_rest:
        return _run_contrasts(args, "genes", metric=args.metric, alternative=args.alternative)
    phenotype = _phenotype_source(args)
    table = genes(args.expr, phenotype, metric=args.metric, alternative=args.alternative,
                  **_expression_kwargs(args), **_run_kwargs(args))
    _report(table, args.out, "genes")
    return 0


def _refuse_unused(args: argparse.Namespace, command: str, used: tuple[str, ...], why: str) -> None:
    """Refuse any option of ``command`` given a value other than its default that this
    run does not use (``used``: the destinations it does): the user meant something by it."""
    parser = build_parser().commands[command]
    for action in parser._actions:
        dest = action.dest
        if dest in used or dest == "help" or not action.option_strings:
            continue
        if getattr(args, dest, action.default) != action.default:
            raise PermenrichError(f"{action.option_strings[0]} does not apply here: {why}; drop it")


def _run_ora(args: argparse.Namespace) -> int:
    from .api import ora

    if args.lists:
        from .api import ora_lists

        if args.gene_list or args.expr:
            raise PermenrichError("--lists runs several gene lists; give it without --gene-list and --expr")
        # the resources (threads to device) are accepted as in any run; a cluster is not used
        _refuse_unused(args, "ora", ("lists", "gene_sets", "universe", "map", "min_size", "max_size", "out", "quiet",
                                     "report", "threads", "batch_size", "memory", "device"),
                       "--lists tests each list's own selection against its universe (nothing is permuted)")
        from .options import check_options

        check_options({"device": args.device, "memory": args.memory})
        table = ora_lists(args.lists, args.gene_sets, universe=args.universe, map=args.map, min_size=args.min_size,
                          max_size=args.max_size)
        _report(table, args.out, f"rows from {len(table.attrs['per_contrast'])} lists")
        return 0
    expression_mode = args.gene_list is None
    if expression_mode and args.expr is None:
        raise PermenrichError("give --gene-list FILE (list mode), or --expr FILE with a phenotype and --top N or "
                              "--fdr Q (expression mode)")
    # in list mode a phenotype is refused by ora() rather than ignored
    phenotype = _phenotype_source(args) if expression_mode else args.cls or args.sample_sheet
    table = ora(args.gene_list, args.gene_sets, universe=args.universe, map=args.map, expr=args.expr,
                phenotype=phenotype, metric=args.metric, top=args.top, fdr=args.fdr, direction=args.direction,
                min_size=args.min_size, max_size=args.max_size, **_expression_kwargs(args), **_run_kwargs(args))
    _report(table, args.out, "gene sets")
    return 0


def _run_meta(args: argparse.Namespace) -> int:
    from .api import meta

    table = meta(args.manifest, args.gene_sets, mode=args.mode, method=args.method, join=args.join,
                 metric=args.metric, alternative=args.alternative, nan_policy=args.nan_policy,
                 zero_variance=args.zero_variance, set_statistic=args.set_statistic,
                 weight=args.weight, min_size=args.min_size, max_size=args.max_size, top=args.top,
                 direction=args.direction, leave_one_out=args.leave_one_out, **_run_kwargs(args))
    what = "genes" if args.mode == "genes" else "gene sets"
    _report(table, args.out, f"{what} from {len(table.attrs['run']['studies'])} studies")
    return 0


def _demo_defaults(args: argparse.Namespace) -> None:
    """Each demo's own output folder (one never replaces another's) and permutations: the
    cohort and meta demos run several analyses, 2,000 permutations each, unless told."""
    several = args.cohort or args.meta
    if args.out is None:
        args.out = "demo_cohort_out" if args.cohort else "demo_meta_out" if args.meta else "demo_out"
    if args.permutations is None:
        args.permutations = 2000 if several else 10000


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import format_demo_summary, run_demo

    if args.report and args.cohort:
        raise PermenrichError("--report draws one analysis per folder, and the cohort demo writes two (without and "
                              "with covariates); run the demo without --report")
    if args.meta and args.cohort:
        raise PermenrichError("--meta and --cohort are two demos; run one, then the other into another --out")
    if getattr(args, "meta", False):
        from .demo_meta import format_meta_summary, run_meta_demo

        table = run_meta_demo(args.out, permutations=args.permutations, seed=args.seed, threads=args.threads,
                              progress=_progress_bar(args))
        print(format_meta_summary(table))
        print(f"\n{_files_written(args.out)}")
        _WRITTEN_RESULT.set(table)  # for --report
        return 0
    if getattr(args, "cohort", False):
        from .demo_cohort import format_cohort_summary, run_cohort_demo

        out = args.out
        table = run_cohort_demo(out, permutations=args.permutations, seed=args.seed, threads=args.threads,
                                progress=_progress_bar(args))
        print(format_cohort_summary(table))
        print(f"\n{_files_written(out, note=' (both analyses)')}")
        return 0
    table = run_demo(args.out, permutations=args.permutations, seed=args.seed, threads=args.threads,
                     quiet=args.quiet, progress=_progress_bar(args))
    print(format_demo_summary(table))
    print(f"\n{_files_written(args.out)}")
    _WRITTEN_RESULT.set(table)  # for --report
    return 0


_COMMANDS = {"gsea": _run_gsea, "prerank": _run_prerank, "genes": _run_genes, "ora": _run_ora, "meta": _run_meta,
             "demo": _run_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``permenrich`` command; returns the exit status.

    Everything runs inside one ``try``, the imports of the numerical stack included, so
    that Ctrl-C (or SIGTERM) at any moment is one line and status 130, and every user
    mistake one line and status 2.
    """
    previous_handler = _interrupt_on_sigterm()
    out, before, args = None, None, None
    try:
        # cli_option_names: messages name options as flags (--min-size), not keywords (min_size=).
        with cli_option_names():
            args = build_parser().parse_args(argv)
            if args.command == "demo":
                _demo_defaults(args)
            _size_thread_pool(args)
            if args.command == "report":  # reads a finished output: no new output folder to check or lock
                return _run_report(args)
            from .io.output import check_output_dir, output_lock

            # Fail before any computing: an unusable --out, or one another run is writing to.
            out = check_output_dir(args.out, create=False)
            before = _folder_identity(out)
            with output_lock(out), _cli_logging(args.quiet), _dask_client(args):
                token = _WRITTEN_RESULT.set(None)
                try:
                    status = _COMMANDS[args.command](args)
                    if status == 0 and getattr(args, "report", False):
                        _write_html_report(args)
                    return status
                finally:
                    _WRITTEN_RESULT.reset(token)
    except PermenrichError as error:
        # one line, whatever a library's text inside it holds (h5py's errors span lines)
        print("permenrich: error: " + _ONE_LINE.sub(" ", str(error).strip()), file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:  # the machine (or a job's limit) has less memory than the run asked for
        memory = getattr(args, "memory", None)
        told = f" (--memory {memory})" if memory is not None else ""
        left = _interrupted(out, before).replace("interrupted; ", "", 1)
        print(f"permenrich: error: out of memory{told}: this machine or job has less free memory than the run "
              "needs; give a smaller --memory (a matrix over half of it is then streamed from an HDF5/h5ad file) or "
              f"run where more memory is free; {left}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"permenrich: {_interrupted(out, before)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


#: Thread pools sized by ``--threads`` through the environment, read when their library
#: loads: Numba's, and the BLAS under NumPy (OpenBLAS, or MKL/OpenMP builds).
THREAD_POOL_VARIABLES = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def _size_thread_pool(args: argparse.Namespace) -> None:
    """``--threads N``: Numba's and the BLAS's thread pools get N threads, not one per
    core: a job given N cores uses N (idle pool threads spin: OpenBLAS's added 0.2 s of
    CPU to a 0.9 s run at --threads 1). Only possible before NumPy and Numba are imported,
    which the command line defers until now; a variable the user set is kept."""
    threads = getattr(args, "threads", None)
    if threads is not None and threads >= 1 and "numpy" not in sys.modules and "numba" not in sys.modules:
        for variable in THREAD_POOL_VARIABLES:
            os.environ.setdefault(variable, str(threads))


@contextlib.contextmanager
def _dask_client(args: argparse.Namespace) -> Iterator[None]:
    """``args.client``: a Dask client for --scheduler/--scheduler-file (None without),
    closed when the command ends."""
    from .runner import client_from

    args.client = client_from(getattr(args, "scheduler", None), getattr(args, "scheduler_file", None))
    try:
        yield
    finally:
        if args.client is not None:
            args.client.close()


def _folder_identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _interrupted(out: Path | None, before: tuple[int, int] | None) -> str:
    """What an interrupted run left, said truthfully. An output is published by renaming a
    new folder into place, and this run held the folder's lock throughout: the folder is
    ours exactly when its identity changed."""
    after = None if out is None else _folder_identity(out)
    if after is not None and after != before:
        return f"interrupted after the output was complete; wrote {out}"
    if before is not None:
        return f"interrupted; no output was written; {out} is untouched"
    return "interrupted; no output was written"


def _interrupt_on_sigterm() -> object:
    """Treat SIGTERM (a batch scheduler's stop) like Ctrl-C; returns the previous handler."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not in the main thread (e.g. called from a worker): leave as is
        return None


def entry() -> None:
    """The ``permenrich`` command: :func:`main`, then exit with its status.

    Before the process exits every object moves to the collector's permanent generation
    (:func:`gc.freeze`), so the interpreter's teardown skips its collection passes over
    the ~140,000 objects of the numerical stack (Numba's typing registries above all):
    a quarter of a second of a small run. Objects are still released (files closed,
    finalizers run) by reference counting; only ``main``'s process does this, never a
    caller's.
    """
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    entry()
