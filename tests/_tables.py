"""Table comparisons for the identity promises (batch size, threads, streaming, workers,
CPU vs GPU): equal to the bit, as the written files are."""

from __future__ import annotations

import numpy as np
import pandas as pd


def assert_identical(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """The same columns, index and dtypes, every value exactly equal and every float with
    the same bits: ``check_exact=True`` alone takes 0.0 and -0.0 as equal, which print
    differently in results.tsv (NaN still equals NaN)."""
    pd.testing.assert_frame_equal(left, right, check_exact=True)
    for column in left.columns:
        a, b = left[column].to_numpy(), right[column].to_numpy()
        if a.dtype.kind == "f":
            bits = f"i{a.dtype.itemsize}"
            same = (a.view(bits) == b.view(bits)) | (np.isnan(a) & np.isnan(b))
            assert same.all(), f"column {column!r}: rows {np.flatnonzero(~same)[:5].tolist()} differ in their bits"
