"""Permutation draws on the device: one thread per permutation, the CPU's generator."""

from __future__ import annotations

from numba import cuda

from permenrich.rng import STREAM_GENE_SET_BASE

from .device import draw_positions, fill_labelling, grid_1d, sorted_positions_score


@cuda.jit
def labellings_kernel(seed, perm_start, mode, exact, stratum_offsets, stratum_members, stratum_drawn,
                      stratum_radix, binom, factorial, pool, out):
    """``out[b]``: labelling ``perm_start + b`` (see :func:`permenrich.rng.fill_labellings`);
    ``pool[b]`` is the thread's scratch (largest stratum)."""
    b = cuda.grid(1)
    if b >= out.shape[0]:
        return
    fill_labelling(seed, perm_start + b, mode, exact, stratum_offsets, stratum_members, stratum_drawn,
                   stratum_radix, binom, factorial, pool[b], out[b])


@cuda.jit
def random_set_kernel(seed, perm_start, ranked_stat, weight, statistic, sizes, pool, positions, out):
    """``out[b, i]``: statistic of a random set of ``sizes[i]`` ranked genes under gene-set
    permutation ``perm_start + b``. ``pool[b]`` must hold the identity (restored after
    each draw); ``positions[b]`` is scratch as long as the largest set."""
    b = cuda.grid(1)
    if b >= out.shape[0]:
        return
    n_genes = ranked_stat.shape[0]
    for i in range(sizes.shape[0]):
        k = sizes[i]
        draw_positions(seed, perm_start + b, STREAM_GENE_SET_BASE | k, k, pool[b], positions[b, :k])
        out[b, i] = sorted_positions_score(positions[b, :k], ranked_stat, weight, statistic, n_genes)


def launch_labellings(seed, perm_start, mode, exact, generator_arrays, pool, out):  # noqa: ANN001
    """Fill ``out`` (n, width) with labellings ``perm_start ..``; ``generator_arrays`` are
    the plan's device arrays (offsets, members, drawn, radix, binom, factorial)."""
    blocks, threads = grid_1d(out.shape[0])
    labellings_kernel[blocks, threads](seed, perm_start, mode, exact, *generator_arrays, pool, out)


def launch_random_sets(seed, perm_start, ranked_stat, weight, statistic, sizes, pool, positions, out):  # noqa: ANN001
    """Fill ``out`` (n, n_sizes) with the random-set null of permutations ``perm_start ..``."""
    blocks, threads = grid_1d(out.shape[0])
    random_set_kernel[blocks, threads](seed, perm_start, ranked_stat, weight, statistic, sizes, pool, positions, out)
