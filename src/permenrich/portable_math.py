"""Logarithm and power from IEEE additions, multiplications and divisions only.

Two statistics need a transcendental function: the hit weight ``|s| ** p`` of GSEA's
running sum for ``p`` other than 0, 1 and 2 (GSEA's ``weighted_p1.5``, say), and the
``log2_ratio_of_classes`` metric. The C library's ``pow``/``log2`` (the CPU's) and
CUDA's libdevice ones (the GPU's) are different algorithms and differ in the last bit
for some inputs: on an H200 the ES at ``p = 1.5`` differed from the CPU's. The
functions here compute them in double-double arithmetic built on Dekker's error-free
transformations (:func:`_two_sum`, :func:`_two_product`), so every backend that rounds
each operation to nearest, without fused multiply-adds, gets the same bits;
:func:`math.frexp` and :func:`math.ldexp` are exact wherever they are used here.

Method: ``a = m 2**e`` with ``m`` in [sqrt(1/2), sqrt(2)); ``log m = 2 atanh(f)``,
``f = (m - 1) / (m + 1)``, with ``f`` to double-double and the series' tail in double
(:func:`_log_double_double`); ``log2 a = log a / ln 2`` rounded once; for the power,
``t = p log a`` to double-double and ``exp t = 2**n exp r`` with ``|r| <= ln(2)/2``, the
Taylor series' first terms in double-double. Results are within one unit in the last
place of the exact value (powers for weights up to about 10; tests compare with
``decimal`` at 60 digits) and correctly rounded for about 99.7% of inputs.

References
----------
Dekker TJ (1971) A floating-point technique for extending the available precision.
Numer Math 18:224-242.
"""

from __future__ import annotations

import math

#: 2**27 + 1: Dekker's splitting constant for binary64.
_SPLITTER = 134217729.0
#: ln 2 in two parts (fdlibm's): the high part has 21 trailing zero bits, so that
#: ``n * _LN2_HIGH`` is exact for |n| < 2**21.
_LN2_HIGH = 6.93147180369123816490e-01
_LN2_LOW = 1.90821492927058770002e-10
_INV_LN2 = 1.4426950408889634
#: 1 / ln 2 in two parts (the low part is 1/ln2 - _INV_LN2, to double precision).
_INV_LN2_LOW = 2.0355273740931033e-17
_SQRT_HALF = 0.7071067811865476
#: exp(t) overflows above this t and is below half the smallest subnormal below the other.
_EXP_OVERFLOW = 709.79
_EXP_UNDERFLOW = -745.2


def _two_sum(a, b):
    """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _two_product(a, b):
    """(p, e) with p = fl(a * b) and p + e = a * b exactly (Dekker; no FMA needed)."""
    p = a * b
    c = _SPLITTER * a
    a_high = c - (c - a)
    a_low = a - a_high
    c = _SPLITTER * b
    b_high = c - (c - b)
    b_low = b - b_high
    e = ((a_high * b_high - p) + a_high * b_low + a_low * b_high) + a_low * b_low
    return p, e


def _scale_by_power_of_two(x, n):
    """x * 2**n with at most one rounding (the final product's), for any int n."""
    while n > 1000:
        x = x * math.ldexp(1.0, 1000)
        n -= 1000
    while n < -1000:
        x = x * math.ldexp(1.0, -1000)
        n += 1000
    return x * math.ldexp(1.0, n)


def _log_double_double(a):
    """(high, low) with high + low = log(a) to about 2**-60 relative (the series' tail is
    summed in double), for finite a > 0."""
    m, e = math.frexp(a)
    if m < _SQRT_HALF:
        m = m * 2.0
        e -= 1
    # f = (m - 1) / (m + 1) to double-double: m - 1 is exact (Sterbenz), m + 1 may round.
    numerator = m - 1.0
    denominator, denominator_low = _two_sum(m, 1.0)
    f = numerator / denominator
    product, product_low = _two_product(f, denominator)
    f_low = (((numerator - product) - product_low) - f * denominator_low) / denominator
    # log m = 2f + 2f^3/3 + 2f^5/5 + ...: the tail, under 1% of 2f, in double.
    f2 = f * f
    series = 1.0 / 25.0
    for odd in range(23, 1, -2):
        series = 1.0 / odd + f2 * series
    tail = 2.0 * f * (f2 * series)
    log_m, log_m_low = _two_sum(2.0 * f, 2.0 * f_low + tail)
    # log a = e ln2 + log m: e * _LN2_HIGH is exact.
    log_a, log_a_low = _two_sum(e * _LN2_HIGH, log_m)
    log_a_low = log_a_low + (log_m_low + e * _LN2_LOW)
    return _two_sum(log_a, log_a_low)


def _log2(x):
    """``log2(x)`` (``-inf`` at 0, NaN below; exact at powers of two)."""
    if not x > 0.0:
        return -math.inf if x == 0.0 else math.nan
    if x == math.inf:
        return math.inf
    log_x, log_x_low = _log_double_double(x)
    high, low = _two_product(log_x, _INV_LN2)
    low = low + (log_x_low * _INV_LN2 + log_x * _INV_LN2_LOW)
    return high + low


def _power(a, p):
    """``a ** p`` for ``a >= 0`` (or NaN) and finite ``p > 0``; see the module docstring."""
    if not a > 0.0:
        return a  # 0 (0 ** p = 0 for p > 0) or NaN
    if a == math.inf:
        return math.inf
    if a == 1.0:
        return 1.0
    log_a, log_a_low = _log_double_double(a)
    # Far beyond the range of exp (a huge p): settled before the double-double product,
    # whose splitting of p overflows to NaN for |p| > ~1e300 (and a NaN exponent made the
    # scaling by 2**n loop for ever). |log a| >= 1.1e-16 for a != 1, so such a p always
    # lands here.
    if p * log_a > _EXP_OVERFLOW + 1.0:
        return math.inf
    if p * log_a < _EXP_UNDERFLOW - 1.0:
        return 0.0
    # t = p log a
    t, t_low = _two_product(p, log_a)
    t_low = t_low + p * log_a_low
    t, t_low = _two_sum(t, t_low)
    if t > _EXP_OVERFLOW:
        return math.inf
    if t < _EXP_UNDERFLOW:
        return 0.0
    # exp t = 2**n exp r, r = t - n ln2 (|r| <= ln2 / 2 + rounding).
    n = int(math.floor(t * _INV_LN2 + 0.5))
    r, r_low = _two_sum(t, -(n * _LN2_HIGH))
    r_low = r_low + (t_low - n * _LN2_LOW)
    r, r_low = _two_sum(r, r_low)
    # exp r = 1 + r + r^2/2 + r^3 (1/6 + r/24 + ...): the first three in double-double.
    square, square_low = _two_product(r, r)
    cubic = 1.0 / 6227020800.0  # 1/13!
    factorial = 6227020800.0
    for order in range(12, 2, -1):
        factorial = factorial / (order + 1)
        cubic = 1.0 / factorial + r * cubic
    cubic = cubic * (square * r)
    value, value_low = _two_sum(1.0, r)
    value, low = _two_sum(value, 0.5 * square)
    value_low = value_low + low + (r_low + (0.5 * square_low + r * r_low) + cubic)
    return _scale_by_power_of_two(value + value_low, n)


#: The device-neutral functions of this module, in call order.
SCALAR_FUNCTIONS = (_two_sum, _two_product, _scale_by_power_of_two, _log_double_double, _log2, _power)
