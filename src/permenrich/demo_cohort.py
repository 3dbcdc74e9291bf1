"""The SIMULATED confounded-cohort demo: GEO files in, GSEA with and without covariates.

The demo cohort's simulator (:mod:`permenrich.demo`) draws a VTE-like whole-blood
cohort; here cases are also older and more often male than controls (as in real VTE
cohorts), and age raises the genes of two JAK-STAT sets (IL6_FAMILY_JAKSTAT and
STAT3_TARGETS, an "inflammaging"-like program, which carry no disease shift here) and a
share of background genes. The
cohort is written as a GEO series matrix (characteristics ``disease state``, ``age``,
``gender``) with a GEO platform table mapping probes to genes (a few probes annotated
``A /// B``), the way a public series is downloaded. GSEA then runs twice: without
covariates, age-driven sets look enriched in cases; adjusted for age and sex
(Freedman–Lane), they are not, while the interferon sets that the disease shifts stay.
The data are SIMULATED, not patient data.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from .demo import (
    CASE_LABEL,
    CONTROL_LABEL,
    DEFAULT_SEED,
    SIM_PREFIX,
    _build_layout,
    _default_cohort_dir,
    _number,
    _read_jak_stat_sets,
    _rng,
    _simulate,
    demo_gene_sets,
)

logger = logging.getLogger("permenrich")

SERIES_FILENAME = "demo_confounded_series_matrix.txt.gz"
PLATFORM_FILENAME = "demo_confounded_platform.soft.gz"
#: The JAK-STAT sets whose genes rise with age in the simulation.
AGE_DRIVEN_SETS = ("IL6_FAMILY_JAKSTAT", "STAT3_TARGETS")
_AGE_EFFECT_SD = 0.45           # genes of an age-driven set: SD units per 10 years
_AGE_BACKGROUND_FRACTION = 0.05  # background genes that also rise with age
_CASE_AGE_SHIFT = 12.0           # cases are older by this many years on average


def make_confounded_cohort(folder: str | Path, *, seed: int = DEFAULT_SEED, n_cases: int = 70, n_controls: int = 63,
                           n_genes: int = 12000) -> tuple[Path, Path]:
    """Write the SIMULATED confounded cohort as a GEO series matrix and platform table.

    Returns
    -------
    series, platform : Path
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = _build_layout(seed, n_genes, _read_jak_stat_sets())
    simulated = _simulate(layout, seed, n_cases, n_controls)
    rng = _rng(seed, 7)
    is_case = simulated["is_case"]
    n_samples = is_case.size
    age = np.round(rng.normal(55.0, 10.0, n_samples) + _CASE_AGE_SHIFT * (is_case - is_case.mean()), 0)
    male = rng.random(n_samples) < np.where(is_case, 0.65, 0.4)
    age_set_genes = np.isin(layout.gene_names, [g for name in AGE_DRIVEN_SETS for g in layout.jak_stat_sets[name]])
    driven = age_set_genes | (rng.random(n_genes) < _AGE_BACKGROUND_FRACTION)
    values = simulated["values"].astype(np.float64)
    # The age-driven sets carry no disease shift here: their only link to VTE is age.
    values -= np.outer(is_case, np.where(age_set_genes, simulated["shift"] * simulated["sd"], 0.0))
    values += np.outer((age - 55.0) / 10.0, np.where(driven, _AGE_EFFECT_SD, 0.0) * simulated["sd"])
    values += np.outer(male, 0.3 * simulated["sd"] * (rng.random(n_genes) < 0.02))  # a few sex-linked genes
    samples = [f"GSM9{j:05d}" for j in range(n_samples)]
    probes = [f"DEMO_{i:05d}_at" for i in range(n_genes)]
    quoted = lambda items: "\t".join(f'"{item}"' for item in items)  # noqa: E731
    series = folder / SERIES_FILENAME
    with gzip.open(series, "wt") as handle:
        handle.write('!Series_title\t"SIMULATED VTE-like whole-blood cohort with age and sex confounding '
                     '(permenrich demo, not patient data)"\n')
        handle.write('!Series_geo_accession\t"GSE0"\n')
        handle.write("!Sample_title\t" + quoted(f"simulated subject {j}" for j in range(n_samples)) + "\n")
        handle.write("!Sample_geo_accession\t" + quoted(samples) + "\n")
        handle.write("!Sample_characteristics_ch1\t" + quoted(
            f"disease state: {CASE_LABEL if case else CONTROL_LABEL}" for case in is_case) + "\n")
        handle.write("!Sample_characteristics_ch1\t" + quoted(f"age: {int(a)}" for a in age) + "\n")
        handle.write("!Sample_characteristics_ch1\t" + quoted(f"gender: {'M' if m else 'F'}" for m in male) + "\n")
        handle.write("!series_matrix_table_begin\n" + '"ID_REF"\t' + quoted(samples) + "\n")
        for probe, row in zip(probes, values.T):
            handle.write(f'"{probe}"\t' + "\t".join(f"{v:.5f}" for v in row) + "\n")
        handle.write("!series_matrix_table_end\n")
    symbols = list(layout.gene_names)
    for i in rng.choice(n_genes, size=max(1, n_genes // 500), replace=False):  # a few multi-gene probes
        symbols[i] = f"{symbols[i]} /// {symbols[(i + 1) % n_genes]}"
    platform = folder / PLATFORM_FILENAME
    with gzip.open(platform, "wt") as handle:
        handle.write("^PLATFORM = GPL0\n!Platform_title = SIMULATED demo array\n!platform_table_begin\n")
        handle.write("ID\tGene Symbol\n" + "".join(f"{p}\t{s}\n" for p, s in zip(probes, symbols)))
        handle.write("!platform_table_end\n")
    return series, platform


def run_cohort_demo(out_dir: str | Path = "demo_cohort_out", *, permutations: int = 2000, seed: int = 0,
                    threads: int | None = None, data_dir: str | Path | None = None,
                    progress: Callable[[int, int], None] | None = None, n_genes: int = 12000) -> pd.DataFrame:
    """GSEA of the SIMULATED confounded cohort without and with covariates (age, sex).

    Returns
    -------
    pandas.DataFrame
        Both result tables with a leading ``analysis`` column (``unadjusted``,
        ``adjusted for age and sex``), written to ``out_dir`` as ``results.tsv`` with one
        table per analysis beside it.
    """
    from .api import gsea, write_results
    from .io.output import check_output_dir

    check_output_dir(out_dir, create=False)
    folder = (Path(data_dir) if data_dir is not None else _default_cohort_dir()) / f"confounded_{n_genes}"
    series, platform = folder / SERIES_FILENAME, folder / PLATFORM_FILENAME
    if not (series.is_file() and platform.is_file()):
        logger.info("writing the SIMULATED confounded cohort (GEO series matrix + platform table) to %s", folder)
        series, platform = make_confounded_cohort(folder, n_genes=n_genes)
    gene_sets = demo_gene_sets(seed=DEFAULT_SEED, n_genes=n_genes)
    common = dict(groupby="disease state", case=CASE_LABEL, control=CONTROL_LABEL, chip=str(platform),
                  metric="student_t", permutations=permutations, seed=seed, threads=threads, progress=progress)
    analyses = {"unadjusted": gsea(str(series), None, gene_sets, **common),
                "adjusted for age and sex": gsea(str(series), None, gene_sets, covariates=["age", "gender"],
                                                 **common)}
    combined = pd.concat([table.assign(analysis=name)[["analysis", *table.columns]]
                          for name, table in analyses.items()], ignore_index=True)
    combined.attrs["run"] = {"demo": {"simulated": True, "description": __doc__.split("\n\n")[1].replace("\n", " "),
                                      "series_matrix": str(series), "platform": str(platform)},
                             "analyses": {name: table.attrs["run"] for name, table in analyses.items()},
                             "timings": {"total_seconds": sum(t.attrs["run"]["timings"]["total_seconds"]
                                                              for t in analyses.values())}}
    combined.attrs["per_contrast"] = analyses
    write_results(combined, out_dir)
    return combined


def format_cohort_summary(combined: pd.DataFrame) -> str:
    """Each JAK-STAT set's rank, NES and FDR without and with covariates."""
    lines = ["SIMULATED confounded cohort (not patient data): cases are older and more often male; age raises "
             f"the genes of {' and '.join(AGE_DRIVEN_SETS)}.", ""]
    header = f"  {'gene set':<26} {'':>3}{'unadjusted: rank':>17} {'NES':>6} {'FDR':>7}   " \
             f"{'age+sex: rank':>14} {'NES':>6} {'FDR':>7}"
    lines.append(header)
    tables = {name: part.reset_index(drop=True) for name, part in combined.groupby("analysis", sort=False)}
    plain, adjusted = tables["unadjusted"], tables["adjusted for age and sex"]
    for gene_set in [g for g in plain.gene_set if not str(g).startswith(SIM_PREFIX)]:
        a = plain.index[plain.gene_set == gene_set][0]
        b = adjusted.index[adjusted.gene_set == gene_set][0]
        marker = " *" if gene_set in AGE_DRIVEN_SETS else "  "
        lines.append(f"  {gene_set:<26}{marker} {a + 1:>17} {_number(plain.nes[a], '.2f'):>6} "
                     f"{_number(plain.fdr[a], '.3g'):>7}   {b + 1:>14} {_number(adjusted.nes[b], '.2f'):>6} "
                     f"{_number(adjusted.fdr[b], '.3g'):>7}")
    lines += ["", "  * driven by age in the simulation, not by the disease: adjusting for age and sex "
                  "(Freedman-Lane permutations) removes the false enrichment"]
    return "\n".join(lines)
