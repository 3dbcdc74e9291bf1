"""The device-neutral functions compiled as CUDA device functions.

One family, so that calls between them (draws -> bounded integers -> Philox, walk ->
ranking) bind to the CUDA versions. ``fastmath`` stays off, and NVVM is told not to
contract multiplies and adds into fused multiply-adds (``-fma=0``: NVVM contracts by
default even without fastmath), so float64 results match the CPU's bit for bit where
the operation order is the same.
"""

from __future__ import annotations

import inspect
import os

from numba import cuda

from permenrich._compile import jit_family
from permenrich.enrich.linear import SCALAR_FUNCTIONS as LINEAR_FUNCTIONS
from permenrich.enrich.running_sum import SCALAR_FUNCTIONS as WALK_FUNCTIONS
from permenrich.nulls import SCALAR_FUNCTIONS as NULL_FUNCTIONS
from permenrich.rng import SCALAR_FUNCTIONS as RNG_FUNCTIONS
from permenrich.stats.correlation import SCALAR_FUNCTIONS as CORRELATION_FUNCTIONS
from permenrich.stats.two_group import SCALAR_FUNCTIONS as TWO_GROUP_FUNCTIONS

def _compile_without_fma_contraction() -> bool:
    """Make Numba-CUDA pass ``-fma=0`` to NVVM unless a kernel asks for fastmath.

    Numba sets NVVM options only for fastmath; NVVM's default (``-fma=1``) fuses a*b+c,
    which rounds once where the CPU rounds twice. Returns whether the option is in place
    (False where this Numba has no such hook, e.g. the simulator or another layout).
    """
    try:
        from numba.cuda.cudadrv import nvvm
    except ImportError:  # pragma: no cover - depends on the Numba build
        return False
    compile_ir = getattr(nvvm, "compile_ir", None)
    if compile_ir is None:  # pragma: no cover
        return False
    if getattr(compile_ir, "without_fma_contraction", False):
        return True

    def compile_ir_without_fma(llvmir, **options):  # noqa: ANN001, ANN003 - Numba's signature
        if not options.get("fastmath", False):
            options.setdefault("fma", False)
        return compile_ir(llvmir, **options)

    compile_ir_without_fma.without_fma_contraction = True  # type: ignore[attr-defined]
    nvvm.compile_ir = compile_ir_without_fma
    return True


#: Options of every kernel's ``cuda.jit``. Numba-CUDA >= 0.2x links kernels with
#: link-time optimisation wherever nvJitLink is installed: NVVM then emits LTO-IR, and
#: nvJitLink, which takes no ``-fma=0``, generates the code and contracts a*b+c again
#: (seen on an H200: the ES differed from the CPU's in the last bits). Our kernels call
#: only our own device functions, compiled into the same NVVM module, so LTO gains
#: nothing here: it is turned off where this Numba-CUDA has the option.
KERNEL_OPTIONS = {"lto": False} if "lto" in inspect.signature(cuda.jit).parameters else {}

#: Whether kernels compile without FMA contraction (reported in run.json's backend section).
FMA_CONTRACTION_OFF = _compile_without_fma_contraction()


def kernel_jit(function):  # noqa: ANN001, ANN201 - a Python function in, a Numba kernel out
    """``cuda.jit`` with :data:`KERNEL_OPTIONS`: the decorator of every kernel here.

    The function goes in the same call: Numba-CUDA 0.30's ``cuda.jit(**options)``, the
    decorator form, forgets ``lto``. Kernels are cached on disk, as the CPU kernels are:
    NVVM and ptxas take seconds for the dozen kernels of a run, in every new process
    otherwise. Numba checks a cached kernel against its own file only;
    :func:`permenrich._compile.drop_stale_kernel_caches` drops the caches when any source
    they compile in changes. ``PERMENRICH_GPU_KERNEL_CACHE=0`` turns the cache off (a
    way out should a Numba-CUDA version fail to cache or load a kernel)."""
    return cuda.jit(function, cache=os.environ.get("PERMENRICH_GPU_KERNEL_CACHE", "1") != "0", **KERNEL_OPTIONS)

_device = jit_family(dict.fromkeys(RNG_FUNCTIONS + TWO_GROUP_FUNCTIONS + WALK_FUNCTIONS + CORRELATION_FUNCTIONS
                                   + LINEAR_FUNCTIONS + NULL_FUNCTIONS),
                     cuda.jit(device=True))

permutation_word = _device._permutation_word
fill_labelling = _device._fill_labelling
statistic_from_sums = _device._statistic_from_sums
rank_descending = _device._rank_descending
enrichment_scores = _device._enrichment_scores
sorted_positions_score = _device._sorted_positions_score
random_set_null_row = _device._random_set_null_row
random_set_null_row_sparse = _device._random_set_null_row_sparse
descending_key = _device._descending_key
hit_weight = _device._hit_weight
ks_from_sorted_positions = _device._ks_from_sorted_positions
shuffled_correlation = _device._shuffled_correlation
two_valued_correlation = _device._two_valued_correlation
linear_set_score = _device._linear_set_score
add_to_digits = _device._add_to_digits
carry_digits = _device._carry_digits
first_pass_value = _device._first_pass_value
second_pass_value = _device._second_pass_value
count_at_most = _device._count_at_most

#: Threads per block of every kernel; launchers in this package own the grid sizes.
THREADS_PER_BLOCK = 128


def grid_1d(n: int) -> tuple[int, int]:
    """(blocks, threads) for one thread per item of ``n``."""
    return (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK, THREADS_PER_BLOCK


def grid_genes_by_batch(n_genes: int, n_batch: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(blocks, threads) for one thread per (gene, labelling): consecutive threads take
    consecutive genes, so that a sample row is read coalesced."""
    return ((n_genes + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK, n_batch), (THREADS_PER_BLOCK, 1)
