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


def whole_run(command: list[str], environment: dict | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of one whole run of ``command`` in a fresh process: start-up,
    reading, the run and writing the output, as a user meets them."""
    import subprocess
    import time

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, env=environment)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - started, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def publish(report: str, out: object = None) -> int:
    """Print a report and, with ``out`` (a Path), write it there; the script's exit status."""
    print(report)
    if out is not None:
        out.write_text(report)  # type: ignore[attr-defined]
    return 0


def marginal_costs(tools: dict, counts: tuple[int, int], rounds: int, environment: dict) -> tuple[dict, dict]:
    """Side-by-side marginal cost per permutation of command-line tools.

    ``tools`` maps a name to ``command(n_perm) -> argv``; each command prints, as its last
    line, JSON with ``wall`` and ``cpu`` seconds (and anything else, e.g. ``n_sets``).
    Every tool is warmed up once, then each round runs every tool at both counts in turn
    (fresh processes, alternating, so drifts of the machine hit all tools alike). The
    marginal cost between the two counts drops start-up out.

    Returns
    -------
    marginal : dict
        name -> {"cpu": median ms, "wall": median ms, "cpu_range": (min, max)} per permutation.
    first : dict
        name -> the first run's JSON at the smaller count (for what a tool reports).
    """
    import json
    import statistics
    import subprocess

    def run(command: list[str]) -> dict:
        result = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
        return json.loads(result.stdout.strip().splitlines()[-1])

    for command in tools.values():
        run(command(20))  # warm-up: Numba's cache, R's packages
    runs = {name: {n: [] for n in counts} for name in tools}
    for _ in range(rounds):
        for name, command in tools.items():
            for n in counts:
                runs[name][n].append(run(command(n)))
    small, big = counts
    marginal = {}
    for name in tools:
        per = {kind: [(b[kind] - s[kind]) / (big - small) * 1000 for s, b in zip(runs[name][small], runs[name][big])]
               for kind in ("cpu", "wall")}
        marginal[name] = {"cpu": statistics.median(per["cpu"]), "wall": statistics.median(per["wall"]),
                          "cpu_range": (min(per["cpu"]), max(per["cpu"]))}
    return marginal, {name: runs[name][small][0] for name in tools}
