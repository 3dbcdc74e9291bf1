"""Shared fixtures.

Without a CUDA GPU, Numba-CUDA kernels run in Numba's CUDA simulator so that CI
exercises their logic; the variable must be set before Numba is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real data sets, never copied into the repo),
    or the folder named by ``PERMENRICH_SHARED_DATA`` (e.g. a copy carried to a GPU machine)."""
    override = os.environ.get("PERMENRICH_SHARED_DATA")
    path = Path(override) if override else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("../shared/data not found: real-data tests need the shared folder beside the checkout")
    return path
