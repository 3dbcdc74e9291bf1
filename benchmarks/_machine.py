"""What the benchmark reports say about the machine and the process."""

from __future__ import annotations

import platform
import resource


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def git_commit() -> str:
    """The checkout's short commit hash, for the report."""
    import subprocess
    from pathlib import Path

    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()


def publish(report: str, out: object = None) -> int:
    """Print a report and, with ``out`` (a Path), write it there; the script's exit status."""
    print(report)
    if out is not None:
        out.write_text(report)  # type: ignore[attr-defined]
    return 0
