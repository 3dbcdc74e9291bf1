"""A self-contained HTML report of a finished run: ``OUT/report.html``.

The report is built from what the output folder holds (``run.json`` and
``results.tsv``), so that a reviewer who never ran the tool can read the parameters,
the provenance, the design, the top results and the figures in one file. Figures are
embedded as base64 PNG ``data:`` URIs and the CSS is inline: the page needs no network
and no JavaScript.

GSEA's enrichment plots need the ranked list and the sets' members: from the in-memory
result when it is passed (``report(out, result=table)``, or ``--report`` on the command
line), else from the folder's ``ranking.tsv`` and the gene-set files that run.json names,
when they are still there unchanged (their SHA-256 is checked). Any figure the inputs
cannot support is left out with a one-line reason; the report itself never fails for it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, PermenrichError

if TYPE_CHECKING:  # pandas is imported inside the functions: ``import permenrich`` imports this module
    import pandas as pd

__all__ = ["REPORT_FILE", "report"]

REPORT_FILE = "report.html"
#: First line of every report; also how an output folder recognises a report as permenrich's.
GENERATOR_MARK = '<meta name="generator" content="permenrich'
#: Rows of the top-results table, and enrichment plots drawn (the top sets only: each
#: figure is ~50 kB of PNG).
TOP_ROWS = 20
#: The top table's order: the first of these columns that holds a value.
_ORDER_COLUMNS = ("fdr", "pval", "pval_perm", "pval_hypergeom")
ENRICHMENT_PLOTS = 10

_GENE_SET_MODES = ("gsea", "prerank")
# Columns shown in the top table, in this order, when the results have them.
_SET_COLUMNS = ("contrast", "gene_set", "size", "es", "nes", "pval", "fdr", "fwer", "padj_bh")
_ORA_COLUMNS = ("list", "contrast", "gene_set", "size", "overlap", "expected", "odds_ratio", "pval_hypergeom",
                "padj_bh_hypergeom", "pval_perm", "padj_bh_perm")
_GENE_COLUMNS = ("contrast", "gene", "statistic", "pval", "qval_bh", "pval_maxt")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:72em;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#555;font-style:italic}.warning{color:#8a4b00}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
code{background:#f5f5f5;padding:0 .2em}nav a{margin-right:1em}
"""


def report(out_dir: str | os.PathLike, *, result: pd.DataFrame | None = None) -> Path:
    """Write ``report.html`` into a finished output folder.

    Parameters
    ----------
    out_dir : str or PathLike
        An output folder of :func:`permenrich.write_results` or the command line (it
        holds ``run.json`` and ``results.tsv``).
    result : pandas.DataFrame, optional
        The same run's result table as returned by the mode's function; its
        ``attrs["ranking"]`` (GSEA, prerank, meta with ``mode="gsea"``) adds the
        enrichment plots of the top sets, which the folder alone cannot draw.

    Returns
    -------
    pathlib.Path
        The report, ``out_dir / "report.html"``, written atomically.

    Raises
    ------
    InputError
        The folder is missing, or its ``run.json`` or ``results.tsv`` is missing or
        unreadable.
    PermenrichError
        matplotlib (the ``plot`` extra) is not installed.
    """
    out = Path(out_dir).expanduser()
    run, table = _read_output(out)
    _require_matplotlib()
    from .io.output import atomic_write_text, output_lock

    try:
        page = _render(out, run, table, result)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as error:
        if result is not None:
            raise  # the run's own table: not a damaged file
        # A folder edited or damaged after its run: its files no longer say what the
        # report reads (a column, a number, a section of run.json).
        raise InputError(f"{str(out)!r}: its results.tsv, ranking.tsv or run.json no longer hold what permenrich "
                         f"wrote ({type(error).__name__}: {error}); rerun the analysis to write the folder again"
                         ) from None
    # Under the folder's lock: a run publishing a new output there cannot swap the folder
    # out from under the report (re-entrant: the command line already holds it).
    with output_lock(out.resolve()):
        target = out.resolve() / REPORT_FILE
        atomic_write_text(target, page)
    return out / REPORT_FILE


def _read_output(out: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """run.json and results.tsv of ``out``, or a one-line InputError saying what to do."""
    if not out.is_dir():
        raise InputError(f"output folder {str(out)!r} does not exist or is not a folder; give the --out folder of "
                         "a finished permenrich run")
    run_file = out / "run.json"
    if not run_file.is_file():
        raise InputError(f"{str(run_file)!r} is missing: {str(out)!r} is not a permenrich output folder; give the "
                         "--out folder of a finished run")
    try:
        run = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not valid JSON: {exc}"
        raise InputError(f"cannot read {str(run_file)!r} ({reason}); rerun the analysis to write it again") from None
    # The record as run.json holds it (analyses beside the demo's description) or as the
    # table's attrs hold it (analyses inside it).
    if isinstance(run, dict) and "demo" in run and ("analyses" in run or "analyses" in (run["demo"] or {})):
        raise InputError(f"{str(run_file)!r} records the cohort demo's two analyses (without and with covariates) in "
                         "one folder; a report draws one analysis: run gsea with and without --covariates into "
                         "folders of their own")
    if not isinstance(run, dict) or "command" not in run:
        raise InputError(f"{str(run_file)!r} is not a permenrich run record (no 'command' entry); rerun the "
                         "analysis to write it again")
    import pandas as pd

    results_file = out / "results.tsv"
    try:
        table = pd.read_csv(results_file, sep="\t", float_precision="round_trip")  # the run's own bits
    except FileNotFoundError:
        raise InputError(f"{str(results_file)!r} is missing; rerun the analysis to write the output folder "
                         "again") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {str(results_file)!r} ({exc}); rerun the analysis to write it "
                         "again") from None
    if _analysis_kind(run, table) == "other":  # cut or edited: a report of it would be empty
        raise InputError(f"{str(results_file)!r} holds the columns {', '.join(map(str, table.columns[:6]))}"
                         f"{', ...' if table.shape[1] > 6 else ''}, not those of a permenrich table (gene sets with "
                         "nes and fdr, an ORA table, or genes with statistic and pval); rerun the analysis to write "
                         "it again")
    return run, table


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PermenrichError("the report needs matplotlib: pip install 'permenrich[plot]'") from None


# --------------------------------------------------------------------------- rendering

def _render(out: Path, run: dict[str, Any], table: pd.DataFrame, result: pd.DataFrame | None) -> str:
    command = str(run.get("command"))
    analysis = _analysis_kind(run, table)
    figures, notes, anchors = _figures(analysis, table, result, out, run)
    title = f"permenrich {command} report: {out.resolve().name}"
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">Generated from <code>{_e(str(out.resolve()))}</code> by permenrich '
        f"{_e(str((run.get('versions') or {}).get('permenrich', '?')))}. "
        + ('<strong>SIMULATED demo data, not patient data.</strong>' if (run.get("demo") or {}).get("simulated")
           else "") + "</p>",
        '<nav><a href="#design">Design</a><a href="#results">Top results</a><a href="#figures">Figures</a>'
        '<a href="#run">Run details</a></nav>',
        # What a reviewer reads first: the design and the findings; the full record last.
        _design_section(run, table),
        _results_section(analysis, table, anchors),
        _figures_section(figures, notes),
        _run_section(run),
    ]
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head>{GENERATOR_MARK} {_e(str((run.get("versions") or {}).get("permenrich", "")))}">'
            f'<meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def _analysis_kind(run: Mapping[str, Any], table: pd.DataFrame) -> str:
    """``gene_sets`` (a GSEA table), ``ora``, ``genes`` or ``other``, from the columns."""
    if {"gene_set", "nes", "fdr"} <= set(table.columns):
        return "gene_sets"
    if "gene_set" in table.columns and "overlap" in table.columns:
        return "ora"
    if {"gene", "statistic", "pval"} <= set(table.columns):
        return "genes"
    return "other"


def _run_section(run: Mapping[str, Any]) -> str:
    parts = ['<h2 id="run">Run: parameters and provenance</h2>',
             _key_values({"command": run.get("command"), "permutation type": run.get("permutation_type"),
                          "null storage": run.get("null_storage"), "tie rule": run.get("tie_rule")})]
    # what the run's console said; records written before it was kept hold the design's only
    warnings = run.get("warnings") or (run.get("design") or {}).get("warnings")
    if warnings:
        items = warnings if isinstance(warnings, list) else [warnings]
        parts.append("<h3>Warnings</h3><ul>" + "".join(f'<li class="warning">{_e(_text(w))}</li>' for w in items)
                     + "</ul>")
    else:
        parts.append('<p class="note">The run gave no warnings.</p>')
    for key, heading in (("parameters", "Parameters"), ("backend", "Backend and device"), ("timings", "Timings"),
                         ("data", "Inputs"), ("versions", "Versions")):
        value = run.get(key)
        if value:
            parts.append(f"<h3>{heading}</h3>" + _key_values(value))
    extra = {k: v for k, v in run.items() if k in ("per_permutation_ms", "tie_tolerance", "demo", "studies",
                                                    "contrasts", "contrast_files")}
    if extra:
        parts.append("<h3>Other provenance</h3>" + _key_values(extra))
    return "\n".join(parts)


def _p_floor(run: Mapping[str, Any]) -> str:
    """The smallest p-value the run can report, in words (each contrast's, for a run of
    several)."""
    contrasts = run.get("contrasts")
    if isinstance(contrasts, Mapping) and contrasts:
        floors = {name: _p_floor(part) for name, part in contrasts.items() if isinstance(part, Mapping)}
        if len(set(floors.values())) == 1:
            return f"{next(iter(floors.values()))}, in every contrast"
        return "; ".join(f"{name}: {floor}" for name, floor in floors.items())
    plan = run.get("permutation_plan") or {}
    parameters = run.get("parameters") or {}
    permutations = plan.get("permutations", parameters.get("permutations"))
    if not isinstance(permutations, int) or permutations < 1:
        return "not a permutation test (analytic p-values)"
    if parameters.get("p_method") == "multilevel":
        return f"multilevel estimation down to eps = {parameters.get('eps')}"
    from .modes._shared import p_floor

    exact = bool(plan.get("exact_enumeration"))
    command = str(run.get("command", ""))
    said = p_floor(permutations, exact, mirrored=bool(plan.get("complements_are_labellings")),
                   metric=parameters.get("metric"), alternative=parameters.get("alternative"),
                   direction=parameters.get("direction"),
                   sign_specific=(command.split() or [""])[0] in ("gsea", "prerank")
                   or parameters.get("mode") == "gsea")[1]
    return said + (f"; exact: all {permutations} distinct labellings enumerated" if exact
                   else "; random permutations")


def _set_floors(run: Mapping[str, Any], table: pd.DataFrame) -> str | None:
    """For GSEA's sign-specific p, each set's own floor, 1/(its null scores of the same
    sign + 1): with a lopsided null (a ranked list whose random sets mostly score one
    sign) far above the run's floor for the sets of the rare sign; None elsewhere."""
    import pandas as pd

    if ("n_null_same_sign" not in table.columns or "pval" not in table.columns or run.get("contrasts")
            or (run.get("parameters") or {}).get("p_method") == "multilevel"):
        return None
    counts = pd.to_numeric(table["n_null_same_sign"], errors="coerce")
    if not counts.notna().any():
        return None
    floors = 1.0 / (counts + 1.0)
    exact = bool((run.get("permutation_plan") or {}).get("exact_enumeration"))
    if exact:  # b/m: the smallest is 1/m
        floors = 1.0 / counts.where(counts > 0)
    at_floor = int((pd.to_numeric(table["pval"], errors="coerce") <= floors * (1 + 1e-9)).sum())
    said = (f"per set 1/(n_null_same_sign{'' if exact else ' + 1'}): from {floors.min():.3g} to {floors.max():.3g} "
            f"in this run")
    if at_floor:
        multilevel = " or use --p-method multilevel" if str(run.get("command", "")).startswith("prerank") else ""
        said += (f"; {at_floor} set{'s' if at_floor != 1 else ''} sit at their floor, so their p only bounds the "
                 f"evidence (raise --permutations{multilevel})")
    return said


def _design_section(run: Mapping[str, Any], table: pd.DataFrame) -> str:
    parameters = run.get("parameters") or {}
    design = run.get("design") or {}
    plan = run.get("permutation_plan") or {}
    summary: dict[str, Any] = {}
    if "n_case" in design:
        # gsea and genes keep the classes with the parameters, ORA's expression mode in its design
        case, control = (parameters.get(key) or design.get(key) or key for key in ("case", "control"))
        summary["case vs control"] = (f"{case} (n = {design['n_case']}) vs {control} "
                                      f"(n = {design.get('n_control')})")
    for key in ("groupby", "phenotype_column", "strata", "pairs", "covariates", "method", "mode", "alternative",
                "metric", "set_statistic", "weight"):
        if parameters.get(key) not in (None, [], ""):
            summary[key.replace("_", " ")] = parameters[key]
    if plan:
        summary["permutations"] = (f"{plan.get('permutations')} "
                                   + ("(exact enumeration of all labellings)" if plan.get("exact_enumeration")
                                      else "(random)"))
        if "distinct_labellings" in plan:
            summary["distinct labellings"] = plan["distinct_labellings"]
        if "strata" in plan:
            summary["permutation strata"] = plan["strata"]
    summary["smallest attainable p-value"] = _p_floor(run)
    per_set = _set_floors(run, table)
    if per_set:
        summary["smallest attainable p-value of each set"] = per_set
    parts = ['<h2 id="design">Design</h2>', _key_values(summary)]
    if design:
        parts.append("<h3>Design record</h3>" + _key_values(design))
    if plan:
        parts.append("<h3>Permutation plan</h3>" + _key_values(plan))
    return "\n".join(parts)


def _top_rows(analysis: str, table: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The rows and columns of the top table (the best p-values first; with contrasts,
    the best of each contrast, so that one contrast's ties at the p-value floor do not
    fill the table)."""
    columns = {"gene_sets": _SET_COLUMNS, "ora": _ORA_COLUMNS, "genes": _GENE_COLUMNS}.get(analysis,
                                                                                          tuple(table.columns[:8]))
    shown = tuple(c for c in columns if c in table.columns)
    # the first p-value column that holds any (ORA's permutation columns are empty for a list)
    order = next((c for c in _ORDER_COLUMNS if c in table.columns and table[c].notna().any()), None)
    rows = table.sort_values(order, kind="stable") if order else table
    if "contrast" in table.columns and table["contrast"].nunique() > 1:
        each = max(5, -(-TOP_ROWS // int(table["contrast"].nunique())))
        position = {name: i for i, name in enumerate(dict.fromkeys(table["contrast"]))}  # the table's order
        rows = rows.groupby("contrast", sort=False).head(each).sort_values(
            "contrast", key=lambda names: names.map(position), kind="stable")
        return rows, ("contrast", *shown) if "contrast" not in shown else shown
    return rows.head(TOP_ROWS), shown


def _results_section(analysis: str, table: pd.DataFrame, anchors: Mapping[str, str]) -> str:
    rows, columns = _top_rows(analysis, table)
    what = "genes" if analysis == "genes" else "gene sets" if analysis in ("gene_sets", "ora") else "rows"
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for _, row in rows.iterrows():
        cells = []
        for column in columns:
            value = row[column]
            if column == "gene_set" and str(value) in anchors:
                cells.append(f'<td title="{_e(str(value))}"><a href="#{anchors[str(value)]}">'
                             f"{_e(_text(str(value)))}</a></td>")
            elif isinstance(value, numbers.Real) and not isinstance(value, bool):
                cells.append(f'<td class="num">{_e(_number(value) or "NA")}</td>')
            elif column == "gene_set":  # the whole name on hover when the cell shortens it
                cells.append(f'<td title="{_e(str(value))}">{_e(_text(value))}</td>')
            else:
                cells.append(f"<td>{_e(_text(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    each = " of each contrast" if "contrast" in columns else ""
    return (f'<h2 id="results">Top {len(rows)} of {len(table)} {what}</h2>'
            f'<p class="note">The best rows{each}, sorted by the first of {", ".join(_ORDER_COLUMNS)} that the '
            f"table holds; the full table is results.tsv.</p>"
            f'<table id="top-results"><thead><tr>{head}</tr></thead><tbody>' + "".join(body) + "</tbody></table>")


def _figures_section(figures: list[tuple[str, str, str]], notes: list[str]) -> str:
    parts = ['<h2 id="figures">Figures</h2>']
    parts += [f'<p class="note">{_e(note)}</p>' for note in notes]
    for anchor, caption, png in figures:
        parts.append(f'<figure id="{anchor}"><img src="data:image/png;base64,{png}" alt="{_e(caption)}">'
                     f"<figcaption>{_e(caption)}</figcaption></figure>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- figures

def _folder_ranking(out: Path, run: Mapping[str, Any]) -> tuple[Any, str]:
    """The run's Ranking rebuilt from ``ranking.tsv`` and the gene-set files run.json names
    (checked against their recorded SHA-256), or None and why not."""
    import numpy as np
    import pandas as pd

    from ._pipeline import file_digest, load_gene_sets
    from .modes.gsea import Ranking

    ranked_file = out / "ranking.tsv"
    if not ranked_file.is_file():
        return None, "the output folder keeps no ranked list (ranking.tsv)"
    sources = (run.get("data") or {}).get("gene_sets")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, Mapping) and "path" in s
                                                                 for s in sources):
        return None, "the gene sets were not read from files, so their members are not in the folder"
    for source in sources:
        digest = file_digest(source["path"])
        if digest is None:
            return None, f"{source['path']} (the run's gene sets) is no longer there"
        if digest["sha256"] != source.get("sha256"):
            return None, f"{source['path']} changed since the run (SHA-256 differs)"
    # keep_default_na=False: gene symbols such as NA or NULL stay names
    # round_trip: pandas' default float parser is off by an ulp in about half of the values
    ranked = pd.read_csv(ranked_file, sep="\t", keep_default_na=False, dtype={"gene": str},
                         float_precision="round_trip")
    gene_ids = ranked["gene"].to_numpy(dtype=object)
    parameters = run.get("parameters") or {}
    index = load_gene_sets([s["path"] for s in sources], gene_ids, min_size=int(parameters.get("min_size", 1)),
                           max_size=int(parameters.get("max_size", len(gene_ids))), allow_full=True)
    return Ranking(gene_ids, ranked["statistic"].to_numpy(dtype=float), index.names,
                   np.asarray(index.members, dtype=np.int64), np.asarray(index.offsets, dtype=np.int64),
                   float(parameters.get("weight", 1.0)), str(parameters.get("set_statistic", "ks"))), ""


#: Contrasts (or lists) of one table that get their own figures; the rest are named.
FIGURES_PER_CONTRAST_MAX = 8


def _figures_of_parts(analysis: str, table: pd.DataFrame, column: str, out: Path
                      ) -> tuple[list[tuple[str, str, str]], list[str], dict[str, str]]:
    """The figures of each contrast (or list) of a table of several: its own dot plot,
    volcano or overlap plot, for up to ``FIGURES_PER_CONTRAST_MAX`` of them."""
    figures: list[tuple[str, str, str]] = []
    notes: list[str] = []
    names = list(dict.fromkeys(table[column].astype(str)))
    for number, name in enumerate(names[:FIGURES_PER_CONTRAST_MAX]):
        part = table[table[column].astype(str) == name].drop(columns=column).reset_index(drop=True)
        part.attrs = {}
        drawn, _, _ = _figures(analysis, part, None, out, {}, enrichment=False)
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name)[:40]
        figures += [(f"{anchor}-{number}-{slug}", f"{column} {name}: {caption}", png) for anchor, caption, png in drawn]
    if len(names) > FIGURES_PER_CONTRAST_MAX:
        notes.append(f"Figures of {len(names) - FIGURES_PER_CONTRAST_MAX} more {column}s left out (the first "
                     f"{FIGURES_PER_CONTRAST_MAX} are drawn); draw the others' tables with permenrich.pl.")
    if analysis == "gene_sets":
        notes.append(f"Enrichment plots left out: each {column} has its own ranked list; draw them with "
                     "permenrich.pl.enrichment from the run's attrs['per_contrast'] tables.")
    return figures, notes, {}


def _figures(analysis: str, table: pd.DataFrame, result: pd.DataFrame | None,
             out: Path, run: Mapping[str, Any], *, enrichment: bool = True
             ) -> tuple[list[tuple[str, str, str]], list[str], dict[str, str]]:
    """(anchor, caption, base64 PNG) of each figure drawn, one-line notes on those left
    out, and gene set -> anchor of its enrichment plot (``enrichment``: draw those)."""
    from . import pl

    figures: list[tuple[str, str, str]] = []
    notes: list[str] = []
    anchors: dict[str, str] = {}
    for column in ("contrast", "list"):
        if column in table.columns:
            return _figures_of_parts(analysis, table, column, out)
    if analysis == "gene_sets":
        figures.append(("figure-dotplot", "Top gene sets by NES (dot size: set size, colour: FDR q)",
                        _png(pl.dotplot(table, top=10))))
        if not enrichment:
            return figures, notes, anchors
        ranking = None if result is None else result.attrs.get("ranking")
        if ranking is None:
            ranking, why_not = _folder_ranking(out, run)
            if ranking is not None:
                result = table.copy()
                result.attrs["ranking"] = ranking
        if ranking is None:
            notes.append(f"Enrichment plots left out: {why_not}; make the report with the run (--report, or "
                         "report(out, result=table)) to include them.")
        elif ranking.set_statistic != "ks":
            notes.append(f"Enrichment plots left out: they draw the running sum, and this run used "
                         f"set_statistic={ranking.set_statistic!r}.")
        else:
            top, _ = _top_rows(analysis, table)
            for number, name in enumerate(top["gene_set"].astype(str).head(ENRICHMENT_PLOTS)):
                anchor = f"set-{number}-{re.sub(r'[^A-Za-z0-9_-]+', '-', name)[:60]}"
                try:
                    figure = pl.enrichment(result, name)
                except (ValueError, KeyError) as exc:
                    notes.append(f"Enrichment plot of {name} left out: {exc}")
                    continue
                figures.append((anchor, f"Enrichment plot of {name}", _png(figure)))
                anchors[name] = anchor
    elif analysis == "genes":
        figures.append(("figure-volcano", "Volcano plot: per-gene statistic against -log10 permutation p",
                        _png(pl.volcano(table))))
    elif analysis == "ora":
        figures.append(("figure-ora", "Top gene sets: the list's genes in each set against the number expected "
                        "by chance (colour: -log10 p)", _png(pl.overlap(table, top=15))))
    else:
        notes.append("No figure for this kind of result.")
    return figures, notes, anchors


def _png(figure: Any) -> str:
    """A matplotlib Figure as base64 PNG, drawn with Agg (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- HTML helpers

def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _number(value: float) -> str:
    if isinstance(value, float) or not isinstance(value, numbers.Integral):
        if math.isnan(value):
            return ""
        return f"{value:.4g}"
    return str(value)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    from .pl import short_label  # the figures' rule: start and end (long names often differ at the end)

    return short_label("" if value is None else value, 300)


def _key_values(mapping: Mapping[str, Any]) -> str:
    """A two-column table of ``mapping``; nested mappings as nested tables."""
    rows = []
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            cell = _key_values(value)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            cell = _e(_number(value))
        else:
            cell = _e(_text(value))
        rows.append(f"<tr><th>{_e(str(key))}</th><td>{cell}</td></tr>")
    return '<table class="kv">' + "".join(rows) + "</table>"
