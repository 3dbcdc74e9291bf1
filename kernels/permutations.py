"""Permutation draws on the device: one thread per permutation, the CPU's generator."""

from __future__ import annotations

from numba import cuda

from .device import fill_labelling, grid_1d, kernel_jit, random_set_null_row_sparse


@kernel_jit
def labellings_kernel(seed, perm_start, mode, exact, stratum_offsets, stratum_members, stratum_drawn,
                      stratum_radix, binom, factorial, pool, out):
    """``out[b]``: labelling ``perm_start + b`` (see :func:`permenrich.rng.fill_labellings`);
    ``pool[b]`` is the thread's scratch (largest stratum)."""
    b = cuda.grid(1)
    if b >= out.shape[0]:
        return
    fill_labelling(seed, perm_start + b, mode, exact, stratum_offsets, stratum_members, stratum_drawn,
                   stratum_radix, binom, factorial, pool[b], out[b])


@kernel_jit
def random_set_kernel(seed, perm_start, ranked_stat, weight, statistic, sizes, table_keys, table_values, sequence,
                      prefix, out):
    """``out[b, i]``: statistic of the random set of ``sizes[i]`` ranked genes (ascending)
    under gene-set permutation ``perm_start + b``, the CPU's cumulative null. The draws
    need no pool as long as the gene list: ``table_keys[b]``/``table_values[b]`` hold the
    shuffle's swaps (see :func:`permenrich.rng._random_sequence_sparse`); ``sequence[b]``
    and ``prefix[b]`` are scratch as long as the largest set."""
    b = cuda.grid(1)
    if b >= out.shape[0]:
        return
    random_set_null_row_sparse(seed, perm_start + b, ranked_stat, weight, statistic, sizes, table_keys[b],
                               table_values[b], sequence[b], prefix[b], out[b])


def launch_labellings(seed, perm_start, mode, exact, generator_arrays, pool, out, stream):  # noqa: ANN001
    """Fill ``out`` (n, width) with labellings ``perm_start ..``; ``generator_arrays`` are
    the plan's device arrays (offsets, members, drawn, radix, binom, factorial)."""
    blocks, threads = grid_1d(out.shape[0])
    labellings_kernel[blocks, threads, stream](seed, perm_start, mode, exact, *generator_arrays, pool, out)


def launch_random_sets(seed, perm_start, ranked_stat, weight, statistic, sizes, scratch, out, stream):  # noqa: ANN001
    """Fill ``out`` (n, n_sizes) with the random-set null of permutations ``perm_start ..``;
    ``scratch`` = (table_keys, table_values, sequence, prefix), one row per permutation."""
    blocks, threads = grid_1d(out.shape[0])
    random_set_kernel[blocks, threads, stream](seed, perm_start, ranked_stat, weight, statistic, sizes, *scratch, out)
