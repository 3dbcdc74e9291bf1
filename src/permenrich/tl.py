"""Tools in scanpy's style: every group of an ``obs`` column against a reference, with the
results stored in the AnnData (``permenrich.tl.gsea(adata, sets, groupby="cell_type")``).

Each function runs the public function of its mode (:func:`permenrich.gsea`,
:func:`permenrich.genes`, :func:`permenrich.ora`) once per group, ``case=group`` and
``control=reference``, so a stored table equals, value for value, the direct call with
those arguments. What is stored, under ``adata.uns["permenrich"][key_added]``:

``results``
    One long DataFrame: the mode's result table of every group, with a leading
    ``group`` column (groups in ``groups`` order).
``params``
    The mode, ``groupby``, ``reference``, ``groups``, ``layer``, ``use_raw`` and the
    options passed on (those that are plain values).
``runs``
    Each group's run provenance (what ``run.json`` holds), as JSON text: a DataFrame
    indexed by group with one column ``run`` (``json.loads(stored["runs"].loc["NK",
    "run"])``), so the AnnData can be written to h5ad whatever the groups' names (a
    ``/``, as in ``CD4+/CD25 T Reg``, may not be a key of an h5 store).

As scanpy does, ``copy=False`` (default) adds to ``adata`` and returns None;
``copy=True`` returns a changed copy and leaves ``adata`` as it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from .errors import ClassEmptiedError, InputError, OptionError, option
from .io.phenotype import REST, clean_labels

logger = logging.getLogger("permenrich")

__all__ = ["gsea", "genes", "ora"]

#: Options that tl's own arguments set for each group; passing them as well is refused.
_SET_PER_GROUP = ("expr", "phenotype", "groupby", "case", "control", "gene_list")


def gsea(
    adata: Any,
    gene_sets: Any,
    groupby: str,
    *,
    groups: Sequence[str] | None = None,
    reference: str = REST,
    key_added: str = "permenrich_gsea",
    copy: bool = False,
    layer: str | None = None,
    use_raw: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Phenotype-permutation GSEA of each group of ``groupby`` against ``reference``.

    Parameters
    ----------
    adata
        An ``anndata.AnnData`` (cells or samples x genes).
    gene_sets
        GMT/GMX path(s), or a mapping of set name to gene list.
    groupby
        The ``obs`` column whose groups are compared, e.g. ``"cell_type"``.
    groups
        The groups to test (default: every group of ``groupby`` but ``reference``).
    reference
        ``"rest"`` (default: all other cells) or one group of ``groupby``.
    key_added
        Key under ``adata.uns["permenrich"]`` (default ``"permenrich_gsea"``).
    copy
        Return a changed copy instead of adding to ``adata``.
    layer, use_raw
        Analyse ``adata.layers[layer]`` or ``adata.raw.X`` instead of ``X`` (None or
        False: ``X``).
    **kwargs
        Options of :func:`permenrich.gsea` (``permutations``, ``seed``, ``metric``,
        ``pseudobulk``, ``strata``, ``normalize``, ...).

    Returns
    -------
    anndata.AnnData or None
        The copy with ``copy=True``; None otherwise (``adata`` is changed).

    Raises
    ------
    PermenrichError
        Not an AnnData, an unknown column or group, an option set by ``groupby``/
        ``groups``/``reference`` given again, or any error of :func:`permenrich.gsea`.
    """
    from .api import gsea as run_gsea

    return _each_group("gsea", lambda data, **options: run_gsea(data, None, gene_sets, **options), adata, groupby,
                       groups=groups, reference=reference, key_added=key_added, copy=copy, layer=layer,
                       use_raw=use_raw, options=kwargs)


def genes(
    adata: Any,
    groupby: str,
    *,
    groups: Sequence[str] | None = None,
    reference: str = REST,
    key_added: str = "permenrich_genes",
    copy: bool = False,
    layer: str | None = None,
    use_raw: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Per-gene permutation tests (maxT) of each group of ``groupby`` against ``reference``.

    Parameters
    ----------
    adata, groupby, groups, reference, copy, layer, use_raw
        As in :func:`gsea`.
    key_added
        Key under ``adata.uns["permenrich"]`` (default ``"permenrich_genes"``).
    **kwargs
        Options of :func:`permenrich.genes`.

    Returns
    -------
    anndata.AnnData or None
        As in :func:`gsea`.
    """
    from .api import genes as run_genes

    return _each_group("genes", lambda data, **options: run_genes(data, None, **options), adata, groupby,
                       groups=groups, reference=reference, key_added=key_added, copy=copy, layer=layer,
                       use_raw=use_raw, options=kwargs)


def ora(
    adata: Any,
    gene_sets: Any,
    groupby: str,
    *,
    groups: Sequence[str] | None = None,
    reference: str = REST,
    key_added: str = "permenrich_ora",
    copy: bool = False,
    layer: str | None = None,
    use_raw: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Over-representation of each group's altered genes (expression mode of
    :func:`permenrich.ora`), each group of ``groupby`` against ``reference``.

    Parameters
    ----------
    adata, gene_sets, groupby, groups, reference, copy, layer, use_raw
        As in :func:`gsea`.
    key_added
        Key under ``adata.uns["permenrich"]`` (default ``"permenrich_ora"``).
    **kwargs
        Options of :func:`permenrich.ora`; the selection rule ``top=`` or ``fdr=`` is
        required.

    Returns
    -------
    anndata.AnnData or None
        As in :func:`gsea`.
    """
    from .api import ora as run_ora

    return _each_group("ora", lambda data, **options: run_ora(None, gene_sets, expr=data, **options), adata,
                       groupby, groups=groups, reference=reference, key_added=key_added, copy=copy, layer=layer,
                       use_raw=use_raw, options=kwargs)


def _each_group(mode: str, run: Callable[..., pd.DataFrame], adata: Any, groupby: str, *,
                groups: Sequence[str] | None, reference: str, key_added: str, copy: bool, layer: str | None,
                use_raw: bool | None, options: dict[str, Any]) -> Any:
    """Run ``run`` for each chosen group against ``reference`` and store the tables."""
    import anndata

    if not isinstance(adata, anndata.AnnData):
        raise InputError(f"permenrich.tl.{mode} needs an AnnData, got {type(adata).__name__}; for files and "
                         f"DataFrames use permenrich.{mode}")
    given_twice = [name for name in _SET_PER_GROUP if name in options]
    if given_twice:
        raise OptionError(f"permenrich.tl.{mode}: {option(given_twice[0])} is set for each group by groupby=, "
                          "groups= and reference=; drop it")
    if not isinstance(key_added, str) or not key_added:
        raise OptionError(f"key_added must be a non-empty string, got {key_added!r}")
    if "/" in key_added:  # h5ad would store it as nested groups, and read it back as such
        raise OptionError(f"key_added={key_added!r}: '/' cannot be part of a key that an h5ad file keeps; use "
                          "another character")
    if copy and getattr(adata, "isbacked", False):  # found only after every permutation had run
        raise OptionError(f"permenrich.tl.{mode}: copy=True needs an AnnData in memory, and this one is backed by "
                          f"{adata.filename}: use copy=False (the results go to its uns), or adata.to_memory()")
    import inspect

    from . import api

    unknown = sorted(set(options) - set(inspect.signature(getattr(api, mode)).parameters))
    if unknown:  # (a TypeError from the run otherwise)
        raise OptionError(f"permenrich.tl.{mode}: unknown option {unknown[0]!r}; it takes the options of "
                          f"permenrich.{mode}")
    from .stats.metrics import get_metric

    metric = options.get("metric")
    if isinstance(metric, str) and get_metric(metric).kind == "correlation":
        raise OptionError(f"permenrich.tl.{mode} compares groups of {groupby!r}; metric {metric!r} correlates with a "
                          f"numeric phenotype: use permenrich.{mode} with phenotype_column=")
    chosen, reference = _groups(adata.obs, groupby, groups, reference)
    use_raw = bool(use_raw)  # None (scanpy's "not given") reads X, as False does
    parts = []
    runs: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for group in chosen:
        try:
            table = run(adata, groupby=groupby, case=group, control=reference, layer=layer, use_raw=use_raw,
                        **options)
        except (InputError, OptionError) as error:
            # Running every group: one that cannot be tested (too rare to pseudobulk at
            # min_cells, a single sample or pseudo-sample) should not discard the others;
            # a group asked for by name still stops, and so does any other error (a
            # missing layer, a normalisation the matrix refuses): every group would meet it.
            said = f"permenrich.tl.{mode}: group {group!r}: {error}"
            untestable = isinstance(error, ClassEmptiedError) and error.level == str(group)
            if groups is not None or len(skipped) + 1 == len(chosen) or not untestable:
                raise (ClassEmptiedError(said, error.level) if isinstance(error, ClassEmptiedError)
                       else type(error)(said)) from None
            logger.warning("%s; the group is left out", said)
            skipped[group] = str(error)
            continue
        runs[group] = json.dumps(table.attrs["run"], default=str)
        part = pd.DataFrame(table, copy=True)
        part.attrs = {}  # provenance goes to "runs"; attrs would not survive writing the AnnData
        part.insert(0, "group", group)
        parts.append(part)
    results = pd.concat(parts, ignore_index=True)
    params = {"mode": mode, "groupby": groupby, "reference": reference,
              "groups": [g for g in chosen if g not in skipped], "layer": layer, "use_raw": use_raw,
              **({"skipped_groups": json.dumps(skipped)} if skipped else {}),
              **{name: value for name, value in options.items() if isinstance(value, (str, int, float, bool))}}
    target = adata.copy() if copy else adata
    store = dict(target.uns.get("permenrich", {}))
    runs_table = pd.DataFrame({"run": list(runs.values())}, index=pd.Index(list(runs), name="group", dtype=object))
    store[key_added] = {"results": results, "params": {k: v for k, v in params.items() if v is not None},
                        "runs": runs_table}
    target.uns["permenrich"] = store
    return target if copy else None


def _groups(obs: pd.DataFrame, groupby: str, groups: Sequence[str] | None, reference: str
            ) -> tuple[list[str], str]:
    """The groups to test (str, in the column's category order, else sorted) and the
    reference, checked against ``obs[groupby]``."""
    if groupby not in obs.columns:
        raise InputError(f"<AnnData>: obs has no column {groupby!r}; available columns: "
                         f"{', '.join(map(repr, list(obs.columns)[:10])) or 'none'}")
    column = obs[groupby]
    present = set(clean_labels(column).dropna())  # as the design reads them: 'T ' is 'T', 'nan' no group
    if isinstance(column.dtype, pd.CategoricalDtype):
        levels = list(dict.fromkeys(str(c).strip() for c in column.cat.categories if str(c).strip() in present))
    else:
        levels = sorted(present)
    listing = ", ".join(map(repr, levels[:10])) + (", ..." if len(levels) > 10 else "")
    reference = str(reference).strip()
    if reference != REST and reference not in present:
        raise OptionError(f"reference={reference!r} is not a group of obs[{groupby!r}] ({listing}); give one of them "
                          f"or {REST!r}")
    if groups is None:
        chosen = [level for level in levels if level != reference]
    else:
        if isinstance(groups, str):
            groups = [groups]
        chosen = list(dict.fromkeys(str(g).strip() for g in groups))  # each group once
        unknown = [g for g in chosen if g not in present]
        if unknown:
            raise OptionError(f"groups: {unknown[0]!r} is not a group of obs[{groupby!r}] ({listing})")
        if reference in chosen:
            raise OptionError(f"groups: {reference!r} is the reference; a group cannot be compared with itself")
    if not chosen:
        raise InputError(f"<AnnData>: obs[{groupby!r}] has no group to compare with {reference!r} ({listing})")
    return chosen, reference
