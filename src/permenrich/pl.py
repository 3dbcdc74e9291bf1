"""Figures of results (matplotlib, the ``plot`` extra: ``pip install permenrich[plot]``).

- :func:`enrichment`: GSEA's three-panel plot of one set of a :func:`permenrich.gsea` or
  :func:`permenrich.prerank` result (running sum, member ticks, ranked statistic);
- :func:`dotplot`: the top sets by NES, positive and negative apart;
- :func:`volcano`: a :func:`permenrich.genes` result, statistic against -log10 p;
- :func:`null_distribution`: one set's null ES over the run's permutations, recomputed
  from (seed, k) on demand (:func:`null_scores`), with the observed ES and nominal p;
- :func:`leading_edge_heatmap`: expression of the leading-edge genes of chosen sets of a
  :func:`permenrich.gsea` result, samples by class;
- :func:`maxt`: a :func:`permenrich.genes` result, statistic against its maxT-adjusted p;
- :func:`overlap`: the top sets of a :func:`permenrich.ora` result, overlap against
  expected, coloured by -log10 p.

Tables from the run itself carry what the figures of one set need (``attrs["ranking"]``,
and for :func:`permenrich.gsea` a reference to the study it permuted); the table-only
figures (:func:`dotplot`, :func:`volcano`, :func:`maxt`, :func:`overlap`) also take an
AnnData holding :mod:`permenrich.tl` results (``key=``, ``group=``).

Each returns a :class:`matplotlib.figure.Figure` and changes no global matplotlib state:
figures are made as ``Figure`` objects (no pyplot, no backend choice), so nothing is
shown or kept open; with ``ax=`` they draw into the caller's axes and return its figure.
matplotlib is imported inside the functions, so ``import permenrich`` does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .enrich.running_sum import running_sum, running_sum_dense, scaled_for_weights

if TYPE_CHECKING:  # matplotlib is optional: imported inside the functions
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["barplot", "dotplot", "enrichment", "leading_edge_heatmap", "maxt", "null_distribution", "null_scores", "overlap",
           "running_sum_curve", "volcano"]

_GSEA_MODES = ("gsea", "prerank")


def _matplotlib() -> Any:
    """The matplotlib.figure module, or a one-line error saying what to install."""
    try:
        import matplotlib.figure
    except ImportError:
        raise ImportError("permenrich.pl needs matplotlib: pip install permenrich[plot]") from None
    return matplotlib.figure


def _check_top(top: Any, function: str) -> None:
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"{function}(): top must be a positive integer, got {top!r}")


def _check_mode(result: pd.DataFrame, modes: tuple[str, ...], function: str, columns: tuple[str, ...]) -> None:
    """ValueError unless ``result`` is a table of one of ``modes`` with ``columns``."""
    if not isinstance(result, pd.DataFrame):
        if hasattr(result, "uns"):  # an AnnData: tl keeps tables only, without what this figure needs
            raise ValueError(f"{function}() needs a result DataFrame of permenrich.{' or '.join(modes)}() (tables "
                             "stored by permenrich.tl keep no ranked list or study); call the function directly")
        raise ValueError(f"{function}() takes a result DataFrame of permenrich.{' or '.join(modes)}(), "
                         f"got {type(result).__name__}")
    command = (result.attrs.get("run") or {}).get("command")
    missing = [c for c in columns if c not in result.columns]
    if (command is not None and command not in modes) or missing:
        got = f"a {command!r} result" if command is not None else f"a table without columns {missing}"
        raise ValueError(f"{function}() takes a result of permenrich.{' or '.join(modes)}(); got {got}")


def _figure_table(result: Any, function: str, modes: tuple[str, ...], columns: tuple[str, ...], key: str | None,
                  group: str | None) -> pd.DataFrame:
    """What every table figure starts with: matplotlib present, the table (of an AnnData's
    :mod:`permenrich.tl` results if need be), of one of ``modes`` with ``columns``."""
    _matplotlib()
    table = _result_table(result, function, key, group)
    _check_mode(table, modes, function, columns)
    return table


def _result_table(result: Any, function: str, key: str | None, group: str | None) -> Any:
    """``result`` itself, or the table of one group of the :mod:`permenrich.tl` results of
    an AnnData (``adata.uns["permenrich"][key]["results"]``), marked with its mode."""
    if isinstance(result, pd.DataFrame) or not hasattr(result, "uns"):
        return result  # _check_mode says what a non-table is
    store = result.uns.get("permenrich") or {}
    if not store:
        raise ValueError(f"{function}(): the AnnData holds no permenrich results (adata.uns['permenrich']); "
                         "run permenrich.tl.gsea, genes or ora first")
    if key is None:
        if len(store) != 1:
            raise ValueError(f"{function}(): adata.uns['permenrich'] holds {sorted(store)}; choose one with key=")
        key = next(iter(store))
    if key not in store:
        raise ValueError(f"{function}(): key {key!r} is not in adata.uns['permenrich'] ({sorted(store)})")
    results = store[key]["results"]
    groups = list(dict.fromkeys(results["group"].astype(str)))
    if group is None:
        if len(groups) != 1:
            raise ValueError(f"{function}(): the results of {key!r} hold groups {groups}; choose one with group=")
        group = groups[0]
    if str(group) not in groups:
        raise ValueError(f"{function}(): group {group!r} is not in the results of {key!r} ({groups})")
    table = results.loc[results["group"].astype(str) == str(group)].drop(columns="group").reset_index(drop=True)
    table.attrs = {"run": {"command": store[key].get("params", {}).get("mode")}}
    return table


#: Longest set name drawn whole; longer ones keep their start and end (MSigDB names differ
#: in either), so that two of them stay apart and the axes keep their room.
LABEL_CHARACTERS = 60


def short_label(name: Any, limit: int = LABEL_CHARACTERS) -> str:
    """``name`` as text of at most ``limit`` characters: the start, an ellipsis and the end."""
    text = str(name)
    if len(text) <= limit:
        return text
    tail = (limit - 1) // 3
    return f"{text[:limit - 1 - tail]}…{text[len(text) - tail:]}"


def short_labels(names: Any, limit: int = LABEL_CHARACTERS) -> list[str]:
    """:func:`short_label` of each name, longer where that would make two distinct names
    read the same (names that differ only in the middle): a figure's ticks must tell its
    rows apart."""
    names = [str(name) for name in names]
    labels = [short_label(name, limit) for name in names]
    width = limit
    while len(set(labels)) < len(set(names)):
        width += 10
        seen: dict[str, set[str]] = {}
        for name, label in zip(names, labels):
            seen.setdefault(label, set()).add(name)
        labels = [short_label(name, width) if len(seen[label]) > 1 else label for name, label in zip(names, labels)]
    return labels


def _fdr_colours(cmap_name: str) -> Any:
    """The FDR colour map, with a NaN (no FDR) drawn light grey rather than transparent."""
    from matplotlib import colormaps

    cmap = colormaps[cmap_name].copy()
    cmap.set_bad("0.85")
    return cmap


def _figure_and_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The caller's axes and its figure, or a new Figure with one axes."""
    if ax is not None:
        return ax.get_figure(), ax
    figure = _matplotlib().Figure(figsize=figsize, layout="constrained")
    return figure, figure.add_subplot()


def running_sum_curve(result: pd.DataFrame, set_name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The running sum of one set of a GSEA result, as :func:`enrichment` draws it.

    Parameters
    ----------
    result : pandas.DataFrame
        A :func:`permenrich.gsea` or :func:`permenrich.prerank` result (running-sum
        statistic), which keeps its ranked list in ``attrs["ranking"]``.
    set_name : str
        A gene set of the table.

    Returns
    -------
    curve : ndarray of float, shape (n_genes,)
        The running sum after each ranked gene, with the run's weight p.
    member_positions : ndarray of int
        The set's ranked positions, ascending.
    peak_position : int
        Where the ES is reached (GSEA's tie rule; :func:`permenrich.enrich.running_sum.running_sum`).

    Raises
    ------
    ValueError
        For a result of another mode or statistic, or a set the table does not hold.
    """
    _check_mode(result, _GSEA_MODES, "enrichment", ("gene_set", "es"))
    ranking = result.attrs.get("ranking")
    if ranking is None:
        raise ValueError("enrichment() needs the ranked list in result.attrs['ranking'], which the table "
                         "permenrich.gsea() or permenrich.prerank() returns has and a table read from a file does "
                         "not; use the returned table, or 'permenrich report OUT/' for an output folder")
    if ranking.set_statistic != "ks":
        raise ValueError(f"enrichment() draws the running sum; this result used "
                         f"set_statistic={ranking.set_statistic!r} (rerun with set_statistic='ks')")
    if set_name not in set(result["gene_set"]):
        raise ValueError(f"gene set {set_name!r} is not in the result ({len(result)} sets); "
                         "check the name, or min_size/max_size")
    positions = ranking.members(set_name)
    statistic = _running_sum_statistic(ranking)
    weights = np.abs(statistic) ** ranking.weight
    in_set = np.zeros(statistic.size, dtype=bool)
    in_set[positions] = True
    member_weights = weights[positions]
    if np.isinf(member_weights).any():
        # The limit the ES takes (see running_sum): infinite members share the hits' weight.
        curve = running_sum_dense(in_set, np.isinf(weights).astype(np.float64), 1.0)
    elif member_weights.sum() == 0.0:
        curve = np.zeros(in_set.size)  # ES defined as 0 when no member has weight
    else:
        curve = running_sum_dense(in_set, statistic, ranking.weight)
    return curve, positions, running_sum(positions, weights).peak_position


def enrichment(result: pd.DataFrame, set_name: str, *, ax: Axes | None = None) -> Figure:
    """GSEA's enrichment plot of one gene set.

    Three panels sharing the ranked-gene axis: the running sum (ES marked, the leading
    edge shaded), a tick per set member, and the ranked statistic.

    Parameters
    ----------
    result : pandas.DataFrame
        A :func:`permenrich.gsea` or :func:`permenrich.prerank` result with the
        running-sum statistic (``set_statistic="ks"``).
    set_name : str
        The gene set drawn.
    ax : matplotlib.axes.Axes, optional
        Draw into the area of these axes (it is divided into the three panels) instead of
        a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For a result of another mode or statistic, or a set the table does not hold.
    ImportError
        When matplotlib is missing.
    """
    _matplotlib()
    curve, positions, peak = running_sum_curve(result, set_name)
    ranking = result.attrs["ranking"]
    row = result.loc[result["gene_set"] == set_name].iloc[0]
    x = np.arange(1, curve.size + 1)
    if ax is None:
        figure = _matplotlib().Figure(figsize=(6.0, 5.0), layout="constrained")
        grid = figure.add_gridspec(3, 1, height_ratios=(3, 0.6, 1.6), hspace=0.0)
    else:
        if ax.get_subplotspec() is None:
            raise ValueError("enrichment(): ax= must be a subplot (its area is split into three panels), "
                             "e.g. from figure.add_subplot() or plt.subplots()")
        figure = ax.get_figure()
        grid = ax.get_subplotspec().subgridspec(3, 1, height_ratios=(3, 0.6, 1.6), hspace=0.0)
        ax.remove()
    ax_sum = figure.add_subplot(grid[0])
    ax_ticks = figure.add_subplot(grid[1], sharex=ax_sum)
    ax_stat = figure.add_subplot(grid[2], sharex=ax_sum)

    ax_sum.plot(x, curve, color="tab:green", linewidth=1.5)
    ax_sum.axhline(0.0, color="0.5", linewidth=0.8)
    # Leading edge: from the top to the peak for a positive ES, from the peak to the end
    # for a negative one (GSEA's definition).
    start, stop = (1, peak + 1) if row["es"] >= 0 else (peak + 1, curve.size)
    ax_sum.axvspan(start, stop, color="tab:green", alpha=0.12, linewidth=0, label="leading edge")
    ax_sum.plot([peak + 1], [curve[peak]], "o", color="tab:red")
    ax_sum.axvline(peak + 1, color="tab:red", linestyle="--", linewidth=0.8)
    ax_sum.set_ylabel("running enrichment score")
    ax_sum.set_title(f"{short_label(set_name)}\nES = {row['es']:.3f}, NES = {row['nes']:.3f}, FDR = {row['fdr']:.3g}",
                     fontsize="medium")
    ax_sum.legend(loc="best", fontsize="small", frameon=False)

    ax_ticks.vlines(positions + 1, 0.0, 1.0, color="black", linewidth=0.5)
    ax_ticks.set_yticks([])
    ax_ticks.set_ylim(0.0, 1.0)

    ax_stat.fill_between(x, ranking.statistic, 0.0, color="0.6", linewidth=0)
    ax_stat.axhline(0.0, color="0.3", linewidth=0.6)
    ax_stat.set_ylabel("ranked statistic")
    ax_stat.set_xlabel("rank in the ordered gene list")
    ax_stat.set_xlim(1, curve.size)
    for upper in (ax_sum, ax_ticks):
        upper.tick_params(labelbottom=False)
    return figure


def dotplot(result: pd.DataFrame | Any, *, top: int = 10, ax: Axes | None = None, key: str | None = None,
            group: str | None = None) -> Figure:
    """The ``top`` sets of each sign by NES as dots.

    Sets with positive NES are drawn above those with negative NES (each group in
    decreasing ``|NES|``); dot area follows the set size and colour the FDR q-value.

    Parameters
    ----------
    result : pandas.DataFrame or anndata.AnnData
        A :func:`permenrich.gsea` or :func:`permenrich.prerank` result, or an AnnData
        with :func:`permenrich.tl.gsea` results.
    top : int
        Sets shown per sign (at most ``2 * top`` in all).
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    key, group : str, optional
        With an AnnData: the results' key under ``adata.uns["permenrich"]`` and the group
        drawn (each may be left out when there is only one).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For a result of another mode or a ``top`` below 1.
    ImportError
        When matplotlib is missing.
    """
    result = _figure_table(result, "dotplot", _GSEA_MODES, ("gene_set", "nes", "fdr", "size"), key, group)
    _check_top(top, "dotplot")
    positive, negative = _top_by_sign(result, top)
    shown = pd.concat([positive, negative])
    own_figure = ax is None
    figure, ax = _figure_and_axes(ax, (7.5, 1.6 + 0.3 * max(len(shown), 1)))
    y = np.arange(len(shown))[::-1]  # first row at the top
    sizes = shown["size"].to_numpy(dtype=np.float64)
    area = 20.0 + 180.0 * sizes / sizes.max() if sizes.size else sizes
    fdr = shown["fdr"].to_numpy(dtype=np.float64)
    vmax = max(float(np.nanmax(fdr)), 1e-3) if np.isfinite(fdr).any() else 1.0
    dots = ax.scatter(shown["nes"], y, s=area, c=fdr, cmap=_fdr_colours("viridis_r"), vmin=0.0, vmax=vmax,
                      edgecolors="0.3", linewidths=0.5, plotnonfinite=True)
    if len(positive) and len(negative):  # a line between the two signs
        ax.axhline(y[len(positive) - 1] - 0.5, color="0.7", linewidth=0.8)
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    ax.set_yticks(y, short_labels(shown["gene_set"]))
    ax.set_xlabel("NES")
    ax.set_ylim(-0.8, len(shown) - 0.2)
    if len(shown):  # room for the dots on both sides of 0
        reach = float(np.abs(shown["nes"]).max()) * 1.15
        ax.set_xlim(-reach if len(negative) else -0.1 * reach, reach if len(positive) else 0.1 * reach)
    figure.colorbar(dots, ax=ax, label=_fdr_label(fdr))
    if sizes.size:  # size legend: smallest and largest set shown
        handles = [ax.scatter([], [], s=20.0 + 180.0 * value / sizes.max(), color="0.6", label=f"{int(value)} genes")
                   for value in sorted({sizes.min(), sizes.max()})]
        if own_figure:  # below the plot; in the caller's axes, inside them
            figure.legend(handles=handles, title="set size", fontsize="small", frameon=False, ncols=len(handles),
                          loc="outside lower center")
        else:
            ax.legend(handles=handles, title="set size", fontsize="small", frameon=False, loc="best")
    return figure


def _fdr_label(fdr: np.ndarray) -> str:
    return "FDR q (grey: none)" if np.isnan(fdr).any() else "FDR q"


def _top_by_sign(result: pd.DataFrame, top: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``top`` sets of positive NES (decreasing) and of negative NES (increasing)."""
    finite = result.loc[np.isfinite(result["nes"].to_numpy(dtype=np.float64))]
    return (finite.loc[finite["nes"] > 0].sort_values("nes", ascending=False).head(top),
            finite.loc[finite["nes"] < 0].sort_values("nes", ascending=True).head(top))


def barplot(result: pd.DataFrame | Any, *, top: int = 10, ax: Axes | None = None, key: str | None = None,
            group: str | None = None) -> Figure:
    """The ``top`` sets of each sign as horizontal NES bars.

    The sets of :func:`dotplot`, in the same order (positive NES above negative, each
    group in decreasing ``|NES|``); bar colour follows the FDR q-value and each bar is
    labelled with the set size, for a page where dot areas read poorly (print, slides).

    Parameters
    ----------
    result : pandas.DataFrame or anndata.AnnData
        As for :func:`dotplot`.
    top : int
        Sets shown per sign (at most ``2 * top`` in all).
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    key, group : str, optional
        With an AnnData, as in :func:`dotplot`.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For a result of another mode or a ``top`` below 1.
    ImportError
        When matplotlib is missing.
    """
    result = _figure_table(result, "barplot", _GSEA_MODES, ("gene_set", "nes", "fdr", "size"), key, group)
    from matplotlib import cm, colors  # present: _figure_table checked
    _check_top(top, "barplot")
    positive, negative = _top_by_sign(result, top)
    shown = pd.concat([positive, negative])
    figure, ax = _figure_and_axes(ax, (7.5, 1.6 + 0.3 * max(len(shown), 1)))
    y = np.arange(len(shown))[::-1]  # first row at the top
    fdr = shown["fdr"].to_numpy(dtype=np.float64)
    scale = colors.Normalize(vmin=0.0, vmax=max(float(np.nanmax(fdr)), 1e-3) if np.isfinite(fdr).any() else 1.0)
    colours = _fdr_colours("viridis_r")(np.ma.masked_invalid(scale(fdr)))
    bars = ax.barh(y, shown["nes"], color=colours, edgecolor="0.3", linewidth=0.5)
    ax.bar_label(bars, labels=[f"{int(size)}" for size in shown["size"]], padding=2, fontsize="x-small")
    if len(positive) and len(negative):
        ax.axhline(y[len(positive) - 1] - 0.5, color="0.7", linewidth=0.8)
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    ax.set_yticks(y, short_labels(shown["gene_set"]))
    ax.set_xlabel("NES (bar labels: set size)")
    ax.set_ylim(-0.8, len(shown) - 0.2)
    if len(shown):  # room for the size labels on both sides of 0
        reach = float(np.abs(shown["nes"]).max()) * 1.2
        ax.set_xlim(-reach if len(negative) else -0.1 * reach, reach if len(positive) else 0.1 * reach)
    figure.colorbar(cm.ScalarMappable(norm=scale, cmap="viridis_r"), ax=ax, label=_fdr_label(fdr))
    return figure


def volcano(result: pd.DataFrame | Any, *, ax: Axes | None = None, key: str | None = None,
            group: str | None = None) -> Figure:
    """Volcano plot of a per-gene result: statistic against -log10 permutation p.

    Parameters
    ----------
    result : pandas.DataFrame or anndata.AnnData
        A :func:`permenrich.genes` result (columns ``statistic`` and ``pval``), or an
        AnnData with :func:`permenrich.tl.genes` results; genes with ``qval_bh`` below
        0.05 are drawn in colour.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    key, group : str, optional
        With an AnnData, as in :func:`dotplot`.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For a result of another mode.
    ImportError
        When matplotlib is missing.
    """
    result = _figure_table(result, "volcano", ("genes",), ("gene", "statistic", "pval"), key, group)
    figure, ax = _figure_and_axes(ax, (5.5, 4.5))
    statistic = result["statistic"].to_numpy(dtype=np.float64)
    height = -np.log10(result["pval"].to_numpy(dtype=np.float64))
    significant = (result["qval_bh"].to_numpy(dtype=np.float64) < 0.05 if "qval_bh" in result.columns
                   else np.zeros(len(result), dtype=bool))
    ax.scatter(statistic[~significant], height[~significant], s=6, color="0.6", linewidths=0)
    ax.scatter(statistic[significant], height[significant], s=8, color="tab:red", linewidths=0,
               label="BH q < 0.05")
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel("statistic")
    ax.set_ylabel("-log10 permutation p")
    if significant.any():
        ax.legend(fontsize="small", frameon=False, loc="best")
    return figure


# ---- one set's null --------------------------------------------------------------------
def _ranking_with_set(result: pd.DataFrame, set_name: str, function: str, modes: tuple[str, ...]) -> Any:
    """The result's :class:`~permenrich.modes.gsea.Ranking` and the set's index in it,
    after the checks every figure of one set makes."""
    _check_mode(result, modes, function, ("gene_set", "es"))
    if set_name not in set(result["gene_set"]):
        raise ValueError(f"gene set {set_name!r} is not in the result ({len(result)} sets); "
                         "check the name, or min_size/max_size")
    ranking = result.attrs.get("ranking")
    if ranking is None:
        raise ValueError(f"{function}() needs the run's ranked list in result.attrs['ranking'], which a table read "
                         f"from a file does not have; use the table returned by permenrich.{modes[0]}()")
    found = np.flatnonzero(ranking.set_names == set_name)
    if found.size == 0:  # a table whose rows are not the ranking's (e.g. concatenated from two runs)
        raise ValueError(f"{function}(): gene set {set_name!r} is not in the run's ranked list (attrs['ranking'])")
    return ranking, int(found[0])


def _backend_like(kind: str) -> Any:
    """A fresh backend of the kind a run used (same kernels, hence the same bits)."""
    from .backends import get_backend

    try:
        return get_backend(kind)
    except Exception as error:  # noqa: BLE001 - any failure to start it has one cause to report
        raise ValueError(f"the run used the {kind} backend, which is not available now ({error})") from None


def _gsea_null(ranking: Any, s: int) -> np.ndarray:
    """Set ``s``'s phenotype-permutation null as the run computed it: the same backend
    kind, the same labellings of the plan, gene statistics and set score, for one set."""
    from .genesets import GeneSetIndex
    from .modes._shared import prepare_gene_statistic
    from .stats.metrics import get_metric, ranking_metric

    reference = ranking.study
    study, plan = reference.study, reference.plan
    members = np.asarray(reference.set_members[ranking.offsets[s]:ranking.offsets[s + 1]])
    one_set = GeneSetIndex(names=np.asarray([ranking.set_names[s]], dtype=object),
                           descriptions=np.asarray([""], dtype=object), members=members,
                           offsets=np.asarray([0, members.size], dtype=np.int64),
                           sizes=np.asarray([members.size], dtype=np.int32),
                           sizes_original=np.asarray([members.size], dtype=np.int32))
    backend = _backend_like(reference.backend)
    prepare_gene_statistic(backend, study, ranking_metric(get_metric(reference.metric)))
    backend.prepare_sets(ranking.set_statistic, one_set.members, one_set.offsets, float(ranking.weight),
                         study.n_genes)
    # Batches bound the gene statistics held at once (n_batch x n_genes float64).
    batch = max(1, min(1024, (64 << 20) // (8 * max(1, study.n_genes))))
    try:
        parts = [np.asarray(backend.to_host(backend.score(backend.labellings(plan, start, min(plan.n_perm,
                                                                                              start + batch)))[0]))
                 for start in range(0, plan.n_perm, batch)]
    finally:
        if not study.in_memory:
            study.values.release()  # free for others again, until the next figure reads it
    return np.concatenate(parts)[:, 0]


def _running_sum_statistic(ranking: Any) -> np.ndarray:
    """The ranked statistic as the run's running sum used it: a fixed list scaled by a
    power of two where its hit weights would leave float64 (see
    :func:`permenrich.enrich.running_sum.scaled_for_weights`; the same bits otherwise)."""
    if ranking.set_statistic != "ks" or ranking.study is not None:  # gsea's statistics are not scaled
        return ranking.statistic
    return scaled_for_weights(ranking.statistic, float(ranking.weight))[0]


def _prerank_null(result: pd.DataFrame, ranking: Any, s: int) -> np.ndarray:
    """Set ``s``'s gene-set permutation null as the run computed it: random sets of every
    size of the run from (seed, k), the column of this set's size."""
    run = result.attrs.get("run") or {}
    parameters = run.get("parameters") or {}
    if "seed" not in parameters or "permutations" not in parameters:
        raise ValueError("null_distribution() needs the run's seed and permutations in result.attrs['run']")
    backend = _backend_like((run.get("backend") or {}).get("backend", "cpu"))
    run_sizes = np.diff(ranking.offsets)
    sizes = np.unique(run_sizes)
    column = int(np.searchsorted(sizes, run_sizes[s]))
    null = backend.random_set_null(int(parameters["seed"]), 0, int(parameters["permutations"]),
                                   _running_sum_statistic(ranking), float(ranking.weight), ranking.set_statistic,
                                   sizes)
    return np.asarray(backend.to_host(null))[:, column]


def null_scores(result: pd.DataFrame, set_name: str) -> np.ndarray:
    """One set's null scores over the run's permutations, recomputed on demand.

    Nothing of the null is stored by a run: permutation k is a pure function of
    (seed, k), so the scores are computed again, for this set only, along the run's own
    path: for :func:`permenrich.gsea`, the plan's labellings, the backend's gene
    statistics and the set score (from the study the result references); for
    :func:`permenrich.prerank`, the random sets of the set's size. They equal the run's
    null score for score, so counting them gives the table's ``n_null_same_sign`` and
    ``pval`` (permutation p-values; not the multilevel ones of ``p_method="multilevel"``).

    Parameters
    ----------
    result : pandas.DataFrame
        The table returned by :func:`permenrich.gsea` or :func:`permenrich.prerank` (not
        one read back from a file or unpickled, which keeps no study).
    set_name : str
        A gene set of the table.

    Returns
    -------
    ndarray of float64, shape (n_permutations,)
        The set's null score under each permutation, in permutation order.

    Raises
    ------
    ValueError
        For a result of another mode, a set the table does not hold, or a result that
        does not keep what the null needs.
    """
    ranking, s = _ranking_with_set(result, set_name, "null_distribution", _GSEA_MODES)
    command = (result.attrs.get("run") or {}).get("command")
    if command == "prerank":
        return _prerank_null(result, ranking, s)
    if ranking.study is None:
        raise ValueError("null_distribution() needs the study the run permuted, which this result no longer "
                         "references (a pickled or copied-out table); use the table returned by permenrich.gsea()")
    return _gsea_null(ranking, s)


def null_distribution(result: pd.DataFrame, set_name: str, *, ax: Axes | None = None, bins: int | str = "auto"
                      ) -> Figure:
    """Histogram of one set's null ES, with the observed ES and its nominal p-value.

    The null is recomputed for this set only (:func:`null_scores`); the nominal p is
    sign-specific as in the table (see :mod:`permenrich.nulls`): among the null scores of
    the observed score's sign, the fraction at least as extreme, (b+1)/(m+1) (b/m under
    exact enumeration). That tail is shaded.

    Parameters
    ----------
    result : pandas.DataFrame
        The table returned by :func:`permenrich.gsea` or :func:`permenrich.prerank`.
    set_name : str
        The gene set drawn.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    bins : int or str
        Histogram bins, as :func:`numpy.histogram_bin_edges` takes them.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        As :func:`null_scores`.
    ImportError
        When matplotlib is missing.
    """
    from .modes._shared import score_scale
    from .nulls import GseaNullAccumulator, tie_tolerance

    _matplotlib()
    null = null_scores(result, set_name)
    ranking = result.attrs["ranking"]
    row = result.loc[result["gene_set"] == set_name].iloc[0]
    es = float(row["es"])
    exact = bool(((result.attrs.get("run") or {}).get("permutation_plan") or {}).get("exact_enumeration", False))
    # The run's own accumulator counts the tail: the same tie tolerance and sign rule.
    counter = GseaNullAccumulator(np.asarray([es]), null.size, exact,
                                  tie_tolerance=tie_tolerance(score_scale(ranking.set_statistic, ranking.statistic)))
    counter.add_first_pass(null[:, None])
    counter.finish_first_pass()
    pval, same_sign, exceed = float(counter.pval[0]), int(counter.n_same_sign[0]), int(counter.n_exceed[0])

    figure, ax = _figure_and_axes(ax, (5.5, 4.0))
    edges = np.histogram_bin_edges(np.append(null, es), bins=bins)
    ax.hist(null, bins=edges, color="0.65", edgecolor="white", linewidth=0.4, label=f"null ({null.size} permutations)")
    pad = 0.05 * max(edges[-1] - edges[0], 1e-9)
    left, right = edges[0] - pad, edges[-1] + pad
    ax.set_xlim(left, right)
    low, high = (es, right) if es >= 0 else (left, es)
    ax.axvspan(low, high, color="tab:red", alpha=0.12, linewidth=0, label="as extreme, same sign")
    ax.axvline(es, color="tab:red", linewidth=1.5, label=f"observed ES = {es:.3f}")
    ax.axvline(0.0, color="0.4", linewidth=0.6)
    ax.set_xlabel("enrichment score" if ranking.set_statistic == "ks" else f"set score ({ranking.set_statistic})")
    ax.set_ylabel("permutations")
    formula = f"{exceed}/{same_sign}" if exact else f"({exceed}+1)/({same_sign}+1)"
    ax.set_title(f"{short_label(set_name)}\nnominal p = {formula} = {pval:.3g}", fontsize="medium")
    ax.legend(fontsize="small", frameon=False, loc="best")
    return figure


# ---- leading-edge expression -----------------------------------------------------------
def leading_edge_heatmap(result: pd.DataFrame, set_names: str | list[str], *, ax: Axes | None = None,
                         cmap: str = "RdBu_r", max_label_genes: int = 60) -> Figure:
    """Heatmap of the leading-edge genes of gene sets: genes x samples, z-scored per gene.

    Rows are the union of the sets' leading edges, ordered by the ranked statistic (top
    of the list first); columns are the analysed samples ordered by class (case, then
    control; by increasing phenotype for a continuous phenotype), with a class bar above.
    Values are the matrix the statistic was computed on, centred and scaled per gene
    across the samples (a constant gene is 0). With several sets a strip on the left
    marks each gene's sets.

    Parameters
    ----------
    result : pandas.DataFrame
        The table returned by :func:`permenrich.gsea` (running-sum statistic), which
        references the run's matrix and classes.
    set_names : str or list of str
        The sets whose leading edges are drawn.
    ax : matplotlib.axes.Axes, optional
        Draw into the area of these axes (a subplot; it is divided into panels).
    cmap : str
        Colour map of the z-scores (centred on 0).
    max_label_genes : int
        Genes are named on the axis when there are at most this many.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For a result of another mode or statistic, an unknown set, a result without its
        study, or a matrix streamed from disk.
    ImportError
        When matplotlib is missing.
    """
    from .design import TwoGroupLabels

    _matplotlib()
    names = [set_names] if isinstance(set_names, str) else list(set_names)
    if not names:
        raise ValueError("leading_edge_heatmap(): give at least one set name")
    for name in names:
        ranking, _ = _ranking_with_set(result, name, "leading_edge_heatmap", ("gsea",))
    if ranking.set_statistic != "ks":
        raise ValueError(f"leading_edge_heatmap() needs leading edges, which the running sum defines; this result "
                         f"used set_statistic={ranking.set_statistic!r}")
    if ranking.study is None:
        raise ValueError("leading_edge_heatmap() needs the run's expression matrix, which this result no longer "
                         "references (a pickled or copied-out table); use the table returned by permenrich.gsea()")
    study = ranking.study.study
    if not study.in_memory:
        raise ValueError(f"leading_edge_heatmap() needs the matrix in memory; this run streamed it from "
                         f"{study.source} (raise memory= to read it whole)")
    edges = {name: [g for g in str(result.loc[result["gene_set"] == name, "leading_edge"].iloc[0]).split(",") if g]
             for name in names}
    rank_of = {gene: position for position, gene in enumerate(ranking.gene_ids)}
    genes = sorted({g for members in edges.values() for g in members}, key=lambda g: rank_of[g])
    if not genes:
        raise ValueError(f"leading_edge_heatmap(): the sets {names} have empty leading edges")
    row_of = {gene: row for row, gene in enumerate(study.gene_ids)}
    values = np.asarray(study.values[[row_of[g] for g in genes]], dtype=np.float64)
    design = study.design
    if isinstance(design, TwoGroupLabels):
        sample_order = np.argsort(~design.is_case, kind="stable")  # case first
        classes = design.is_case[sample_order].astype(float)
        case, control = study.info.get("case", "case"), study.info.get("control", "control")
        class_labels = [(1.0, f"{case} ({design.n_case})"), (0.0, f"{control} ({design.n_control})")]
    else:
        sample_order = np.argsort(design.values, kind="stable")
        classes = design.values[sample_order].astype(float)
        class_labels = []
    values = values[:, sample_order]
    spread = values.std(axis=1, keepdims=True)
    z = np.divide(values - values.mean(axis=1, keepdims=True), spread, out=np.zeros_like(values),
                  where=spread > 0)

    height = 1.6 + 0.16 * min(len(genes), 80)
    ratios = (0.35 * len(names), 8.0, 0.3) if len(names) > 1 else (0.01, 8.0, 0.3)
    if ax is None:
        figure = _matplotlib().Figure(figsize=(7.0, height), layout="constrained")
        grid = figure.add_gridspec(2, 3, height_ratios=(0.5, height), width_ratios=ratios, hspace=0.02, wspace=0.02)
    else:
        if ax.get_subplotspec() is None:
            raise ValueError("leading_edge_heatmap(): ax= must be a subplot (its area is split into panels)")
        figure = ax.get_figure()
        grid = ax.get_subplotspec().subgridspec(2, 3, height_ratios=(0.5, height), width_ratios=ratios,
                                                hspace=0.02, wspace=0.02)
        ax.remove()
    ax_heat = figure.add_subplot(grid[1, 1])
    ax_class = figure.add_subplot(grid[0, 1], sharex=ax_heat)
    ax_bar = figure.add_subplot(grid[1, 2])
    limit = max(float(np.abs(z).max()), 1e-9)
    image = ax_heat.imshow(z, aspect="auto", cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    figure.colorbar(image, cax=ax_bar, label="expression, z-score per gene")
    ax_heat.set_xlabel(f"samples ({len(sample_order)}), ordered by class")
    ax_heat.set_xticks([])
    if len(genes) <= max_label_genes:
        ax_heat.set_yticks(np.arange(len(genes)), genes, fontsize="x-small")
    else:
        ax_heat.set_yticks([])
        ax_heat.set_ylabel(f"{len(genes)} leading-edge genes, by rank")
    ax_class.imshow(classes[None, :], aspect="auto", cmap="coolwarm" if class_labels else "viridis",
                    interpolation="nearest", vmin=classes.min(), vmax=max(classes.max(), classes.min() + 1e-9))
    ax_class.set_yticks([])
    ax_class.tick_params(labelbottom=False, bottom=False)
    if class_labels:
        boundary = int(classes.sum())  # case samples come first
        ax_class.axvline(boundary - 0.5, color="black", linewidth=0.8)
        ax_heat.axvline(boundary - 0.5, color="black", linewidth=0.8)
        for x, (_, label) in zip((boundary / 2 - 0.5, (boundary + len(classes)) / 2 - 0.5), class_labels):
            ax_class.text(x, 0, label, ha="center", va="center", fontsize="small", color="white")
    ax_class.set_title(", ".join(map(short_label, names)) if len(names) <= 3 else f"{len(names)} gene sets",
                       fontsize="medium")
    ax_sets = figure.add_subplot(grid[1, 0], sharey=ax_heat)
    if len(names) > 1:  # which sets each gene leads
        membership = np.array([[g in set(edges[name]) for name in names] for g in genes], dtype=float)
        ax_sets.imshow(membership, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax_sets.set_xticks(np.arange(len(names)), short_labels(names), rotation=90,
                           fontsize="x-small")
        ax_heat.tick_params(labelleft=False)
        ax_sets.tick_params(labelleft=len(genes) <= max_label_genes)
    else:
        ax_sets.set_axis_off()
    return figure


# ---- per-gene maxT -----------------------------------------------------------------------
def maxt(result: pd.DataFrame | Any, *, alpha: float = 0.05, label: int = 10, ax: Axes | None = None,
         key: str | None = None, group: str | None = None) -> Figure:
    """A maxT analysis: each gene's statistic against its maxT-adjusted p-value.

    A reader of a Westfall–Young maxT analysis decides on the adjusted p-values (they
    control the family-wise error rate), so those are on the vertical axis (as -log10)
    with the threshold ``alpha``; the unadjusted permutation p-values are drawn faintly
    behind them, showing how much the adjustment costs at each statistic, and the genes
    passing are coloured and the strongest named. This needs only the table's columns,
    so it draws results read back from a file too; the null distribution of the maximum
    statistic would need the run's matrix and permutations again, and says less about
    which genes to report.

    Parameters
    ----------
    result : pandas.DataFrame or anndata.AnnData
        A :func:`permenrich.genes` result (``statistic``, ``pval``, ``pval_maxt``), or an
        AnnData with :func:`permenrich.tl.genes` results.
    alpha : float
        Family-wise error rate drawn as the threshold (default 0.05).
    label : int
        The genes passing with the smallest adjusted p (largest ``|statistic|`` on ties) that
        are named, at most this many.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    key, group : str, optional
        With an AnnData, as in :func:`dotplot`.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For a result of another mode or an ``alpha`` outside (0, 1).
    ImportError
        When matplotlib is missing.
    """
    result = _figure_table(result, "maxt", ("genes",), ("gene", "statistic", "pval", "pval_maxt"), key, group)
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"maxt(): alpha must lie in (0, 1), got {alpha!r}")
    figure, ax = _figure_and_axes(ax, (5.5, 4.5))
    statistic = result["statistic"].to_numpy(dtype=np.float64)
    adjusted = result["pval_maxt"].to_numpy(dtype=np.float64)
    height = -np.log10(adjusted)
    passing = adjusted < alpha
    ax.scatter(statistic, -np.log10(result["pval"].to_numpy(dtype=np.float64)), s=5, color="0.85", linewidths=0,
               label="unadjusted permutation p")
    ax.scatter(statistic[~passing], height[~passing], s=7, color="0.45", linewidths=0, label="maxT-adjusted p")
    ax.scatter(statistic[passing], height[passing], s=9, color="tab:red", linewidths=0,
               label=f"FWER < {alpha:g} ({int(passing.sum())} genes)")
    ax.axhline(-np.log10(alpha), color="tab:red", linestyle="--", linewidth=0.8)
    named = np.flatnonzero(passing)
    named = named[np.lexsort((-np.abs(statistic[named]), adjusted[named]))][:max(0, int(label))]
    # The strongest genes share the floor of the adjusted p (one height): their labels are
    # stacked downwards from the point, with a leader line, instead of on top of each other.
    stacked: dict[float, int] = {}
    for i in named[np.argsort(-statistic[named], kind="stable")]:
        row = stacked.get(float(height[i]), 0)
        stacked[float(height[i])] = row + 1
        ax.annotate(str(result["gene"].iloc[i]), (statistic[i], height[i]), fontsize="x-small",
                    xytext=(3, 2 - 8 * row), textcoords="offset points",
                    arrowprops={"arrowstyle": "-", "linewidth": 0.4, "color": "0.6"} if row else None)
    ax.set_xlabel("statistic")
    ax.set_ylabel("-log10 maxT-adjusted p (FWER)")
    ax.set_title("Westfall–Young maxT", fontsize="medium")
    ax.legend(fontsize="small", frameon=False, loc="best")
    return figure


# ---- ORA overlaps --------------------------------------------------------------------------
def overlap(result: pd.DataFrame | Any, *, top: int = 15, ax: Axes | None = None, key: str | None = None,
            group: str | None = None) -> Figure:
    """The top sets of an over-representation analysis: overlap against expected.

    One row per set (smallest p at the top): an open dot at the overlap expected by
    chance (list size x set size / universe), a filled dot at the observed overlap,
    coloured by -log10 of the permutation p-value (expression mode) or else of the
    hypergeometric one, and a line between them.

    Parameters
    ----------
    result : pandas.DataFrame or anndata.AnnData
        A :func:`permenrich.ora` result, or an AnnData with :func:`permenrich.tl.ora`
        results.
    top : int
        Sets shown, by increasing p-value.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    key, group : str, optional
        With an AnnData, as in :func:`dotplot`.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For a result of another mode or a ``top`` below 1.
    ImportError
        When matplotlib is missing.
    """
    result = _figure_table(result, "overlap", ("ora",), ("gene_set", "overlap", "expected", "pval_hypergeom"), key,
                           group)
    _check_top(top, "overlap")
    permuted = "pval_perm" in result.columns and bool(np.isfinite(result["pval_perm"].to_numpy(float)).any())
    p_column, p_name = ("pval_perm", "permutation") if permuted else ("pval_hypergeom", "hypergeometric")
    shown = result.sort_values([p_column, "pval_hypergeom", "gene_set"]).head(int(top))
    y = np.arange(len(shown))[::-1]  # first row at the top
    figure, ax = _figure_and_axes(ax, (6.5, 1.4 + 0.3 * max(len(shown), 1)))
    observed, expected = shown["overlap"].to_numpy(float), shown["expected"].to_numpy(float)
    strength = -np.log10(shown[p_column].to_numpy(float))
    ax.hlines(y, expected, observed, color="0.6", linewidth=1.0)
    ax.scatter(expected, y, s=40, facecolors="white", edgecolors="0.3", linewidths=1.0, label="expected overlap",
               zorder=3)
    dots = ax.scatter(observed, y, s=50, c=strength, cmap="viridis", vmin=0.0,
                      vmax=max(float(strength.max()) if strength.size else 1.0, 1e-3), edgecolors="0.3",
                      linewidths=0.5, label="observed overlap", zorder=3)
    ax.set_yticks(y, short_labels(shown["gene_set"]))
    ax.set_ylim(-0.8, len(shown) - 0.2)
    ax.set_xlim(left=0.0)
    ax.set_xlabel("genes of the list in the set")
    figure.colorbar(dots, ax=ax, label=f"-log10 p ({p_name})")
    ax.legend(fontsize="small", frameon=False, loc="lower right")
    return figure
