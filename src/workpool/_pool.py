"""Pool: the public, synchronous face of a pool, on any backend."""

from __future__ import annotations

import atexit
import operator
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, as_completed
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from ._backends import backend_class
from ._core import PoolCore
from ._engine import Scheduler
from ._events import Observer
from ._options import DEFAULT_OPTIONS, RetryPolicy, TaskOptions, task_options
from ._stats import PoolStats
from ._streams import Batch, BatchSizer, MapStream, run_batch
from ._task import NO_KWARGS, Task, name_of
from .observe.progress import ProgressLike, map_progress

P = ParamSpec("P")
T = TypeVar("T")

_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
_BATCH_WINDOW = 8192
"""Items a batching map reads ahead of the consumer at most."""
_SIZED_BATCH_LIMIT = 4096
"""Items a batch holds at most when the input's length is known (1024 otherwise)."""
_SIZED_WINDOW = 8 * _SIZED_BATCH_LIMIT
"""The read-ahead of a map over an input of known length: a list is in memory already, and
batches of the larger limit need room for several in flight, or the workers wait on the pipe."""


@dataclass(frozen=True)
class _MapPlan:
    """How a map cuts and bounds its work: ``sizer`` None runs one task per item."""

    sizer: BatchSizer | None
    window: int
    max_tasks: int
    probes: int


def _map_plan(
    iterables: tuple[Iterable[Any], ...],
    workers: int,
    batching: bool,
    chunksize: int | None,
    window: int | None,
) -> _MapPlan:
    """Probe with one item per worker; then, where the input's length is known, batch as
    ``multiprocessing.Pool.map`` does (about four batches a worker, all sent at once), to no
    more items than run in 0.1 s; else grow batches step by step (see ``_streams``)."""
    if not batching:
        window = max(16, 4 * workers) if window is None else window
        return _MapPlan(None, window, window, 0)
    expected = _known_length(iterables) if chunksize is None else 0
    if not expected:
        window = _BATCH_WINDOW if window is None else window
        return _MapPlan(BatchSizer(fixed=chunksize), window, 2 * workers + 2, workers)
    sizer = BatchSizer(limit=_SIZED_BATCH_LIMIT, length=expected, workers=workers)
    return _MapPlan(sizer, _SIZED_WINDOW if window is None else window, 4 * workers + 2, workers)


def _known_length(iterables: tuple[Iterable[Any], ...]) -> int:
    """How many items zipping ``iterables`` gives, where each says its length; else 0."""
    try:
        return min(operator.length_hint(iterable) for iterable in iterables)
    except Exception:  # a user's broken __len__: read it as an iterator
        return 0


@dataclass(frozen=True)
class ShutdownReport:
    """What ``shutdown`` left behind when it returned."""

    completed: bool
    """Every task finished and every worker stopped before ``shutdown`` returned."""
    cancelled: tuple[Task[Any], ...]
    """Tasks that this shutdown cancelled before they ran."""
    running: tuple[Task[Any], ...]
    """Tasks still running when it returned."""
    queued: tuple[Task[Any], ...]
    """Tasks still waiting to run when it returned (they still run unless cancelled)."""
    stats: PoolStats

    @property
    def finished(self) -> int:
        """Tasks finished, in any outcome, over the pool's life."""
        return self.stats.finished


class Pool(Executor):
    """A pool of workers with a bounded, prioritised queue and supervised tasks.

    ``Pool(workers=4)`` keeps up to four workers; ``Pool(min_workers=1, max_workers=16)`` grows
    while work waits and retires workers idle for ``idle_timeout`` seconds. ``queue_size`` bounds
    the tasks waiting to run (0: unbounded): ``submit`` then waits for room and ``try_submit``
    raises ``QueueFull``. ``priority_aging`` is how many priority points a waiting task gains per
    second, so that no task waits forever (0 turns aging off). ``rate_limit=(n, seconds)`` starts
    at most ``n`` tasks in any ``seconds`` (a token bucket: bursts of up to ``n``).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        backend: str = "thread",
        min_workers: int | None = None,
        max_workers: int | None = None,
        queue_size: int = 0,
        idle_timeout: float | None = 10.0,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_worker: int | None = None,
        priority_aging: float = 1.0,
        rate_limit: tuple[int, float] | None = None,
        observers: Iterable[Observer] = (),
        **backend_options: Any,
    ) -> None:
        backend_cls = backend_class(backend)
        low, high = _bounds(workers, min_workers, max_workers, backend_cls.default_workers)
        _check_args(queue_size, idle_timeout, max_tasks_per_worker, priority_aging, initializer)
        engine = Scheduler(
            min_workers=low,
            max_workers=high,
            queue_size=queue_size,
            idle_timeout=idle_timeout,
            aging=priority_aging,
            max_tasks_per_worker=max_tasks_per_worker,
            rate_limit=rate_limit,
        )
        options = dict(backend_options, initializer=initializer, initargs=tuple(initargs))
        self._backend_name = backend
        self._core = PoolCore(engine, backend_cls, options)
        self._core.observers = tuple(observers)
        _live_pools.add(self)

    # -- submitting ---------------------------------------------------------------------------

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Task[T]:
        """Schedule ``fn(*args, **kwargs)``; waits for room while the queue is full."""
        task = Task(fn, args, kwargs or NO_KWARGS, DEFAULT_OPTIONS, self._core)
        self._core.submit(task, True)  # block, by position: see PoolCore.submit
        return task

    def try_submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Task[T]:
        """As ``submit``, but raise ``QueueFull`` at once instead of waiting for room."""
        task = Task(fn, args, kwargs or NO_KWARGS, DEFAULT_OPTIONS, self._core)
        self._core.submit(task, block=False)
        return task

    def options(
        self,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        retry: RetryPolicy | None = None,
        name: str | None = None,
        submit_timeout: float | None = None,
    ) -> TaskOptionsView:
        """Submit with these options: ``pool.options(timeout=2, retries=3).submit(fn, x)``.

        ``submit_timeout`` bounds how long ``submit`` waits for room in a full queue before it
        raises ``QueueFull``.
        """
        given = {"priority": priority, "timeout": timeout, "retries": retries, "retry": retry}
        return TaskOptionsView(self, task_options(name=name, **given), submit_timeout)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        ordered: bool = True,
        window: int | None = None,
        progress: bool | ProgressLike = False,
    ) -> Iterator[T]:
        """Lazily apply ``fn`` over the zipped ``iterables``, ``window`` items in flight at most.

        Results come in input order, or as they complete with ``ordered=False``. ``timeout``
        bounds the whole iteration, as in ``Executor.map``. Small items run in batches whose
        size adapts to how long items take (an input of known length starts with about four
        batches per worker, as ``multiprocessing.Pool.map`` cuts it); ``chunksize=k`` fixes
        it, ``chunksize=1`` turns batching off. A per-task ``timeout`` or ``retries`` (from
        ``options``) also turns it off, so that each item keeps them. ``progress=True`` shows a
        bar on stderr (``workpool[progress]``); or pass a bar of your own, such as a ``tqdm``.
        """
        return self._map(
            fn, iterables, DEFAULT_OPTIONS, None, timeout, ordered, window, chunksize, progress
        )

    def _map(
        self,
        fn: Callable[..., T],
        iterables: tuple[Iterable[Any], ...],
        options: TaskOptions,
        submit_timeout: float | None,
        timeout: float | None,
        ordered: bool,
        window: int | None,
        chunksize: int | None,
        progress: bool | ProgressLike = False,
    ) -> Iterator[T]:
        if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError(f"chunksize must be None or an int >= 1, not {chunksize!r}")
        track: Callable[[Iterator[T]], Iterator[T]] = map_progress(progress, iterables)
        core = self._core
        workers = core.engine.max_workers
        batching = chunksize != 1 and options.timeout is None and options.retries == 0
        batch_options = options.merged(name=options.name or name_of(fn))

        def submit(args: tuple[Any, ...]) -> Task[Any]:
            task = Task(fn, args, NO_KWARGS, options, core)
            core.submit(task, block=True, timeout=submit_timeout)
            return task

        star = len(iterables) != 1  # one input: its items go as they are, not in 1-tuples

        def submit_batch(items: list[Any]) -> Task[Batch]:
            task = Task(run_batch, (fn, items, star), NO_KWARGS, batch_options, core)
            task._batch = True
            core.submit(task, block=True, timeout=submit_timeout)
            return task

        if batching and not star:
            items: Iterator[Any] = iter(iterables[0])
        else:
            items = zip(*iterables)  # noqa: B905  # stops at the shortest input, as Executor.map
        plan = _map_plan(iterables, workers, batching, chunksize, window)
        stream = MapStream(
            submit,
            submit_batch,
            items,
            window=plan.window,
            max_tasks=plan.max_tasks,
            ordered=ordered,
            timeout=timeout,
            sizer=plan.sizer,
            probes=plan.probes,
        )
        return track(stream.results())

    # -- waiting ------------------------------------------------------------------------------

    def as_completed(
        self, tasks: Iterable[Task[T]], timeout: float | None = None
    ) -> Iterator[Task[T]]:
        """Yield ``tasks`` as they finish (``concurrent.futures.as_completed``)."""
        futures: Iterable[Future[T]] = tasks
        return cast("Iterator[Task[T]]", as_completed(futures, timeout))

    def wait(self, timeout: float | None = None) -> bool:
        """The wait group: block until every task submitted so far has finished.

        Returns False if ``timeout`` seconds passed first.
        """
        return self._core.wait(timeout)

    # -- control ------------------------------------------------------------------------------

    def pause(self) -> None:
        """Start no new task until ``resume``; running tasks go on."""
        self._core.control(Scheduler.pause, "paused")

    def resume(self) -> None:
        self._core.control(Scheduler.resume, "resumed")

    def resize(
        self,
        workers: int | None = None,
        *,
        min_workers: int | None = None,
        max_workers: int | None = None,
    ) -> None:
        """Change the worker count (``resize(8)``) or the autoscaling bounds at run time.

        Extra workers leave when they finish their current task.
        """
        engine = self._core.engine
        if workers is not None:
            if min_workers is not None or max_workers is not None:
                raise TypeError("give workers, or min_workers/max_workers, not both")
            low = high = workers
        else:
            high = engine.max_workers if max_workers is None else max_workers
            low = min(engine.min_workers, high) if min_workers is None else min_workers
        self._core.control(lambda e: e.set_bounds(low, high), "resized")

    def stats(self) -> PoolStats:
        """A consistent snapshot of the counters."""
        return self._core.stats()

    def add_observer(self, observer: Observer) -> None:
        """Send this pool's events to ``observer`` from now on (see ``workpool.Observer``)."""
        core = self._core
        core.observers = (*core.observers, observer)

    def remove_observer(self, observer: Observer) -> None:
        core = self._core
        core.observers = tuple(o for o in core.observers if o is not observer)

    # -- shutting down ------------------------------------------------------------------------

    def shutdown(  # type: ignore[override]  # returns a report where Executor returns None
        self,
        wait: bool = True,
        *,
        cancel_futures: bool = False,
        timeout: float | None = None,
    ) -> ShutdownReport:
        """Accept no new task; then, if ``wait``, drain the queue and stop the workers.

        ``cancel_futures`` cancels the tasks not started yet. With ``timeout``, return by then
        whatever still runs; the report says what was cancelled and what was left. Threads
        abandoned after a timeout are never waited for. Calling it again is harmless.
        """
        cancelled = self._core.close(cancel_waiting=cancel_futures)
        completed = self._core.join(timeout) if wait else False
        return self._report(completed, cancelled)

    def _shutdown_without_report(self) -> None:
        """``shutdown(wait=True)`` at the end of a ``with`` block, which has no use for its
        report: the report's stats snapshot, taken just after the workers' threads end, costs
        about 15 us of the 110 that shutting down a thread pool whose worker started takes."""
        if getattr(self.shutdown, "__func__", None) is not _POOL_SHUTDOWN:
            self.shutdown(wait=True)  # another one (a subclass's, a patch): called, as Executor's
            return
        self._core.close(cancel_waiting=False)
        self._core.join(None)

    def _report(self, completed: bool, cancelled: list[Task[Any]]) -> ShutdownReport:
        core = self._core
        with core.lock:
            if completed:  # nothing runs or waits in a drained pool
                running: tuple[Task[Any], ...] = ()
                queued: tuple[Task[Any], ...] = ()
            else:
                running = tuple(core.engine.running_tasks())
                queued = tuple(core.engine.waiting_tasks())
            stats = core.engine.stats()
        return ShutdownReport(completed, tuple(cancelled), running, queued, stats)

    def _abort(self) -> None:
        """Ctrl-C: cancel what waits, ask what runs to stop, and return without waiting."""
        _live_pools.discard(self)  # nor wait for it at interpreter exit
        self._core.close(cancel_waiting=True, stop_running=True)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self._shutdown_without_report()
        elif issubclass(exc_type, Exception):
            # The block failed: what it queued is unwanted, and running tasks are asked to stop.
            self._core.close(cancel_waiting=True, stop_running=True)
            self._core.join(None)
        else:
            self._abort()  # KeyboardInterrupt, SystemExit: never hang on the way out

    def __repr__(self) -> str:
        s = self.stats()
        state = " closed" if s.closed else " paused" if s.paused else ""
        return (
            f"<Pool {self._backend_name}{state} workers={s.workers} busy={s.busy} "
            f"queued={s.queued}>"
        )


_POOL_SHUTDOWN = Pool.shutdown
"""``Pool.shutdown`` itself, which a ``with`` block may skip for ``_shutdown_without_report``."""


class TaskOptionsView:
    """``pool.options(...)``: submit and map with fixed per-task options."""

    __slots__ = ("_options", "_pool", "_submit_timeout")

    def __init__(self, pool: Pool, options: TaskOptions, submit_timeout: float | None) -> None:
        self._pool = pool
        self._options = options
        self._submit_timeout = submit_timeout

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Task[T]:
        core = self._pool._core
        task = Task(fn, args, kwargs or NO_KWARGS, self._options, core)
        core.submit(task, block=True, timeout=self._submit_timeout)
        return task

    def try_submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Task[T]:
        core = self._pool._core
        task = Task(fn, args, kwargs or NO_KWARGS, self._options, core)
        core.submit(task, block=False)
        return task

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        ordered: bool = True,
        window: int | None = None,
        progress: bool | ProgressLike = False,
    ) -> Iterator[T]:
        options, submit_timeout = self._options, self._submit_timeout
        return self._pool._map(
            fn, iterables, options, submit_timeout, timeout, ordered, window, chunksize, progress
        )

    def __repr__(self) -> str:
        return f"<TaskOptionsView {self._options!r}>"


def _bounds(
    workers: int | None,
    min_workers: int | None,
    max_workers: int | None,
    default: Callable[[], int],
) -> tuple[int, int]:
    if workers is not None:
        if min_workers is not None or max_workers is not None:
            raise TypeError("give workers, or min_workers/max_workers, not both")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, not {workers!r}")
        return workers, workers
    if max_workers is None:
        max_workers = max(default(), min_workers or 0)
        if min_workers is None:
            return max_workers, max_workers
    return (0 if min_workers is None else min_workers), max_workers


def _check_args(
    queue_size: int,
    idle_timeout: float | None,
    max_tasks_per_worker: int | None,
    priority_aging: float,
    initializer: Callable[..., object] | None,
) -> None:
    if not isinstance(queue_size, int) or queue_size < 0:
        raise ValueError(f"queue_size must be an int >= 0 (0: unbounded), not {queue_size!r}")
    if idle_timeout is not None and not idle_timeout > 0:
        raise ValueError(f"idle_timeout must be > 0 or None, not {idle_timeout!r}")
    if max_tasks_per_worker is not None and (
        not isinstance(max_tasks_per_worker, int) or max_tasks_per_worker < 1
    ):
        raise ValueError(f"max_tasks_per_worker must be an int >= 1, not {max_tasks_per_worker!r}")
    if not priority_aging >= 0:
        raise ValueError(f"priority_aging must be >= 0, not {priority_aging!r}")
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be callable")


@atexit.register
def _drain_at_exit() -> None:
    # As the stdlib executors do: let submitted work finish before the interpreter goes.
    for pool in list(_live_pools):
        pool.shutdown(wait=True)
