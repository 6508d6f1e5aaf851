"""The batch sizer and the spread of a batched map's first items."""

from __future__ import annotations

import threading

from workpool import Pool
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
