"""The SIMULATED three-study demo: a meta-analysis across platforms.

The demo cohort's simulator (:mod:`permenrich.demo`) draws three small VTE-like
studies of the same genes, each with its own samples: two microarray series on
different platforms (one a GEO series matrix with a GEO platform table, probe ids
``GPL0_...``; one a GCT with a GSEA CHIP file, probe ids ``ILMN_...``) and one RNA-seq
study of counts (genes as symbols, ``normalize=log1p_cpm``). With a dozen samples per
class, the JAK-STAT signal is weak in each study; the Stouffer meta-analysis of the
three, permuting labels within every study at once, finds it clearly. The data are
SIMULATED, not patient data.
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

MANIFEST_FILENAME = "studies.tsv"
#: (study name, cases, controls); each study draws its own samples from the simulator.
STUDIES = (("GSE_ARRAY_A", 12, 12), ("GSE_ARRAY_B", 10, 12), ("GSE_RNASEQ", 12, 10))
_LIBRARY_SIZE = 2e7  # RNA-seq reads per sample


def make_meta_studies(folder: str | Path, *, seed: int = DEFAULT_SEED, n_genes: int = 12000) -> Path:
    """Write the three SIMULATED studies and their manifest; returns the manifest path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = _build_layout(seed, n_genes, _read_jak_stat_sets())
    genes = [str(g) for g in layout.gene_names]
    rows = []
    for index, (name, n_cases, n_controls) in enumerate(STUDIES):
        simulated = _simulate(layout, seed + 1000 * (index + 1), n_cases, n_controls)
        values = simulated["values"].astype(np.float64).T  # genes x samples, log2 scale
        labels = np.where(simulated["is_case"], CASE_LABEL, CONTROL_LABEL)
        samples = [f"{name}_S{j:03d}" for j in range(labels.size)]
        rng = _rng(seed + index, 11)
        order = rng.permutation(n_genes)  # each platform lists its features in its own order
        if index == 0:
            rows.append(_write_series(folder, name, values[order], [genes[i] for i in order], labels, samples))
        elif index == 1:
            rows.append(_write_gct(folder, name, values[order], [genes[i] for i in order], labels, samples))
        else:
            rows.append(_write_counts(folder, name, values[order], [genes[i] for i in order], labels, samples, rng))
    manifest = folder / MANIFEST_FILENAME
    header = ["study", "expr", "phenotype", "groupby", "case", "control", "chip", "normalize"]
    manifest.write_text("# SIMULATED studies (permenrich demo, not patient data)\n" + "\t".join(header) + "\n"
                        + "".join("\t".join(row.get(c, "") for c in header) + "\n" for row in rows))
    return manifest


def _write_series(folder: Path, name: str, values: np.ndarray, genes: list[str], labels: np.ndarray,
                  samples: list[str]) -> dict[str, str]:
    """A GEO series matrix (characteristics ``disease state``) and a GEO platform table."""
    probes = [f"GPL0_{i:05d}_at" for i in range(len(genes))]
    quoted = lambda items: "\t".join(f'"{item}"' for item in items)  # noqa: E731
    series, platform = f"{name}_series_matrix.txt.gz", f"{name}_platform.soft.gz"
    with gzip.open(folder / series, "wt") as handle:
        handle.write(f'!Series_title\t"SIMULATED VTE-like study {name} (permenrich demo, not patient data)"\n')
        handle.write("!Sample_geo_accession\t" + quoted(samples) + "\n")
        handle.write("!Sample_characteristics_ch1\t" + quoted(f"disease state: {label}" for label in labels) + "\n")
        handle.write("!series_matrix_table_begin\n" + '"ID_REF"\t' + quoted(samples) + "\n")
        for probe, row in zip(probes, values):
            handle.write(f'"{probe}"\t' + "\t".join(f"{v:.5f}" for v in row) + "\n")
        handle.write("!series_matrix_table_end\n")
    with gzip.open(folder / platform, "wt") as handle:
        handle.write("^PLATFORM = GPL0\n!Platform_title = SIMULATED demo array A\n!platform_table_begin\n")
        handle.write("ID\tGene Symbol\n" + "".join(f"{p}\t{g}\n" for p, g in zip(probes, genes)))
        handle.write("!platform_table_end\n")
    return {"study": name, "expr": series, "groupby": "disease state", "case": CASE_LABEL, "control": CONTROL_LABEL,
            "chip": platform}


def _write_gct(folder: Path, name: str, values: np.ndarray, genes: list[str], labels: np.ndarray,
               samples: list[str]) -> dict[str, str]:
    """A GCT of ILMN_ probe ids, a CLS file and a GSEA CHIP file."""
    probes = [f"ILMN_{1_000_000 + i}" for i in range(len(genes))]
    lines = ["#1.2", f"{len(probes)}\t{len(samples)}", "\t".join(["NAME", "Description", *samples])]
    lines += ["\t".join([p, "na", *(f"{v:.5f}" for v in row)]) for p, row in zip(probes, values)]
    (folder / f"{name}.gct").write_text("\n".join(lines) + "\n")
    (folder / f"{name}.cls").write_text(f"{len(labels)} 2 1\n# {CASE_LABEL} {CONTROL_LABEL}\n{' '.join(labels)}\n")
    (folder / f"{name}.chip").write_text("Probe Set ID\tGene Symbol\tGene Title\n"
                                         + "".join(f"{p}\t{g}\tna\n" for p, g in zip(probes, genes)))
    return {"study": name, "expr": f"{name}.gct", "phenotype": f"{name}.cls", "case": CASE_LABEL,
            "control": CONTROL_LABEL, "chip": f"{name}.chip"}


def _write_counts(folder: Path, name: str, values: np.ndarray, genes: list[str], labels: np.ndarray,
                  samples: list[str], rng: np.random.Generator) -> dict[str, str]:
    """RNA-seq counts (Poisson around the simulated log2 abundance) and a CLS file."""
    abundance = np.exp2(values - values.max())
    expected = abundance / abundance.sum(axis=0) * _LIBRARY_SIZE
    counts = rng.poisson(expected)
    table = pd.DataFrame(counts, index=pd.Index(genes, name="gene"), columns=samples)
    table.to_csv(folder / f"{name}_counts.tsv", sep="\t")
    (folder / f"{name}.cls").write_text(f"{len(labels)} 2 1\n# {CASE_LABEL} {CONTROL_LABEL}\n{' '.join(labels)}\n")
    return {"study": name, "expr": f"{name}_counts.tsv", "phenotype": f"{name}.cls", "case": CASE_LABEL,
            "control": CONTROL_LABEL, "normalize": "log1p_cpm"}


def run_meta_demo(out_dir: str | Path = "demo_meta_out", *, permutations: int = 2000, seed: int = 0,
                  threads: int | None = None, data_dir: str | Path | None = None,
                  progress: Callable[[int, int], None] | None = None, n_genes: int = 12000) -> pd.DataFrame:
    """GSEA of each SIMULATED study alone and the Stouffer meta-analysis of the three
    (with leave-one-out), on the JAK-STAT sets among simulated background sets.

    Returns
    -------
    pandas.DataFrame
        The meta-analysis table, with ``fdr_<study>`` (each study's own GSEA FDR) beside
        its columns; written to ``out_dir``.
    """
    from .api import gsea, meta, write_results
    from .io.output import check_output_dir
    from .modes.meta import read_manifest

    check_output_dir(out_dir, create=False)
    folder = (Path(data_dir) if data_dir is not None else _default_cohort_dir()) / f"meta_{n_genes}"
    manifest = folder / MANIFEST_FILENAME
    if not manifest.is_file():
        logger.info("writing the three SIMULATED studies and their manifest to %s", folder)
        manifest = make_meta_studies(folder, n_genes=n_genes)
    gene_sets = demo_gene_sets(seed=DEFAULT_SEED, n_genes=n_genes)
    common = dict(permutations=permutations, seed=seed, threads=threads, metric="welch_t")
    combined = meta(str(manifest), gene_sets, mode="gsea", leave_one_out=True, progress=progress, **common)
    for study in read_manifest(manifest):
        name = study.pop("name")
        alone = gsea(study.pop("expr"), study.pop("phenotype", None), gene_sets, **study, **common)
        combined[f"fdr_{name}"] = combined.gene_set.map(alone.set_index("gene_set").fdr)
    combined.attrs["run"]["demo"] = {"simulated": True, "description": __doc__.split("\n\n")[1].replace("\n", " "),
                                     "manifest": str(manifest)}
    write_results(combined, out_dir)
    return combined


def format_meta_summary(table: pd.DataFrame, top: int = 8) -> str:
    """The JAK-STAT sets: FDR in each study alone and in the meta-analysis."""
    studies = [c[len("fdr_"):] for c in table.columns if c.startswith("fdr_") and "_without_" not in c]
    jak = table[~table.gene_set.str.startswith(SIM_PREFIX)].head(top)
    header = f"{'gene set':<32} {'NES':>6} {'FDR meta':>9} " + " ".join(f"{s:>12}" for s in studies)
    lines = ["SIMULATED data (three studies, not patient data): JAK-STAT sets, FDR of the meta-analysis "
             "and of each study alone", header]
    for _, row in jak.iterrows():
        lines.append(f"{row.gene_set[:32]:<32} {_number(row.nes, '6.2f')} {_number(row.fdr, '9.3g')} "
                     + " ".join(f"{_number(row[f'fdr_{s}'], '12.3g')}" for s in studies))
    significant = int((jak.fdr < 0.05).sum())
    alone = {s: int((table[~table.gene_set.str.startswith(SIM_PREFIX)][f"fdr_{s}"] < 0.05).sum()) for s in studies}
    lines.append(f"\nJAK-STAT sets at FDR < 0.05: {significant} in the meta-analysis; "
                 + ", ".join(f"{n} in {s} alone" for s, n in alone.items()))
    return "\n".join(lines)
