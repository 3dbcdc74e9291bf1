"""The device-neutral functions compiled as CUDA device functions.

One family, so that calls between them (draws -> bounded integers -> Philox, walk ->
ranking) bind to the CUDA versions. ``fastmath`` stays off: no fused multiply-add, so
float64 results match the CPU's bit for bit where the operation order is the same.
"""

from __future__ import annotations

from numba import cuda

from permenrich._compile import jit_family
from permenrich.enrich.running_sum import SCALAR_FUNCTIONS as WALK_FUNCTIONS
from permenrich.rng import SCALAR_FUNCTIONS as RNG_FUNCTIONS
from permenrich.stats.two_group import SCALAR_FUNCTIONS as TWO_GROUP_FUNCTIONS

_device = jit_family(RNG_FUNCTIONS + TWO_GROUP_FUNCTIONS + WALK_FUNCTIONS, cuda.jit(device=True))

permutation_word = _device._permutation_word
fill_labelling = _device._fill_labelling
draw_positions = _device._draw_positions
statistic_from_sums = _device._statistic_from_sums
rank_descending = _device._rank_descending
enrichment_scores = _device._enrichment_scores
sorted_positions_score = _device._sorted_positions_score
