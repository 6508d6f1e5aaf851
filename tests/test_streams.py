"""The batch sizer, the first batches of a map, and the spread of its first items."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.managers import SyncManager
from typing import Any

import pytest

import workpool
from workpool import Pool, Task
from workpool._streams import BatchSizer


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
    fast = BatchSizer(limit=4096, length=80_000, workers=2)
    fast.update(1, 20e-6, overhead=1e-5)
    assert fast.size == 4096  # 82 ms of 20 us items
    medium = BatchSizer(limit=4096, length=16_000, workers=2)
    medium.update(1, 1e-3, overhead=1e-5)
    assert medium.size == 100  # 0.1 s of 1 ms items
    medium.update(100, 0.05)
    assert medium.size == 200  # they turned out faster
    slow = BatchSizer(limit=4096, length=80_000, workers=2)
    slow.update(1, 1.0, overhead=3e-4)
    assert slow.size == 1
    noisy = BatchSizer(limit=4096, length=5000, workers=2)
    noisy.update(1, 20e-6)
    noisy.update(1, 1.2e-3)  # a probe slowed down: the fastest one speaks for the items
    assert noisy.size == 625


def _cut_all(sizer: BatchSizer) -> list[int]:
    sizes = []
    while sizer.left > 0:
        sizes.append(min(sizer.next_size(), sizer.left))
        sizer.cut(sizes[-1])
    return sizes


def test_batch_sizer_shrinks_batches_towards_the_end_of_a_known_length() -> None:
    """Once a measure is trusted, a batch takes at most a worker's share of what is left, down
    to the fewest items worth a dispatch: the workers finish together."""
    sizer = BatchSizer(limit=4096, length=2000, workers=64)  # the I/O bench: 10 ms sleeps
    sizer.cut(64)  # the probes
    sizer.update(1, 10e-3, overhead=50e-6)
    sizes = _cut_all(sizer)
    assert sizes[0] == 8  # 2000 / (4 x 64): as Pool.map cuts it
    assert sizes == sorted(sizes, reverse=True)
    # They shrink once a worker's share of what is left is under 8: 7 x 64 items left.
    assert sizes.index(7) == (2000 - 64 - 7 * 64) // 8
    assert sizes[-64:] == [1] * 64  # the last round is of single items


@pytest.mark.parametrize(("first", "second"), [(20e-6, 1.2e-3), (1.2e-3, 20e-6)])
def test_batch_sizer_trusts_the_fastest_probe_whatever_the_order(
    first: float, second: float
) -> None:
    """A probe slowed down (a worker descheduled for a moment) does not make short items look
    slow enough to shrink their batches, whether it comes back first or second."""
    sizer = BatchSizer(limit=4096, length=5000, workers=2)
    sizer.cut(2)
    sizer.update(1, first, overhead=1e-5)
    sizer.update(1, second, overhead=1e-5)
    assert _cut_all(sizer)[:-1] == [625] * 7


def test_batch_sizer_never_cuts_an_empty_batch() -> None:
    """Past an input shorter than it said (a wrong ``__len__``), batches keep at least their
    fewest items: a batch of none would end the input."""
    sizer = BatchSizer(limit=4096, length=100, workers=2)
    sizer.update(4, 4e-3, overhead=1e-5)
    sizer.cut(150)
    assert sizer.least == 1
    assert sizer.next_size() == 1
    sizer.update(0, 0.0)
    sizer.update(5, 0.0)  # too fast for the clock: the share, no more
    assert sizer.size == 13


def test_batch_sizer_keeps_the_share_while_its_measure_may_be_the_cost_of_a_call() -> None:
    """One short item is mostly the cost of calling at all: the batches keep the input's share
    until a batch of several items says how short they are, then stop at what is worth a
    dispatch (here the whole share)."""
    sizer = BatchSizer(limit=4096, length=10_000, workers=2)
    sizer.cut(2)
    sizer.update(1, 17e-6, overhead=500e-6)  # a no-op, after a worker sat idle
    assert sizer.next_size() == 1250
    sizer.cut(1250)
    sizer.update(1250, 100e-6, overhead=500e-6)  # 0.08 us an item: a batch costs more
    assert _cut_all(sizer)[:-1] == [1250] * 6


def test_batched_map_of_slow_items_ends_with_single_items() -> None:
    """A map over a list of slow items (a millisecond or more) ends in batches of one item."""

    class Sizes(workpool.Observer):
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def task_submitted(self, task: Task[Any]) -> None:
            self.sizes.append(len(task.args[1]))

    sizes = Sizes()
    with Pool(2, observers=[sizes]) as pool:
        assert list(pool.map(_sleep_a_moment, range(40))) == list(range(40))
    assert sizes.sizes[:2] == [1, 1]  # the probes
    assert max(sizes.sizes) <= 5  # 40 / (4 x 2 workers): as Pool.map cuts it
    assert sizes.sizes[-2:] == [1, 1]  # the last round, one item a worker
    assert sum(sizes.sizes) == 40


def _sleep_a_moment(item: int) -> int:
    time.sleep(0.01)  # the workload: an item of 10 ms
    return item


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
