"""Compute backends: each supplies the kernel that scores a batch of labellings.

A backend has ``name``, ``xp`` (its array module), ``prepare(...)``,
``score(drawn_positions, keep_stat=False) -> (es, stat)``, ``to_host(array)`` and
``describe()``. The pipeline in :mod:`permenrich.api` is shared by all of them.
"""

from __future__ import annotations

from typing import Any

from ..errors import OptionError
from .cpu import CpuBackend

DEVICES = ("cpu",)


def get_backend(device: str, *, threads: int | None = None) -> Any:
    """The backend for ``device``, or an :class:`OptionError` naming the choices."""
    if device == "cpu":
        return CpuBackend(threads=threads)
    raise OptionError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")


__all__ = ["CpuBackend", "DEVICES", "get_backend"]
