"""One runner for every mode: prepare, score permutation ranges, merge, finish.

A mode (:mod:`permenrich.modes`) is a ``prepare(options) -> Prepared`` function: it reads
and checks the inputs, builds the backend and the observed scores, and returns

* a :class:`Job` — how to score permutations ``[start, stop)`` and a fresh accumulator
  for them — and
* ``finish(accumulator, timings)``, which turns the merged accumulator into the table
  and its provenance.

:func:`run` executes the job's passes (one, or two for GSEA's FDR/FWER) either here, in
batches (:func:`run_local`), or on a Dask cluster (:func:`run_distributed`): the
permutations are cut into ranges, each range is a task that a worker runs on its own
copy of the job (prepared once per worker process from the same options), and the
workers' accumulator states are merged on the client. Accumulators merge by integer
additions (counts, exact sums), so every split of the permutations, every number of
workers and every order of completion gives byte-identical results.

Accumulator protocol (see :class:`permenrich.nulls.GseaNullAccumulator`):
``passes``; ``add(pass_index, batch)``; ``state(pass_index) -> dict`` of host arrays;
``merge(pass_index, state)``; ``end_pass(pass_index) -> setup`` (after a pass is
complete, what the next pass needs); ``begin_pass(pass_index, setup)``; ``finish()``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ClusterError

logger = logging.getLogger("permenrich")

ProgressCallback = Callable[[int, int], None]

#: A run whose remaining time, estimated from its second batch, exceeds this is warned about.
LONG_RUN_SECONDS = 3600.0
#: Ranges per Dask thread: enough to balance the load and to lose little when a worker
#: dies (its ranges are recomputed), few enough that each task runs for seconds.
RANGES_PER_THREAD = 4
#: How often a run sends its options to the workers again after losing every copy.
MAX_RESENDS = 3


@dataclass
class Job:
    """The permutation work of a run, as every process that runs part of it sees it.

    Attributes
    ----------
    n_perm : int
        Permutations 0 .. n_perm - 1 (permutation k is a pure function of (seed, k)).
    batch_size : int
        Permutations scored per call of ``score`` (bounded by the memory budget).
    cache : bool or int
        How many permutations' first-pass scores may be kept for the second pass in one
        process (``True``: all, ``False``/0: none; an int caps them, e.g. at what half of
        the memory budget holds); the others are scored again from (seed, k).
    score : callable
        ``score(start, stop)``: the batch of null scores of permutations [start, stop).
    new_accumulator : callable
        A fresh, empty accumulator for this run's observed scores.
    """

    n_perm: int
    batch_size: int
    cache: bool | int
    score: Callable[[int, int], Any]
    new_accumulator: Callable[[], Any]


@dataclass
class Prepared:
    """A prepared run: its :class:`Job` (None when the mode needs no permutations) and
    ``finish(accumulator, timings) -> table``."""

    job: Job | None
    finish: Callable[[Any, dict], pd.DataFrame]


def run(prepare: Callable[[dict], Prepared], options: dict, *, client: Any = None,
        progress: ProgressCallback | bool | None = None) -> pd.DataFrame:
    """Prepare a run from ``options``, execute its permutations here or on ``client``
    (a ``dask.distributed.Client``), and return its table.

    Parameters
    ----------
    prepare
        A mode's prepare function (module level, so that workers can run it too).
    options
        The mode's options (picklable; sent once to every worker with a ``client``).
    client
        None: run here. A Dask client: permutation ranges run as tasks on its workers.
    progress
        ``progress(done, total)`` after each batch (local) or range (Dask); ``True``: a
        tqdm bar.
    """
    from .options import check_options

    check_options(options)  # before any file is read or any backend is built
    with WarningsRecorded() as warnings:
        table = _run(prepare, options, client, progress)
    if warnings.messages and isinstance(table.attrs.get("run"), dict):
        table.attrs["run"]["warnings"] = warnings.messages
    return table


def _run(prepare: Callable[[dict], Prepared], options: dict, client: Any,
         progress: ProgressCallback | bool | None) -> pd.DataFrame:
    started = time.perf_counter()
    # On a cluster the workers start preparing (reading the inputs) while the client does.
    cluster = _Cluster(client, prepare, options) if client is not None else None
    try:
        with collection_paused():
            prepared = prepare(options)
    except BaseException:
        if cluster is not None:
            cluster.cancel()
        raise
    if prepared.job is None:
        if cluster is not None:
            cluster.cancel()
        return prepared.finish(None, {"setup_seconds": time.perf_counter() - started})
    setup_seconds = time.perf_counter() - started
    from .nulls import NonFiniteScores

    try:
        if cluster is None:
            accumulator, timings = run_local(prepared.job, progress)
        else:
            accumulator, timings = run_distributed(cluster, prepared.job, progress)
    except NonFiniteScores:
        raise _non_finite_error(options) from None
    timings["setup_seconds"] = setup_seconds
    return prepared.finish(accumulator, timings)


class WarningsRecorded(logging.Handler):
    """Collects the warnings the ``permenrich`` logger gives in this thread while a run
    prepares, permutes and finishes (repeated probes dropped, ids collapsed, a p-value
    floor, ...), so that run.json and the report list what the console said about the
    analysis (not notices about the process, ``extra={"console_only": True}``: kernels
    compiling, a long run ahead). They are still printed as before."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._thread = threading.get_ident()
        self._print_too = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._print_too:  # Python's last resort would have printed it, had no handler been found
            logging.lastResort.handle(record)
        # not another run's (in another thread), nor a notice about the process (compiling)
        if record.thread == self._thread and not getattr(record, "console_only", False):
            message = record.getMessage()
            if message not in self.messages:
                self.messages.append(message)

    def __enter__(self) -> WarningsRecorded:
        # Without a handler of the user's (plain Python), warnings go to stderr through
        # logging's last resort, which is skipped once any handler, this one, takes them.
        self._print_too = not logger.hasHandlers() and logging.lastResort is not None
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logger.removeHandler(self)


def _non_finite_error(options: dict) -> Exception:
    """The one-line error for null scores that are not finite: with a running-sum weight
    p, |statistic| ** p (or the sum over a set's members) overflowing float64 is the cause
    a user can act on."""
    from .errors import InputError, option

    weight = options.get("weight")
    if weight is not None and float(weight) > 2:
        return InputError(f"the permutations' enrichment scores overflow: hit weights |statistic| ** {weight:g} "
                          f"exceed the float64 range; use a smaller {option('weight')} (GSEA uses 0, 1, 1.5 or 2)")
    return InputError("the permutations' scores are not finite (overflow in the statistics); check the input for "
                      "extreme values")


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a run reads its inputs and prepares.

    Parsing makes hundreds of thousands of small containers (a list per line) and no
    reference cycles, while each full collection it triggers walks every object the
    imported libraries hold (about 150,000 with pandas and Numba: ~70 ms each, measured
    on the leukemia CHIP read at 40-270 ms instead of 40 ms). Reference counting frees
    everything as usual; collection resumes afterwards (unless the caller had it off).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Progress:
    """Counts permutations done against the run's total and reports to a callback
    (``True``: a tqdm bar, see :class:`TqdmBar`)."""

    def __init__(self, callback: ProgressCallback | bool | None, total: int) -> None:
        self.callback = TqdmBar() if callback is True else (callback or None)
        self.total = total
        self.done = 0

    def advance(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)


class TqdmBar:
    """``progress=True``: a tqdm bar (a widget in Jupyter, text in a terminal), as a
    ``progress(done, total)`` callback. tqdm is imported only here."""

    def __init__(self) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError as error:  # pragma: no cover - tqdm is a dependency
            from .errors import OptionError

            raise OptionError("progress=True needs tqdm: pip install tqdm") from error
        self._tqdm = tqdm
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = self._tqdm(total=total, unit="perm", desc="permutations")
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()


def batches(start: int, stop: int, size: int) -> Iterator[tuple[int, int]]:
    """Consecutive ranges of at most ``size`` permutations covering [start, stop)."""
    for first in range(start, stop, size):
        yield first, min(stop, first + size)


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} seconds"


def run_local(job: Job, progress: ProgressCallback | bool | None = None) -> tuple[Any, dict]:
    """Every pass of ``job`` in this process, batch by batch; returns the accumulator and
    timings.

    With two passes the first pass's batches are kept for the second as far as
    ``job.cache`` allows (a prefix of whole batches), and the rest regenerated from
    (seed, k): the second pass sees the same scores either way. The first batch carries one-time costs (kernel compilation or loading from
    Numba's cache): it is timed apart (``first_batch_seconds``), and the per-permutation
    time is measured on the batches after it. After the second batch, a run whose
    remaining time is estimated above :data:`LONG_RUN_SECONDS` logs a warning.
    """
    accumulator = job.new_accumulator()
    passes = accumulator.passes
    limit = cached_permutations(job) if passes > 1 else 0
    # The kept batches are a prefix [0, kept_until) of whole batches within the limit.
    kept_until = 0
    for _, stop in batches(0, job.n_perm, job.batch_size):
        if stop > limit:
            break
        kept_until = stop
    cache = kept_until > 0
    total = job.n_perm * passes - kept_until * (passes - 1)
    tracker = Progress(progress, total)
    timings: dict[str, Any] = {}
    steady_seconds, steady_permutations, batch_index = 0.0, 0, 0
    kept: list[Any] = []
    for pass_index in range(passes):
        pass_started = time.perf_counter()
        first = 0
        if pass_index > 0 and cache:
            for scores in kept:
                accumulator.add(pass_index, scores)
            kept.clear()
            first = kept_until
        if first < job.n_perm:
            for start, stop in batches(first, job.n_perm, job.batch_size):
                batch_started = time.perf_counter()
                scores = job.score(start, stop)
                accumulator.add(pass_index, scores)
                if pass_index == 0 and stop <= kept_until:
                    kept.append(scores)
                tracker.advance(stop - start)
                seconds = time.perf_counter() - batch_started
                if batch_index == 0:
                    timings["first_batch_seconds"] = seconds
                else:
                    steady_seconds += seconds
                    steady_permutations += stop - start
                if batch_index == 1:
                    _warn_if_long(seconds / (stop - start), total - tracker.done, job.n_perm, passes,
                                  kept_until == job.n_perm)
                batch_index += 1
        setup = accumulator.end_pass(pass_index)
        if pass_index + 1 < passes:
            accumulator.begin_pass(pass_index + 1, setup)
        timings[("first" if pass_index == 0 else "second") + "_pass_seconds"] = time.perf_counter() - pass_started
    timings.setdefault("second_pass_seconds", 0.0)
    timings["permutations_scored"] = total
    if steady_permutations:
        timings["per_permutation_ms"] = 1000 * steady_seconds / steady_permutations
    return accumulator, timings


def cached_permutations(job: Job) -> int:
    """How many permutations' first-pass scores ``job.cache`` lets a process keep."""
    if job.cache is True:
        return job.n_perm
    return max(0, min(job.n_perm, int(job.cache)))


def _warn_if_long(seconds_each: float, remaining: int, n_perm: int, passes: int, cache: bool) -> None:
    seconds = seconds_each * remaining
    if seconds > LONG_RUN_SECONDS:
        logger.warning("this run will take about %s more (%s permutations at %.3g ms each%s); stop it with "
                       "Ctrl-C if that is not what you meant", _duration(seconds), f"{n_perm:,}", 1000 * seconds_each,
                       ", scored twice for FDR/FWER" if passes == 2 and not cache else "", extra={"console_only": True})


# ---- Dask -------------------------------------------------------------------------------
def range_size(n_perm: int, batch_size: int, threads: int) -> int:
    """Permutations per Dask task: :data:`RANGES_PER_THREAD` ranges per worker thread,
    but never less than one batch (a task then runs for seconds, not milliseconds)."""
    return max(int(batch_size), math.ceil(n_perm / (RANGES_PER_THREAD * max(1, threads))))


class _Cluster:
    """A run's link to a Dask cluster: the options, sent once to every worker, and a
    task per worker that prepares the job there (reads the inputs) ahead of its ranges."""

    def __init__(self, client: Any, prepare: Callable[[dict], Prepared], options: dict) -> None:
        self.client = client
        self.token = uuid.uuid4().hex
        self._prepare, self._options = prepare, options
        self.resends = 0
        self.spec = self._scatter()
        self.warm_up = [client.submit(_worker_job_ready, self.spec, workers=[worker], pure=False,
                                      key=f"permenrich-prepare-{self.token}-{index}")
                        for index, worker in enumerate(client.nthreads())]

    def _scatter(self) -> Any:
        spec = (self._prepare, self._options, self.token, os.getpid())
        [spec] = self.client.scatter([spec], broadcast=True, hash=False)
        return spec

    def resend(self) -> None:
        """Scatter the options again: scattered data cannot be recomputed, so when every
        worker holding them is lost (a one-node cluster, all workers restarted), Dask
        cancels the tasks that need them."""
        if self.resends >= MAX_RESENDS:
            raise ClusterError(
                f"the Dask workers holding this run's options were lost {self.resends + 1} times (workers "
                "restarted or killed, e.g. out of memory: check the workers' logs); no output was written"
            )
        self.resends += 1
        self.spec = self._scatter()

    def cancel(self) -> None:
        self.client.cancel(self.warm_up)


def run_distributed(cluster: _Cluster, job: Job, progress: ProgressCallback | bool | None = None) -> tuple[Any, dict]:
    """Every pass of ``job`` as permutation ranges on the workers of a Dask cluster.

    The options went to every worker once (``scatter``, broadcast); each worker process
    prepares the job from them (ahead of time, or on its first task) and keeps it for the
    run's other tasks. A task returns its accumulator's state; the client merges the
    states as they complete, then sends the next pass its setup. A worker lost mid-run
    only means its ranges are computed again elsewhere (Dask reschedules them). Losing
    every worker at once also loses the options (scattered data cannot be recomputed):
    they are sent again, up to :data:`MAX_RESENDS` times, and the unfinished ranges
    resubmitted. Workers that keep dying on a range end the run with a
    :class:`~permenrich.errors.ClusterError`.
    """
    from concurrent.futures import CancelledError

    from distributed import KilledWorker, as_completed

    client, token = cluster.client, cluster.token
    threads = sum(client.nthreads().values())
    size = range_size(job.n_perm, job.batch_size, threads)
    ranges = list(batches(0, job.n_perm, size))
    accumulator = job.new_accumulator()
    tracker = Progress(progress, job.n_perm * accumulator.passes)
    timings: dict[str, Any] = {"dask": {"workers": len(client.nthreads()), "threads": threads, "range_size": size,
                                        "ranges_per_pass": len(ranges)}}
    task_seconds: list[float] = []
    # The first pass's tasks over a prefix of ranges within job.cache return their scores,
    # and the later pass runs here on them, as run_local does; only the other ranges are
    # sent out again.
    limit = cached_permutations(job) if accumulator.passes > 1 else 0
    kept_until = max((stop for _, stop in ranges if stop <= limit), default=0)
    kept: list[Any] = []
    setup = None
    started = time.perf_counter()
    pass_seconds = [0.0, 0.0]
    for pass_index in range(accumulator.passes):
        pass_started = time.perf_counter()
        todo = ranges
        if pass_index > 0:
            accumulator.begin_pass(pass_index, setup)
            for scores in kept:
                accumulator.add(pass_index, accumulator.xp.asarray(scores))
            kept.clear()
            if kept_until:
                tracker.advance(kept_until)
            todo = [(start, stop) for start, stop in ranges if start >= kept_until]

        def submit(start: int, stop: int) -> Any:
            attempt = f"-r{cluster.resends}" if cluster.resends else ""
            return client.submit(_run_range, cluster.spec, pass_index, setup, start, stop,
                                 pass_index == 0 and stop <= kept_until, pure=False,
                                 key=f"permenrich-{token}-{pass_index}-{start}{attempt}")

        def merge(future: Any) -> None:
            state, seconds, scores = future.result()  # a cancelled range stays pending
            start, stop = pending.pop(future)
            accumulator.merge(pass_index, state)
            kept.extend(scores)
            task_seconds.append(seconds)
            tracker.advance(stop - start)

        pending = {submit(start, stop): (start, stop) for start, stop in todo}
        try:
            while pending:
                try:
                    for future in as_completed(list(pending)):
                        merge(future)
                except CancelledError:
                    # The options were lost with every worker holding them: what finished
                    # counts, the rest runs again from options sent anew.
                    for future in [f for f in pending if f.status == "finished"]:
                        merge(future)
                    cluster.resend()
                    pending = {submit(start, stop): (start, stop) for start, stop in sorted(pending.values())}
        except KilledWorker as error:
            client.cancel(list(pending))
            deaths = getattr(error, "allowed_failures", None)
            times = (" repeatedly" if not isinstance(deaths, int) else " once" if deaths == 0
                     else f" {deaths + 1} times")
            raise ClusterError(f"Dask workers died{times} while running one range of this run's permutations (out "
                               "of memory? give a smaller --memory or --batch-size, or workers with more memory; see "
                               "the workers' logs); no output was written") from None
        except BaseException:
            client.cancel(list(pending))
            raise
        setup = accumulator.end_pass(pass_index)
        pass_seconds[pass_index] = time.perf_counter() - pass_started
    wall = time.perf_counter() - started
    scored = job.n_perm * accumulator.passes - kept_until * (accumulator.passes - 1)
    timings.update(first_pass_seconds=pass_seconds[0], second_pass_seconds=pass_seconds[1],
                   permutations_scored=scored, per_permutation_ms=1000 * wall / scored)
    timings["dask"].update(task_seconds_mean=sum(task_seconds) / len(task_seconds),
                           task_seconds_max=max(task_seconds),
                           busy_fraction=sum(task_seconds) / (wall * max(1, threads)))
    return accumulator, timings


_WORKER_JOBS: OrderedDict[str, Job] = OrderedDict()
#: Runs whose prepared jobs a worker process keeps (the latest ones).
_WORKER_JOBS_KEPT = 2
# One range at a time per process: the kernels use the process's CPU threads (or its GPU)
# themselves, and Numba's default threading layer may not be entered by two threads.
_WORKER_LOCK = threading.Lock()


#: What a run sends its workers: the mode's prepare function, the options, the run's
#: token and the client's process id.
_Spec = tuple[Callable[[dict], Prepared], dict, str, int]


def _worker_job(spec: _Spec) -> Job:
    """This worker process's copy of a run's job, prepared on first use (hold the lock)."""
    prepare, options, token, client_process = spec
    job = _WORKER_JOBS.get(token)
    if job is None:
        if client_process != os.getpid() and not logger.handlers:
            # A worker process of its own: the client has already said the inputs'
            # warnings (and recorded them); Python's last-resort handler would print
            # them again once per worker. Records still reach handlers set up there.
            logger.addHandler(logging.NullHandler())
        job = prepare(options).job
        _WORKER_JOBS[token] = job
        while len(_WORKER_JOBS) > _WORKER_JOBS_KEPT:
            _WORKER_JOBS.popitem(last=False)
    return job


def _worker_job_ready(spec: _Spec) -> bool:
    """A Dask task: prepare the job on this worker ahead of its ranges."""
    with _WORKER_LOCK:
        _worker_job(spec)
    return True


def _run_range(spec: _Spec, pass_index: int, setup: dict | None,
               start: int, stop: int, return_scores: bool) -> tuple[dict, float, list[Any]]:
    """A Dask task: permutations [start, stop) of one pass, on this worker's copy of the
    job; returns the accumulator's state, the seconds spent scoring and, when asked, the
    scores themselves (host arrays) for the client's next pass."""
    with _WORKER_LOCK:
        job = _worker_job(spec)
        started = time.perf_counter()
        accumulator = job.new_accumulator()
        accumulator.begin_pass(pass_index, setup)
        kept = []
        for first, last in batches(start, stop, job.batch_size):
            scores = job.score(first, last)
            accumulator.add(pass_index, scores)
            if return_scores:
                kept.append(scores.get() if hasattr(scores, "get") else scores)  # CuPy -> host
        return accumulator.state(pass_index), time.perf_counter() - started, kept


def client_from(scheduler: str | None = None, scheduler_file: str | None = None) -> Any:
    """A Dask client for a scheduler address or a scheduler file (as written by
    ``dask scheduler --scheduler-file``, dask-jobqueue or dask-mpi), or None for neither."""
    if scheduler is None and scheduler_file is None:
        return None
    from .errors import OptionError, option

    if scheduler is not None and scheduler_file is not None:
        raise OptionError(f"give {option('scheduler')} or {option('scheduler_file')}, not both")
    if scheduler_file is not None:
        _check_scheduler_file(scheduler_file)
    try:
        from distributed import Client
    except ImportError:
        raise OptionError("running on a Dask cluster needs the dask extra: pip install 'permenrich[dask]'") from None
    try:
        return Client(scheduler_file=scheduler_file, timeout="30s") if scheduler_file else Client(scheduler,
                                                                                                 timeout="30s")
    except (OSError, TimeoutError, ValueError) as error:
        where = scheduler_file or scheduler
        raise OptionError(f"cannot reach the Dask scheduler at {where!r} ({error}); check that it is running") from None


#: How long a scheduler file that does not exist yet is waited for (a batch job may start
#: the client while the scheduler is still writing it); Dask itself waits for ever.
SCHEDULER_FILE_WAIT_SECONDS = 30.0


def _check_scheduler_file(path_text: str) -> None:
    """Refuse a scheduler file that does not appear within
    :data:`SCHEDULER_FILE_WAIT_SECONDS`, or that is not a Dask scheduler file (JSON with an
    ``address``), with one line rather than a wait for ever or Dask's assertion."""
    import json

    from .errors import OptionError, option

    path = Path(path_text)
    deadline = time.monotonic() + SCHEDULER_FILE_WAIT_SECONDS
    while not path.is_file():
        if path.exists():
            raise OptionError(f"{option('scheduler_file')} {path_text!r} is a folder, not a file; give the file the "
                              "scheduler writes")
        if time.monotonic() >= deadline:
            raise OptionError(f"{option('scheduler_file')} {path_text!r}: no such file (waited "
                              f"{SCHEDULER_FILE_WAIT_SECONDS:g} s for the scheduler to write it); check the path")
        time.sleep(0.5)
    try:
        address = json.loads(path.read_text())["address"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        address = None
    if not isinstance(address, str):
        raise OptionError(f"{path_text}: not a Dask scheduler file (JSON with the scheduler's 'address', as "
                          "'dask scheduler --scheduler-file' writes); check the path")
