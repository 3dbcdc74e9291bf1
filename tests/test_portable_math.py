"""The portable logarithm and power: accurate (within one unit in the last place of a
60-digit decimal reference) and the same bits compiled as in plain Python, which is
what makes CPU and GPU agree (the GPU kernels compile the same functions)."""

import math
import random
from decimal import Decimal, localcontext

import numpy as np
import pytest

from permenrich._compile import cpu_family
from permenrich.portable_math import SCALAR_FUNCTIONS, _log2, _power

_compiled = cpu_family(SCALAR_FUNCTIONS)


def _ulps(x: float, y: float) -> int:
    return abs(int(np.float64(x).view(np.int64)) - int(np.float64(y).view(np.int64)))


def _power_reference(a: float, p: float) -> float:
    with localcontext() as context:
        context.prec = 60
        return float(Decimal(a) ** Decimal(p))


def _log2_reference(x: float) -> float:
    with localcontext() as context:
        context.prec = 60
        return float(Decimal(x).ln() / Decimal(2).ln())


def _samples(p: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    span = 700.0 / max(p, 1.0)  # keep a ** p within the normal range
    values = [math.exp(rng.uniform(-span, span)) for _ in range(n)]
    values += [1.0 + rng.uniform(-1e-3, 1e-3) for _ in range(n)]  # log a near 0
    values += [rng.uniform(0.0, 10.0) for _ in range(n)]
    return values


@pytest.mark.parametrize("p", [0.1, 0.5, 1.5, 2.5, 3.0, 7.3, 10.0])
def test_power_is_within_one_ulp_and_mostly_correctly_rounded(p):
    values = _samples(p, 300, seed=int(p * 10))
    errors = [_ulps(_power(a, p), _power_reference(a, p)) for a in values]
    assert max(errors) <= 1
    assert sum(e > 0 for e in errors) <= 0.02 * len(values)


def test_log2_is_within_one_ulp_and_exact_at_powers_of_two():
    values = _samples(1.0, 400, seed=5) + [5e-324, 1e-310, 1.7976931348623157e308]
    errors = [_ulps(_log2(x), _log2_reference(x)) for x in values]
    assert max(errors) <= 1
    assert sum(e > 0 for e in errors) <= 0.02 * len(values)
    for k in range(-1074, 1024, 7):
        assert _log2(math.ldexp(1.0, k)) == k


def test_special_values():
    assert _power(0.0, 1.5) == 0.0 and _power(math.inf, 1.5) == math.inf
    assert math.isnan(_power(math.nan, 1.5))
    assert _power(1.0, 7.3) == 1.0 and _power(4.0, 0.5) == 2.0 and _power(2.0, 3.0) == 8.0
    assert _power(1e300, 3.0) == math.inf and _power(1e-300, 3.0) == 0.0
    assert _power(1e-300, 1.05) == _power_reference(1e-300, 1.05)  # a subnormal result
    assert _log2(0.0) == -math.inf and _log2(math.inf) == math.inf and math.isnan(_log2(-1.0))
    assert _log2(1.0) == 0.0
    # a huge exponent (a user's --weight 1e308): the double-double split of p overflowed
    # to NaN and the scaling by 2**NaN never ended
    for a, expected in ((0.5, 0.0), (1.0, 1.0), (1.0 + 2**-52, math.inf), (3.0, math.inf), (1e-300, 0.0)):
        assert _power(a, 1e308) == expected and _compiled._power(a, 1e308) == expected
        assert _power(a, math.ldexp(1.0, 1000)) == expected


def test_huge_weight_runs():
    """GSEA's exponent p = 1e308: |s| ** p is 0, 1 or inf, and the run completes (the
    infinite weights dominate the running sum as for any weight that overflows)."""
    import pandas as pd

    import permenrich

    rng = np.random.default_rng(2)
    scores = pd.Series(rng.normal(0, 2, size=200), index=[f"g{i}" for i in range(200)])
    sets = {"A": [f"g{i}" for i in range(0, 60, 3)], "B": [f"g{i}" for i in range(100, 140)]}
    table = permenrich.prerank(scores, sets, permutations=20, seed=1, weight=1e308, min_size=5, device="cpu")
    assert len(table) == 2 and table.pval.notna().all()


def test_compiled_functions_give_the_plain_python_bits():
    """Numba's CPU code rounds every operation as Python does (no contraction into fused
    multiply-adds, no reassociation): the simulator's bits are the CPU's."""
    values = _samples(1.5, 200, seed=9) + [5e-324, 1e-310, 1e300]
    for p in (0.5, 1.5, 3.7):
        got = np.array([_compiled._power(a, p) for a in values])
        expected = np.array([_power(a, p) for a in values])
        assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))
    got = np.array([_compiled._log2(x) for x in values])
    expected = np.array([_log2(x) for x in values])
    assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))
