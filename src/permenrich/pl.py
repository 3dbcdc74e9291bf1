"""Figures of results (matplotlib, the ``plot`` extra: ``pip install permenrich[plot]``).

- :func:`enrichment`: GSEA's three-panel plot of one set of a :func:`permenrich.gsea` or
  :func:`permenrich.prerank` result (running sum, member ticks, ranked statistic);
- :func:`dotplot`: the top sets by NES, positive and negative apart;
- :func:`volcano`: a :func:`permenrich.genes` result, statistic against -log10 p.

Each returns a :class:`matplotlib.figure.Figure` and changes no global matplotlib state:
figures are made as ``Figure`` objects (no pyplot, no backend choice), so nothing is
shown or kept open; with ``ax=`` they draw into the caller's axes and return its figure.
matplotlib is imported inside the functions, so ``import permenrich`` does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .enrich.running_sum import running_sum, running_sum_dense

if TYPE_CHECKING:  # matplotlib is optional: imported inside the functions
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["dotplot", "enrichment", "running_sum_curve", "volcano"]

_GSEA_MODES = ("gsea", "prerank")


def _matplotlib() -> Any:
    """The matplotlib.figure module, or a one-line error saying what to install."""
    try:
        import matplotlib.figure
    except ImportError:
        raise ImportError("permenrich.pl needs matplotlib: pip install permenrich[plot]") from None
    return matplotlib.figure


def _check_mode(result: pd.DataFrame, modes: tuple[str, ...], function: str, columns: tuple[str, ...]) -> None:
    """ValueError unless ``result`` is a table of one of ``modes`` with ``columns``."""
    if not isinstance(result, pd.DataFrame):
        raise ValueError(f"{function}() takes a result DataFrame of permenrich.{' or '.join(modes)}(), "
                         f"got {type(result).__name__}")
    command = (result.attrs.get("run") or {}).get("command")
    missing = [c for c in columns if c not in result.columns]
    if (command is not None and command not in modes) or missing:
        got = f"a {command!r} result" if command is not None else f"a table without columns {missing}"
        raise ValueError(f"{function}() takes a result of permenrich.{' or '.join(modes)}(); got {got}")


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
        raise ValueError("enrichment() needs the ranked list in result.attrs['ranking'], which permenrich.gsea() "
                         "and permenrich.prerank() keep; rerun with this version of permenrich")
    if ranking.set_statistic != "ks":
        raise ValueError(f"enrichment() draws the running sum; this result used "
                         f"set_statistic={ranking.set_statistic!r} (rerun with set_statistic='ks')")
    if set_name not in set(result["gene_set"]):
        raise ValueError(f"gene set {set_name!r} is not in the result ({len(result)} sets); "
                         "check the name, or min_size/max_size")
    positions = ranking.members(set_name)
    weights = np.abs(ranking.statistic) ** ranking.weight
    in_set = np.zeros(ranking.statistic.size, dtype=bool)
    in_set[positions] = True
    member_weights = weights[positions]
    if np.isinf(member_weights).any():
        # The limit the ES takes (see running_sum): infinite members share the hits' weight.
        curve = running_sum_dense(in_set, np.isinf(weights).astype(np.float64), 1.0)
    elif member_weights.sum() == 0.0:
        curve = np.zeros(in_set.size)  # ES defined as 0 when no member has weight
    else:
        curve = running_sum_dense(in_set, ranking.statistic, ranking.weight)
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
    ax_sum.set_title(f"{set_name}\nES = {row['es']:.3f}, NES = {row['nes']:.3f}, FDR = {row['fdr']:.3g}",
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


def dotplot(result: pd.DataFrame, *, top: int = 10, ax: Axes | None = None) -> Figure:
    """The ``top`` sets of each sign by NES as dots.

    Sets with positive NES are drawn above those with negative NES (each group in
    decreasing |NES|); dot area follows the set size and colour the FDR q-value.

    Parameters
    ----------
    result : pandas.DataFrame
        A :func:`permenrich.gsea` or :func:`permenrich.prerank` result.
    top : int
        Sets shown per sign (at most ``2 * top`` in all).
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.

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
    _matplotlib()
    _check_mode(result, _GSEA_MODES, "dotplot", ("gene_set", "nes", "fdr", "size"))
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"dotplot(): top must be a positive integer, got {top!r}")
    finite = result.loc[np.isfinite(result["nes"].to_numpy(dtype=np.float64))]
    positive = finite.loc[finite["nes"] > 0].sort_values("nes", ascending=False).head(top)
    negative = finite.loc[finite["nes"] < 0].sort_values("nes", ascending=True).head(top)
    shown = pd.concat([positive, negative])
    own_figure = ax is None
    figure, ax = _figure_and_axes(ax, (7.5, 1.6 + 0.3 * max(len(shown), 1)))
    y = np.arange(len(shown))[::-1]  # first row at the top
    sizes = shown["size"].to_numpy(dtype=np.float64)
    area = 20.0 + 180.0 * sizes / sizes.max() if sizes.size else sizes
    dots = ax.scatter(shown["nes"], y, s=area, c=shown["fdr"], cmap="viridis_r", vmin=0.0,
                      vmax=max(float(shown["fdr"].max()), 1e-3) if len(shown) else 1.0, edgecolors="0.3",
                      linewidths=0.5)
    if len(positive) and len(negative):  # a line between the two signs
        ax.axhline(y[len(positive) - 1] - 0.5, color="0.7", linewidth=0.8)
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    ax.set_yticks(y, shown["gene_set"].astype(str))
    ax.set_xlabel("NES")
    ax.set_ylim(-0.8, len(shown) - 0.2)
    if len(shown):  # room for the dots on both sides of 0
        reach = float(np.abs(shown["nes"]).max()) * 1.15
        ax.set_xlim(-reach if len(negative) else -0.1 * reach, reach if len(positive) else 0.1 * reach)
    figure.colorbar(dots, ax=ax, label="FDR q")
    if sizes.size:  # size legend: smallest and largest set shown
        handles = [ax.scatter([], [], s=20.0 + 180.0 * value / sizes.max(), color="0.6", label=f"{int(value)} genes")
                   for value in sorted({sizes.min(), sizes.max()})]
        if own_figure:  # below the plot; in the caller's axes, inside them
            figure.legend(handles=handles, title="set size", fontsize="small", frameon=False, ncols=len(handles),
                          loc="outside lower center")
        else:
            ax.legend(handles=handles, title="set size", fontsize="small", frameon=False, loc="best")
    return figure


def volcano(result: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Volcano plot of a per-gene result: statistic against -log10 permutation p.

    Parameters
    ----------
    result : pandas.DataFrame
        A :func:`permenrich.genes` result (columns ``statistic`` and ``pval``); genes with
        ``qval_bh`` below 0.05 are drawn in colour.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.

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
    _matplotlib()
    _check_mode(result, ("genes",), "volcano", ("gene", "statistic", "pval"))
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
