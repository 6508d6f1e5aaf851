"""The batch sizer, the first batches of a map, and the spread of its first items."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from multiprocessing.managers import SyncManager
from typing import Any

import pytest

from workpool import Pool, TaskOptions, _streams
from workpool._streams import BatchSizer, run_batch
from workpool._task import Task, _current


def test_batch_sizer_grows_at_most_four_times_when_dispatch_is_cheap() -> None:
    """With a dispatch overhead far below the target, a batch grows 4x a step at most."""
    sizer = BatchSizer()
    sizer.update(1, 1e-6, overhead=1e-7)
    assert sizer.size == 4


def test_batch_sizer_jumps_where_dispatch_costs_more_than_the_target() -> None:
    """A costly dispatch (processes) lets the batch grow at once to hide it, up to the limit."""
    sizer = BatchSizer(limit=1024)
    sizer.update(1, 5e-6, overhead=300e-6)
    assert 470 < sizer.size <= 480  # 8 overheads of 300 us at 5 us an item
    sizer.update(480, 480e-7, overhead=300e-6)
    assert sizer.size == 1024


def test_batch_sizer_keeps_slow_items_one_per_batch() -> None:
    """Items that each run longer than the target stay one per batch, whatever the overhead."""
    sizer = BatchSizer()
    sizer.update(1, 1.0, overhead=300e-6)
    assert sizer.size == 1


def test_batched_map_starts_its_first_items_on_every_worker_at_once() -> None:
    """The first items of a map run side by side on all workers, not batched onto one."""
    barrier = threading.Barrier(3, timeout=20)
    with Pool(3) as pool:
        assert list(pool.map(lambda _: barrier.wait() >= 0, range(3))) == [True] * 3


def test_batch_sizer_cuts_a_known_length_as_pool_map_to_a_tenth_of_a_second() -> None:
    """After a probe, batches take the input's share (as Pool.map cuts it, up to the limit),
    or the items that run in 0.1 s, if fewer."""
    fast = BatchSizer(limit=4096, share=10_000)
    fast.update(1, 20e-6, overhead=1e-5)
    assert fast.size == 4096  # 82 ms of 20 us items
    medium = BatchSizer(limit=4096, share=2000)
    medium.update(1, 1e-3, overhead=1e-5)
    assert medium.size == 100  # 0.1 s of 1 ms items
    medium.update(100, 0.05)
    assert medium.size == 200  # they turned out faster
    slow = BatchSizer(limit=4096, share=10_000)
    slow.update(1, 1.0, overhead=3e-4)
    assert slow.size == 1
    noisy = BatchSizer(limit=4096, share=625)
    noisy.update(1, 20e-6)
    noisy.update(1, 1.2e-3)  # a probe slowed down: the fastest one speaks for the items
    assert noisy.size == 625


def test_map_of_a_known_length_probes_then_cuts_the_rest_from_it() -> None:
    """Over a list, a map sends one item per worker, then batches of the list's share."""
    with Pool(2) as pool:
        assert list(pool.map(abs, range(800))) == list(range(800))
        # 2 probes, then at most 100 items a batch (800 / (4 x 2 workers)): 8 more at least
        assert 10 <= pool.stats().submitted <= 100


def test_map_of_an_input_with_a_broken_length_runs_as_one_of_unknown_length() -> None:
    """An input whose __len__ raises is read as a plain iterator, not an error."""

    class Odd:
        def __len__(self) -> int:
            raise RuntimeError("no length")

        def __iter__(self) -> Iterator[int]:
            return iter(range(10))

    with Pool(2) as pool:
        assert list(pool.map(abs, Odd())) == list(range(10))


def _wait_for_the_next(events: list[Any], item: int) -> int:
    if item == 0:
        assert events[0].wait(20), "item 1 never ran while item 0 ran"
    if item == 1:
        events[0].set()
    return item


def test_map_of_few_items_runs_them_on_every_worker_at_once(
    make_pool: Callable[..., Pool], manager: SyncManager
) -> None:
    """Four items on two workers are not bunched: item 1 runs while item 0 waits for it."""
    pool = make_pool(2)
    fn = functools.partial(_wait_for_the_next, [manager.Event()])
    assert list(pool.map(fn, [0, 1, 2, 3])) == [0, 1, 2, 3]


class _Result:
    """A result that can be counted while alive."""


def _result(x: int) -> _Result:
    return _Result()


def test_map_frees_each_result_once_consumed_without_waiting_for_the_collector() -> None:
    """The results a map holds stay bounded by its window, however long the input: nothing
    keeps a finished task alive in a reference cycle (gc is off, so a cycle would pile up)."""
    import gc
    import weakref

    for chunksize, ordered in ((16, True), (1, False)):
        alive: weakref.WeakSet[_Result] = weakref.WeakSet()
        most = 0
        gc.disable()
        try:
            with Pool(2) as pool:
                results = pool.map(
                    _result,
                    (i for i in range(5000)),
                    chunksize=chunksize,
                    ordered=ordered,
                    window=64,
                )
                for result in results:
                    alive.add(result)
                    del result
                    most = max(most, len(alive))
        finally:
            gc.enable()
        assert most <= 64 + 2 * chunksize, (chunksize, ordered, most)


def _wait_for_the_first_result(seen: Any, item: int) -> int:
    if item == 50:
        assert seen.wait(20), "the first result did not come before its batch ended"
    return item


def test_map_of_a_known_length_yields_its_first_item_alone(
    make_pool: Callable[..., Pool], manager: SyncManager
) -> None:
    """A list of 400 items on one worker would be cut in batches of 100; the first item goes
    alone, as a probe, so it arrives while item 50 still waits for it to arrive."""
    pool = make_pool(1)
    seen = manager.Event()
    results = pool.map(functools.partial(_wait_for_the_first_result, seen), range(400))
    assert next(results) == 0
    seen.set()
    assert list(results) == list(range(1, 400))


class FakeClock:
    """A clock that only moves when an item runs: ``step`` seconds an item."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.ran: list[int] = []

    def __call__(self) -> float:
        return self.now

    def item(self, x: int) -> int:
        self.now += self.step
        self.ran.append(x)
        return x


@pytest.mark.parametrize("in_thread_pool", [False, True])
def test_a_batch_stops_once_it_has_run_its_budget(
    monkeypatch: pytest.MonkeyPatch, in_thread_pool: bool
) -> None:
    """A batch looks at the clock after 1, 2, 4, 8... items and stops past its budget (in a
    worker process, and in a thread pool, where it also checks for a cancel each item)."""
    clock = FakeClock(0.03)
    monkeypatch.setattr(_streams, "_clock", clock)
    token = None
    if in_thread_pool:
        token = _current.set((Task(print, (), {}, TaskOptions(), owner=object()), 1))  # type: ignore[arg-type]
    try:
        values, seconds = run_batch(clock.item, list(range(10)), False, 0.1)
        assert values == [0, 1, 2, 3] and seconds == pytest.approx(0.12)  # 0.06 s after 2
        assert run_batch(clock.item, list(range(10)), False, None)[0] == list(range(10))
    finally:
        if token is not None:
            _current.reset(token)


def test_map_runs_the_rest_of_a_batch_cut_short_next_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches sent before anything was measured stop after 0.1 s; the items they did not run
    are cut to the measured size and run next: every item once, every result in order."""
    clock = FakeClock(1 / 64)  # about 16 ms an item, exact in binary: no rounding below
    monkeypatch.setattr(_streams, "_clock", clock)
    with Pool(1) as pool:
        assert list(pool.map(clock.item, range(300))) == list(range(300))
        # 1 probe, then items 1-299 in batches of 75, 75, 75, 74 (4 a worker), each cut after
        # 8 items (125 ms); the 67, 67, 67 and 66 left go in batches of 6 (0.1 s / 15.6 ms).
        assert pool.stats().submitted == 1 + 4 + 12 + 12 + 12 + 11
    assert sorted(clock.ran) == list(range(300))


def _sleep_then(seconds: float, item: int) -> int:
    import time

    time.sleep(seconds)  # the work: long enough that a batch of 10 outruns 0.1 s
    return item


def test_map_of_slow_items_in_a_list_cuts_its_batches_short(
    make_pool: Callable[..., Pool],
) -> None:
    """On every backend: 40 items of 20 ms on one worker go in batches of 10, which stop
    after 0.1 s and hand the rest on; all results come, in order."""
    pool = make_pool(1)
    fn = functools.partial(_sleep_then, 0.02)
    assert list(pool.map(fn, range(40))) == list(range(40))
    assert pool.stats().submitted > 1 + 4  # some batches were cut short and their rest sent
