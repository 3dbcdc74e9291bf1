"""Phenotypes: CLS files, sample sheets, AnnData obs, and the two-group design built from them."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from permenrich.errors import ClassEmptiedError, InputError, OptionError, option
from permenrich.io.expression import (
    check_header_row,
    is_number,
    ExpressionData,
    _existing_file,
    _format_suffix,
    _preview,
    _read_text,
    _split_lines,
)

logger = logging.getLogger(__name__)

__all__ = ["TwoGroupDesign", "read_cls", "read_sample_sheet", "two_group_design", "design_from_phenotype"]

# Labels meaning "no value" in sample sheets and obs columns (a group, a covariate):
# pandas' default missing-value spellings that occur in sample annotations ("null" is left
# out: a genotype class may be called so).
_MISSING_LABELS = ("", "NA", "na", "N/A", "n/a", "#N/A", "<NA>", "nan", "NaN", "None")
_SHEET_SUFFIXES = {".tsv", ".txt", ".csv", ".tab"}
_MIN_PER_CLASS = 2


@dataclass
class TwoGroupDesign:
    """Which samples form the case and control groups.

    Attributes
    ----------
    is_case : numpy.ndarray
        bool, one entry per *kept* sample, in expression column order.
    keep : numpy.ndarray
        bool, one entry per sample of the expression data: in either group.
    case, control : str
        Class names. ``case`` is GSEA's phenotype "A" (positive scores mean higher in it).
    n_case, n_control : int
        Group sizes.
    source : str
        Where the labels came from, for messages.
    excluded : dict of str to int
        The other classes, left out, with their sample counts.
    """

    is_case: np.ndarray
    keep: np.ndarray
    case: str
    control: str
    n_case: int
    n_control: int
    source: str
    excluded: dict[str, int] = field(default_factory=dict)


def read_cls(path: str | Path) -> tuple[list[str], list[str]]:
    """Read a categorical CLS file.

    Parameters
    ----------
    path : str or Path
        Three lines: ``n_samples n_classes 1``; ``#`` followed by the class names; the
        labels, one per sample, separated by spaces or tabs. Labels may be class names
        or 0-based integers indexing the class names (GSEA accepts both).

    Returns
    -------
    class_names : list of str
        In header order.
    labels : list of str
        One class name per sample, in column order.

    Raises
    ------
    InputError
        A ``#numeric`` (continuous) CLS, counts that disagree with the header, or a
        label that is neither a class name nor a class index.
    """
    where = str(path)
    lines = _split_lines(_read_text(_existing_file(path, "CLS")))
    numbered = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    if numbered and numbered[0][1].lower().startswith("#numeric"):
        raise InputError(
            f"{where}: line {numbered[0][0]}: a #numeric (continuous) phenotype; use it with a correlation "
            f"metric ({option('metric', 'pearson')} or spearman), or give a categorical CLS for two classes"
        )
    if len(numbered) < 3:
        raise InputError(
            f"{where}: CLS file has {len(numbered)} non-blank lines; expected 3 "
            "('n_samples n_classes 1', '# class names', the labels)"
        )
    if len(numbered) > 3:
        raise InputError(
            f"{where}: line {numbered[3][0]}: unexpected extra line; a categorical CLS has exactly 3 lines "
            "(labels must all be on line 3)"
        )
    (line1, head), (line2, names_line), (line3, labels_line) = numbered
    try:
        counts = [int(x) for x in head.split()]
    except ValueError:
        counts = []
    if len(counts) != 3 or counts[0] < 1 or counts[1] < 1:
        raise InputError(
            f"{where}: line {line1}: expected three integers 'n_samples n_classes 1', found {head[:60]!r}"
        )
    n_samples, n_classes = counts[0], counts[1]
    if not names_line.startswith("#"):
        raise InputError(
            f"{where}: line {line2}: expected '#' followed by the class names, found {names_line[:60]!r}"
        )
    class_names = names_line[1:].split()
    if len(class_names) != n_classes:
        raise InputError(
            f"{where}: line {line2}: lists {len(class_names)} class names ({_preview(class_names)}) but line "
            f"{line1} declares {n_classes} classes; make the two agree"
        )
    if len(set(class_names)) != len(class_names):
        dup = pd.Index(class_names)[pd.Index(class_names).duplicated()][0]
        raise InputError(f"{where}: line {line2}: class name {dup!r} is listed twice; class names must be unique")
    labels = labels_line.split()
    if len(labels) != n_samples:
        raise InputError(
            f"{where}: line {line3}: has {len(labels)} labels but line {line1} declares {n_samples} samples; "
            "give one label per sample"
        )
    labels = _resolve_cls_labels(labels, class_names, where, line3)
    used = set(labels)
    if len(used) != n_classes:
        unused = [c for c in class_names if c not in used]
        raise InputError(
            f"{where}: line {line1} declares {n_classes} classes but the labels on line {line3} use "
            f"{len(used)} (never used: {_preview(unused)}); fix the class count and names"
        )
    return class_names, labels


def _resolve_cls_labels(labels: list[str], class_names: list[str], where: str, line: int) -> list[str]:
    """Labels as class names; integer labels index the class names (GSEA allows both)."""
    names = set(class_names)
    if all(label in names for label in labels):
        return labels
    resolved = []
    for column, label in enumerate(labels, start=1):
        if label in names:
            resolved.append(label)
            continue
        try:
            index = int(label)
        except ValueError:
            index = -1
        if not 0 <= index < len(class_names):
            raise InputError(
                f"{where}: line {line}, label {column}: {label!r} is neither a class name "
                f"({_preview(class_names)}) nor a class index 0..{len(class_names) - 1}"
            )
        resolved.append(class_names[index])
    return resolved


def read_sample_sheet(
    path: str | Path, column: str | None = None, sample_column: str | None = None
) -> pd.Series:
    """Read per-sample group labels from a table.

    Parameters
    ----------
    path : str or Path
        ``.csv`` (comma) or ``.tsv``/``.txt``/``.tab`` (tab) with a header row.
    column : str, optional
        The label column. Needed when the sheet has more than one column besides the
        sample ids.
    sample_column : str, optional
        The sample-id column; the first column by default.

    Returns
    -------
    pandas.Series
        Index: sample ids; values: labels as str. Empty and ``NA`` labels become ``""``
        (no group).

    Raises
    ------
    InputError
        A named column is absent, no label column is found or several are and
        ``column`` is not given, a sample id is empty or repeated.
    """
    where = str(path)
    file = _existing_file(path, "sample sheet")
    sep = "," if _format_suffix(file) == ".csv" else "\t"
    text = _read_text(file)  # UTF-8 or Latin-1 (as the other readers), UTF-16 refused
    try:
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(
            f"{where}: cannot parse the sample sheet ({str(exc).strip()}); "
            "expected a header row then one row per sample"
        ) from exc
    if not isinstance(table.index, pd.RangeIndex):
        # Header one field short (R's write.table): pandas made the ids the index.
        table = table.reset_index(names=[""] if table.index.nlevels == 1 else None)
    check_header_row(text, sep, where, "sample sheet")
    table.columns = [str(c).strip() for c in table.columns]
    columns = list(table.columns)
    if sample_column is None:
        sample_column = columns[0]
    elif sample_column not in columns:
        raise InputError(
            f"{where}: sample column {sample_column!r} not found; available columns: {_preview(columns, 10)}"
        )
    if column is None:
        candidates = [c for c in columns if c != sample_column]
        if len(candidates) != 1:
            what = (
                f"several label columns ({_preview(candidates, 10)})" if candidates
                else "no column besides the sample ids"
            )
            raise InputError(
                f"{where}: the sheet has {what}; name the group column with {option('groupby')}"
            )
        column = candidates[0]
    elif column not in columns:
        raise InputError(f"{where}: column {column!r} not found; available columns: {_preview(columns, 10)}")
    if table.empty:
        raise InputError(f"{where}: the sample sheet has a header but no sample rows")
    samples = table[sample_column].str.strip()
    # header is file line 1 (blank lines aside), so row i is line i + 2
    empty = np.flatnonzero(samples.eq("").to_numpy())
    if empty.size:
        raise InputError(f"{where}: line {empty[0] + 2}: sample id in column {sample_column!r} is empty")
    duplicated = samples.duplicated(keep=False).to_numpy()
    if duplicated.any():
        rows = np.flatnonzero(duplicated)
        first = samples.iloc[rows[0]]
        lines = np.flatnonzero(samples.eq(first).to_numpy())[:2] + 2
        raise InputError(
            f"{where}: sample {first!r} appears on lines {lines[0]} and {lines[1]}; each sample needs one row "
            f"(the sheet's sample ids are its column {sample_column!r})"
        )
    labels = table[column].str.strip().replace(list(_MISSING_LABELS), "")
    index = pd.Index(samples.to_numpy(dtype=object), name=sample_column)
    return pd.Series(labels.to_numpy(dtype=object), index=index, name=column)


#: ``control`` naming every sample of another class than ``case`` (one-vs-rest).
REST = "rest"


def _case_against_rest(labels: np.ndarray, case: str | None, source: str) -> np.ndarray:
    """``labels`` with every class but ``case`` relabelled :data:`REST` (unlabelled samples
    stay out), as the contrasts' one-vs-rest does."""
    if case is None:
        raise OptionError(f"{source}: {option('control', REST)} compares one class with all others; name that class "
                          f"with {option('case')}")
    if case == REST:
        raise OptionError(f"{source}: {option('case', REST)} with {option('control', REST)}: 'rest' means every "
                          "class but the case; choose a case class")
    if case not in set(labels):
        return labels  # refused below, listing the classes as given
    others = dict(zip(*np.unique(labels[(labels != case) & (labels != "")].astype(str), return_counts=True)))
    _warn_of_variants({str(c): int(n) for c, n in others.items()}, (case,), source, fate=f"counted in {REST!r}")
    return np.where(labels == case, case, np.where(labels == "", "", REST)).astype(object)


def two_group_design(
    labels: Sequence[str],
    *,
    case: str | None,
    control: str | None,
    class_order: Sequence[str] | None = None,
    source: str = "<labels>",
) -> TwoGroupDesign:
    """Choose case and control classes from per-sample labels.

    Parameters
    ----------
    labels : sequence of str
        One label per sample, in expression column order; ``""`` means no group.
    case, control : str or None
        The classes to compare. With exactly two classes either or both may be None:
        the missing one is the other class, and with both missing ``case`` is the first
        class (GSEA's phenotype "A"). ``control="rest"`` compares ``case`` with all other
        labelled samples (a class literally named ``rest`` is part of them).
    class_order : sequence of str, optional
        Class order, e.g. a CLS header; by default the order of first appearance.
    source : str
        Named in messages.

    Returns
    -------
    TwoGroupDesign

    Raises
    ------
    OptionError
        ``case`` or ``control`` is not a class, they are equal, or more than two classes
        exist and not both are given.
    InputError
        Fewer than two classes, or a chosen class has fewer than 2 samples.
    """
    # Labels are compared as text, as they are read: a number given as a class (an
    # integer obs column, case=1) is its text too ("1"; 1.0 is "1.0").
    case = case if case is None or isinstance(case, str) else str(case)
    control = control if control is None or isinstance(control, str) else str(control)
    labels_arr = np.array([str(label) for label in labels], dtype=object)
    if control == REST:
        labels_arr = _case_against_rest(labels_arr, case, source)
    present = list(dict.fromkeys(label for label in labels_arr if label != ""))
    if class_order is not None:
        ordered = [str(c) for c in class_order if str(c) in set(present)]
        present = ordered + [c for c in present if c not in set(ordered)]
    counts = {c: int((labels_arr == c).sum()) for c in present}
    listing = ", ".join(f"{c!r} ({counts[c]})" for c in present)

    for role, name in (("case", case), ("control", control)):
        if name is not None and name not in counts:
            raise OptionError(
                f"{source}: {option(role, name)} is not a class; classes (samples): {listing or 'none'}"
            )
    if case is not None and case == control:
        raise OptionError(f"{source}: {option('case')} and {option('control')} are both {case!r}; choose two "
                          "different classes")
    if len(present) < 2:
        raise InputError(
            f"{source}: found {len(present)} class ({listing or 'no labels'}); two classes are needed to compare"
        )
    if case is None or control is None:
        if len(present) > 2:
            raise OptionError(
                f"{source}: {len(present)} classes ({listing}); pass both {option('case')} and {option('control')} "
                "to choose two"
            )
        if case is None and control is None:
            case, control = present
        elif case is None:
            case = next(c for c in present if c != control)
        else:
            control = next(c for c in present if c != case)

    for name in (case, control):
        if counts[name] < _MIN_PER_CLASS:
            raise ClassEmptiedError(
                f"{source}: class {name!r} has {counts[name]} sample; each group needs at least "
                f"{_MIN_PER_CLASS} samples for a two-group test", str(name)
            )
    keep = (labels_arr == case) | (labels_arr == control)
    is_case = labels_arr[keep] == case
    excluded = {c: counts[c] for c in present if c not in (case, control)}
    _warn_of_variants(excluded, (case, control), source)
    return TwoGroupDesign(
        is_case=np.asarray(is_case, dtype=bool),
        keep=np.asarray(keep, dtype=bool),
        case=str(case),
        control=str(control),
        n_case=int(is_case.sum()),
        n_control=int((~is_case).sum()),
        source=source,
        excluded=excluded,
    )


def spelling_key(label: str) -> str:
    """A label without case, spaces, underscores and hyphens: what a variant spelling of
    the same class (or covariate level) shares with it."""
    return "".join(ch for ch in label.casefold() if not (ch.isspace() or ch in "_-"))


def _warn_of_variants(others: dict[str, int], chosen: tuple[str, ...], source: str, fate: str = "left out") -> None:
    """Other classes spelled like a compared one but for case and spacing ('all' beside
    'ALL') are most likely typos of it: said, not left out (or put in 'rest') quietly."""
    spellings = {spelling_key(c): c for c in chosen}
    variants = [(c, n, spellings[spelling_key(c)]) for c, n in others.items() if spelling_key(c) in spellings]
    if variants:
        verb = "is" if len(variants) == 1 else "are"
        logger.warning("%s: class%s %s %s spelled like the compared %s but for case or spacing, and %s %s; correct "
                       "the label if it is the same class", source, "es" * (len(variants) > 1),
                       ", ".join(f"{c!r} ({n} sample{'s' * (n != 1)})" for c, n, _ in variants), verb,
                       " and ".join(dict.fromkeys(repr(like) for _, _, like in variants)), verb, fate)


def design_from_phenotype(
    expr: ExpressionData,
    phenotype: str | Path | Sequence[str] | pd.Series | pd.DataFrame | None,
    *,
    groupby: str | None = None,
    case: str | None = None,
    control: str | None = None,
) -> TwoGroupDesign:
    """Build the two-group design for ``expr`` from any supported phenotype source.

    Parameters
    ----------
    expr : ExpressionData
        The expression data whose columns the labels describe.
    phenotype : str, Path, sequence, Series, DataFrame or None
        - ``.cls`` path: labels by column position (counts must match).
        - ``.tsv``/``.txt``/``.csv`` path: a sample sheet (see :func:`read_sample_sheet`)
          matched to ``expr.sample_ids`` by name; ``groupby`` names the label column.
        - a sequence of labels, one per sample (a pandas Categorical keeps its category
          order).
        - a Series indexed by sample id, or a DataFrame indexed by sample id with the
          ``groupby`` column; matched by name.
        - None: ``groupby`` names a column of ``expr.obs`` (h5ad/AnnData input).
    groupby : str, optional
        Label column of a sample sheet, DataFrame or ``expr.obs``.
    case, control : str, optional
        See :func:`two_group_design`.

    Returns
    -------
    TwoGroupDesign

    Raises
    ------
    InputError
        Counts or sample names that do not match the expression data, or a missing
        column; see also :func:`two_group_design`.
    """
    class_order: list[str] | None = None
    if isinstance(phenotype, (str, Path)):
        file = _existing_file(phenotype, "phenotype")
        source = str(phenotype)
        suffix = _format_suffix(file)
        if suffix == ".cls":
            if groupby is not None:  # would be ignored: the CLS is the one label column
                raise OptionError(f"{source}: {option('groupby', groupby)} names a column of a sample sheet or of the "
                                  f"data's obs, and a CLS file holds only the labels; drop {option('groupby')} or "
                                  "give a sample sheet")
            class_order, cls_labels = read_cls(phenotype)
            if len(cls_labels) != expr.n_samples:
                raise InputError(
                    f"{source}: has {len(cls_labels)} labels but {expr.source} has {expr.n_samples} samples; "
                    "the CLS must label every expression column, in order"
                )
            labels = cls_labels
        else:
            if suffix not in _SHEET_SUFFIXES:
                raise InputError(
                    f"{source}: unknown phenotype file type {suffix!r}; "
                    "expected .cls or a sample sheet (.tsv, .txt, .csv)"
                )
            sheet = read_sample_sheet(phenotype, column=groupby)
            labels = _match_by_sample(expr, sheet, source)
    elif phenotype is None:
        if groupby is None:
            raise OptionError(f"no phenotype given: pass a CLS file or sample sheet ({option('phenotype')}), or "
                              f"{option('groupby')} naming an obs column")
        if expr.obs is None:
            raise InputError(
                f"{expr.source}: {option('groupby', groupby)} needs per-sample annotations (h5ad obs), which this "
                "input lacks; pass a CLS file or sample sheet instead"
            )
        source = f"{expr.source} obs[{groupby!r}]"
        if groupby not in expr.obs.columns:
            raise InputError(
                f"{expr.source}: obs has no column {groupby!r}; "
                f"available columns: {_preview(list(expr.obs.columns), 10)}"
            )
        column = expr.obs[groupby]
        labels = _match_by_sample(expr, column, source)
        class_order = _categories(column)
    elif isinstance(phenotype, pd.DataFrame):
        source = "<DataFrame>"
        if groupby is None or groupby not in phenotype.columns:
            given = f"no {option('groupby')} given" if groupby is None else f"column {groupby!r} not found"
            raise InputError(
                f"{source}: {given}; name the group column with {option('groupby')}, available columns: "
                f"{_preview([str(c) for c in phenotype.columns], 10)}"
            )
        column = phenotype[groupby]
        labels = _match_by_sample(expr, column, source)
        class_order = _categories(column)
    elif isinstance(phenotype, pd.Series):
        source = "<Series>"
        labels = _match_by_sample(expr, phenotype, source)
        class_order = _categories(phenotype)
    else:
        source = "<labels>"
        values = list(phenotype)
        if len(values) != expr.n_samples:
            raise InputError(
                f"{source}: {len(values)} labels given but {expr.source} has {expr.n_samples} samples; "
                "give one label per expression column, in order"
            )
        labels = [_label(v) for v in values]
        class_order = _categories(phenotype)
    design = two_group_design(labels, case=case, control=control, class_order=class_order, source=source)
    n_dropped = int((~design.keep).sum())
    n_unlabelled = sum(1 for label in labels if label == "")
    if n_unlabelled:
        # missing labels are data problems more often than choices: say so louder
        logger.warning("%s: %d of %d samples have no group label (empty or NA) and are left out", source,
                       n_unlabelled, expr.n_samples)
    if n_dropped > n_unlabelled:
        logger.info(
            "%s: %d of %d samples are in neither %r nor %r and are left out (%s)",
            source, n_dropped - n_unlabelled, expr.n_samples, design.case, design.control,
            ", ".join(f"{c!r}: {n}" for c, n in design.excluded.items()),
        )
    return design


def is_missing(text: str) -> bool:
    """Whether an annotation's text means "no value" (empty, NA, nan, null, ...)."""
    return text.strip() in _MISSING_LABELS


def _label(value: Any) -> str:
    """A label as str; missing values mean no group."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    text = str(value).strip()
    return "" if is_missing(text) else text


def clean_labels(values: pd.Series) -> pd.Series:
    """Labels as the design reads them (:func:`_label`), vectorised: text stripped,
    missing values and the texts that mean "no value" as ``pd.NA`` (dtype ``string``).
    Grouping cells by these (pseudobulk, tl's groups) joins 'T ' to 'T' as the design
    does, and leaves 'nan' out."""
    text = values.astype("string").str.strip()
    return text.mask(text.isin(_MISSING_LABELS))


def _categories(values: Any) -> list[str] | None:
    """Category order of a categorical, so that the first category is the case by default."""
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.CategoricalDtype):
        return [str(c) for c in dtype.categories]
    return None


def _match_by_sample(expr: ExpressionData, labels: pd.Series, source: str) -> list[str]:
    """Labels in expression column order, looked up by sample name."""
    index = pd.Index([str(s) for s in labels.index])
    if index.has_duplicates:
        raise InputError(f"{source}: sample {index[index.duplicated()][0]!r} is listed more than once")
    by_name = pd.Series(np.asarray(labels, dtype=object), index=index)
    missing = [s for s in expr.sample_ids if s not in by_name.index]
    if missing:
        raise InputError(
            f"{source}: {len(missing)} of {expr.n_samples} samples of {expr.source} have no label "
            f"(e.g. {_preview(missing, 3)}); sheet samples look like {_preview(list(index[:3]), 3)}; "
            "add them or check that the sample names match"
            + (f" (the sheet's sample ids are its column {labels.index.name!r})"
               if labels.index.name and source != "<DataFrame>" else "")
        )
    matrix_samples = set(expr.sample_ids)
    absent = [s for s in index if s not in matrix_samples]
    if absent:
        # Often a subset on purpose; but a sample column the reader took for text (decimal
        # commas, 'n/a') also lands here, and must not vanish without a word.
        logger.warning("%s: %d of its %d samples are not sample columns of %s (e.g. %s) and are left out; if they "
                       "are columns there, their values are not numbers", source, len(absent), len(index),
                       expr.source, _preview(absent, 3))
    return [_label(v) for v in by_name.loc[list(expr.sample_ids)].to_numpy()]


def read_numeric_cls(path: str | Path, name: str | None = None) -> tuple[str, np.ndarray]:
    """Read a ``#numeric`` CLS (continuous phenotypes).

    Parameters
    ----------
    path : str or Path
        Line 1 ``#numeric``; then pairs of lines: ``#name`` and the values, one per sample.
    name : str, optional
        Which phenotype to take when the file holds several (default: the first).

    Returns
    -------
    (name, values) : the phenotype's name and float64 values in column order.
    """
    where = str(path)
    lines = _split_lines(_read_text(_existing_file(path, "CLS")))
    numbered = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    if not numbered or not numbered[0][1].lower().startswith("#numeric"):
        raise InputError(f"{where}: line 1: expected '#numeric' for a continuous phenotype")
    body = numbered[1:]
    if len(body) < 2 or len(body) % 2:
        raise InputError(f"{where}: a #numeric CLS needs pairs of lines ('#name', then the values)")
    found: dict[str, tuple[int, str]] = {}
    for (name_line, label), (value_line, values) in zip(body[0::2], body[1::2]):
        if not label.startswith("#"):
            raise InputError(f"{where}: line {name_line}: expected '#name' of a phenotype, got {label[:30]!r}")
        phenotype = label[1:].strip()
        if phenotype in found:
            raise InputError(f"{where}: line {name_line}: phenotype {phenotype!r} is named again (first on line "
                             f"{found[phenotype][0] - 1}); give each phenotype its own name")
        found[phenotype] = (value_line, values)
    chosen = name if name is not None else next(iter(found))
    if name is None and len(found) > 1:
        logger.warning("%s: holds %d phenotypes (%s); correlating with the first, %r (choose another with %s)",
                       where, len(found), _preview(list(found), 5), chosen, option("phenotype_column"))
    if chosen not in found:
        raise InputError(f"{where}: phenotype {chosen!r} not found; the file has {_preview(list(found), 10)}")
    line, text = found[chosen]
    fields = text.replace("\t", " ").split()
    try:
        values = np.array([float(f) for f in fields])
    except ValueError:
        bad = next(f for f in fields if not is_number(f))
        raise InputError(f"{where}: line {line}: value {bad!r} is not a number") from None
    return chosen, values


def is_sample_sheet(path: str | Path) -> bool:
    """Whether a phenotype path is a sample sheet (by its extension), not a CLS file."""
    return _format_suffix(Path(path)) in _SHEET_SUFFIXES


def sample_annotation(expr: ExpressionData, phenotype: Any, column: str, *, what: str) -> np.ndarray:
    """One per-sample annotation column (strata, pairs, a numeric phenotype) in expression
    column order, from the same sources as :func:`design_from_phenotype`: a sample sheet
    path, a DataFrame indexed by sample id, or ``expr.obs``.

    Returns
    -------
    ndarray of object (str), length n_samples; "" where missing.
    """
    if isinstance(phenotype, (str, Path)) and is_sample_sheet(phenotype):
        sheet = read_sample_sheet(phenotype, column=column)
        return np.array(_match_by_sample(expr, sheet, str(phenotype)), dtype=object)
    if isinstance(phenotype, pd.DataFrame):
        if column not in phenotype.columns:
            raise InputError(f"<DataFrame>: {what} column {column!r} not found; available columns: "
                             f"{_preview([str(c) for c in phenotype.columns], 10)}")
        return np.array(_match_by_sample(expr, phenotype[column], "<DataFrame>"), dtype=object)
    if expr.obs is not None:
        if column not in expr.obs.columns:
            raise InputError(f"{expr.source}: {what} column {column!r} not in obs; available columns: "
                             f"{_preview([str(c) for c in expr.obs.columns], 10)}")
        return np.array([_label(v) for v in expr.obs[column].to_numpy()], dtype=object)
    raise InputError(f"{what} column {column!r} needs a sample sheet with that column ({option('phenotype')}: a "
                     "CLS holds only the labels) or an h5ad whose obs has it")


def continuous_phenotype(expr: ExpressionData, phenotype: Any, column: str | None) -> tuple[str, np.ndarray]:
    """A numeric phenotype per sample: from a ``#numeric`` CLS, a sequence of numbers, or
    ``column`` of a sample sheet / DataFrame / ``expr.obs``. Missing values are errors."""
    if isinstance(phenotype, (str, Path)) and _format_suffix(Path(phenotype)) == ".cls":
        name, values = read_numeric_cls(phenotype, column)
        source = str(phenotype)
        if values.size != expr.n_samples:
            raise InputError(f"{source}: has {values.size} values but {expr.source} has {expr.n_samples} samples; give "
                             "one value per sample, in the matrix's column order")
    elif column is None:
        if phenotype is None or isinstance(phenotype, (str, Path)):
            raise InputError(f"a continuous phenotype needs {option('phenotype_column')} (a sample sheet or obs "
                             "column) or a #numeric CLS")
        name, source = "phenotype", "<phenotype>"
        values = np.asarray(phenotype, dtype=object)
        if values.size != expr.n_samples:
            raise InputError(f"<phenotype>: has {values.size} values but {expr.source} has {expr.n_samples} samples")
        values = np.array([_label(v) for v in values], dtype=object)
    else:
        name = column
        source = str(phenotype) if isinstance(phenotype, (str, Path)) else expr.source
        values = sample_annotation(expr, phenotype, column, what="phenotype")
    numbers = np.empty(len(values))
    for i, v in enumerate(values):
        text = str(v).strip()
        if text == "" or not is_number(text):
            raise InputError(f"{source}: phenotype {name!r} of sample {expr.sample_ids[i]!r} is {text!r}, "
                             "not a number; give every sample a numeric value")
        numbers[i] = float(text)
    if not np.isfinite(numbers).all():
        bad = int(np.flatnonzero(~np.isfinite(numbers))[0])
        raise InputError(f"{source}: phenotype {name!r} of sample {expr.sample_ids[bad]!r} is not finite")
    if np.ptp(numbers) == 0:
        raise InputError(f"{source}: phenotype {name!r} is the same for every sample; nothing to correlate with")
    return name, numbers
