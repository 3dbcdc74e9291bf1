"""Readers for expression, phenotype, gene-set and CHIP files, and the output writers.

Formats and the bad-input policy follow ``shared/FORMATS.md``: every user mistake raises
:class:`~permenrich.errors.InputError` with one line naming the file, the place and the fix.
"""

from permenrich.io.chip import apply_chip, read_chip
from permenrich.io.chunked import Block, MatrixSource, open_matrix
from permenrich.io.expression import ExpressionData, collapse_duplicates, read_expression
from permenrich.io.genesets import GeneSet, iter_gene_sets, read_gene_sets, read_gmt, read_gmx
from permenrich.io.genelist import read_gene_list
from permenrich.io.output import (
    atomic_write_table,
    atomic_write_text,
    check_output_dir,
    output_lock,
    write_output_dir,
)
from permenrich.io.phenotype import (
    TwoGroupDesign,
    continuous_phenotype,
    design_from_phenotype,
    read_cls,
    read_numeric_cls,
    read_sample_sheet,
    sample_annotation,
    two_group_design,
)
from permenrich.io.rnk import RankedList, read_rnk

__all__ = [
    "ExpressionData",
    "read_expression",
    "collapse_duplicates",
    "read_chip",
    "apply_chip",
    "TwoGroupDesign",
    "read_cls",
    "read_sample_sheet",
    "two_group_design",
    "design_from_phenotype",
    "continuous_phenotype",
    "read_numeric_cls",
    "sample_annotation",
    "GeneSet",
    "read_gmt",
    "read_gmx",
    "read_gene_sets",
    "iter_gene_sets",
    "check_output_dir",
    "output_lock",
    "write_output_dir",
    "atomic_write_text",
    "atomic_write_table",
    "RankedList",
    "read_rnk",
    "read_gene_list",
    "Block",
    "MatrixSource",
    "open_matrix",
]
