"""Compute backends: each supplies the kernels that turn a batch of labellings into gene
statistics and set scores.

A backend has ``name``, ``xp`` (its array module), ``prepare_statistic``,
``prepare_sets``, ``labellings(plan, start, stop)``, ``gene_statistics``, ``set_scores``,
``score``, ``random_set_null``, ``to_host`` and ``describe``. The pipeline in
:mod:`permenrich.api` is shared by all of them.
"""

from __future__ import annotations

from typing import Any

from ..errors import OptionError, option
from .cpu import CpuBackend

DEVICES = ("cpu", "gpu", "auto")


def get_backend(device: str, *, threads: int | None = None, memory: int | None = None) -> Any:
    """The backend for ``device``: ``"cpu"``, ``"gpu"`` (CUDA; an error without one) or
    ``"auto"`` (the GPU when Numba sees a real one, else the CPU). ``memory``: the run's
    budget in bytes (``--memory``), of which a GPU backend takes a quarter for its device
    scratch (ranking tables, sort scratch): the batches' buffers take another quarter and
    the null scores kept for a second pass at most half, so that the run's device memory
    stays within the budget. None: the GPU backend's default scratch."""
    if device == "cpu":
        return CpuBackend(threads=threads)
    if device in ("gpu", "auto"):
        from .gpu import GpuBackend, gpu_available

        if device == "gpu" or gpu_available():
            if memory is None:
                return GpuBackend(threads=threads)
            return GpuBackend(threads=threads, scratch_bytes=memory // 4)
        return CpuBackend(threads=threads)
    raise OptionError(f"{option('device')} must be one of {', '.join(DEVICES)}, got {device!r}")


__all__ = ["CpuBackend", "DEVICES", "get_backend"]
