"""Per-gene two-group statistics on the device: one thread per (labelling, gene).

Consecutive threads take consecutive genes, so the reads of a sample row are coalesced;
each thread adds the drawn samples in their sorted order, as the CPU does. A matrix
streamed from disk goes through :func:`two_group_block_kernel` block by block (class sums
carried between blocks) and :func:`finish_two_group_kernel`.
"""

from __future__ import annotations

from numba import cuda

from .device import grid_genes_by_batch, kernel_jit, shuffled_correlation, statistic_from_sums, two_valued_correlation


@kernel_jit
def two_group_kernel(samples_by_gene, squares_by_gene, gene_mean, total_sum, total_sumsq, drawn_positions,
                     drawn_is_case, metric, out):
    """``out[b, g]``: statistic of gene g under labelling b (rows of ``drawn_positions``)."""
    g, b = cuda.grid(2)
    n_samples, n_genes = samples_by_gene.shape
    if g >= n_genes or b >= drawn_positions.shape[0]:
        return
    n_drawn = drawn_positions.shape[1]
    total = 0.0
    total_sq = 0.0
    for j in range(n_drawn):
        sample = drawn_positions[b, j]
        total += samples_by_gene[sample, g]
        total_sq += squares_by_gene[sample, g]
    out[b, g] = statistic_from_sums(total, total_sq, total_sum[g], total_sumsq[g], gene_mean[g], n_samples,
                                    n_drawn, drawn_is_case, metric)


@kernel_jit
def two_group_block_kernel(block, block_start, block_stop, gene_offset, gene_mean, drawn_positions, sums, sumsqs):
    """Add to ``sums[b, g]`` / ``sumsqs[b, g]`` the centred values (and squares) of the
    samples labelling ``b`` draws among block rows ``block_start..block_stop-1``.

    ``block`` columns are genes ``gene_offset..``. Blocks arrive in sample order (or hold
    all samples), so every gene adds its drawn samples in sorted order, as the CPU's
    ``accumulate_block`` does: identical float64 sums.
    """
    c, b = cuda.grid(2)
    if c >= block.shape[1] or b >= drawn_positions.shape[0]:
        return
    n_drawn = drawn_positions.shape[1]
    low = 0  # first drawn sample >= block_start (rows of drawn_positions are sorted)
    high = n_drawn
    while low < high:
        middle = (low + high) // 2
        if drawn_positions[b, middle] < block_start:
            low = middle + 1
        else:
            high = middle
    g = gene_offset + c
    mean = gene_mean[g]
    total = sums[b, g]
    total_sq = sumsqs[b, g]
    j = low
    while j < n_drawn and drawn_positions[b, j] < block_stop:
        centred = block[drawn_positions[b, j] - block_start, c] - mean
        total += centred
        total_sq += centred * centred
        j += 1
    sums[b, g] = total
    sumsqs[b, g] = total_sq


@kernel_jit
def finish_two_group_kernel(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case,
                            metric, out):
    """``out[b, g]`` from the drawn class's sums accumulated over all blocks."""
    g, b = cuda.grid(2)
    if g >= sums.shape[1] or b >= sums.shape[0]:
        return
    out[b, g] = statistic_from_sums(sums[b, g], sumsqs[b, g], total_sum[g], total_sumsq[g], gene_mean[g], n_samples,
                                    n_drawn, drawn_is_case, metric)


@kernel_jit
def correlation_kernel(genes_by_sample, phenotype, shuffles, out):
    """``out[b, g]``: r of gene g with the phenotype shuffled by ``shuffles[b]`` (samples
    summed in order, as on the CPU); consecutive threads take consecutive genes."""
    g, b = cuda.grid(2)
    if g >= genes_by_sample.shape[1] or b >= shuffles.shape[0]:
        return
    out[b, g] = shuffled_correlation(genes_by_sample, g, phenotype, shuffles[b])


@kernel_jit
def two_valued_correlation_kernel(genes_by_sample, phenotype, picked, step, other, gene_totals, shuffles, out):
    """``out[b, g]``: r of gene g with a two-valued phenotype shuffled by ``shuffles[b]``,
    from the smaller class's sums (as on the CPU); consecutive threads take consecutive genes."""
    g, b = cuda.grid(2)
    if g >= genes_by_sample.shape[1] or b >= shuffles.shape[0]:
        return
    out[b, g] = two_valued_correlation(genes_by_sample, g, phenotype, shuffles[b], picked, step, other,
                                       gene_totals[g])


def launch_two_group(samples_by_gene, squares_by_gene, gene_mean, total_sum, total_sumsq, drawn_positions,  # noqa: ANN001
                     drawn_is_case, metric, out, stream):
    """Two-group statistics of a matrix held on the device, one thread per (labelling, gene)."""
    blocks, threads = grid_genes_by_batch(samples_by_gene.shape[1], drawn_positions.shape[0])
    two_group_kernel[blocks, threads, stream](samples_by_gene, squares_by_gene, gene_mean, total_sum, total_sumsq,
                                      drawn_positions, drawn_is_case, metric, out)


def launch_two_group_block(block, block_start, block_stop, gene_offset, gene_mean, drawn_positions, sums,  # noqa: ANN001
                           sumsqs, stream):
    """Add one streamed block to the class sums, on ``stream``."""
    blocks, threads = grid_genes_by_batch(block.shape[1], drawn_positions.shape[0])
    two_group_block_kernel[blocks, threads, stream](block, block_start, block_stop, gene_offset, gene_mean,
                                                    drawn_positions, sums, sumsqs)


def launch_finish_two_group(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn,  # noqa: ANN001
                            drawn_is_case, metric, out, stream):
    """Statistics from the class sums accumulated over all streamed blocks."""
    blocks, threads = grid_genes_by_batch(sums.shape[1], sums.shape[0])
    finish_two_group_kernel[blocks, threads, stream](sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn,
                                             drawn_is_case, metric, out)


def launch_correlation(genes_by_sample, phenotype, shuffles, out, stream, two_valued=None):  # noqa: ANN001
    """Correlations with shuffled phenotypes, one thread per (shuffle, gene); with
    ``two_valued`` (picked, step, other, device gene totals) from the smaller class's sums."""
    blocks, threads = grid_genes_by_batch(genes_by_sample.shape[1], shuffles.shape[0])
    if two_valued is None:
        correlation_kernel[blocks, threads, stream](genes_by_sample, phenotype, shuffles, out)
    else:
        two_valued_correlation_kernel[blocks, threads, stream](genes_by_sample, phenotype, *two_valued, shuffles, out)
