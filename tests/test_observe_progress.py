"""Progress bars: map(progress=...) and workpool.progress(), quiet off a terminal."""

from __future__ import annotations

import io
import sys
import threading
import warnings

import pytest

import workpool
from workpool.observe import progress as progress_module

tqdm = pytest.importorskip("tqdm")


@pytest.fixture(autouse=True)
def no_tqdm_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm's monitor thread outlives the bars; the leak check would count it."""
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)


class Terminal(io.StringIO):
    """A stderr that claims to be a terminal, so that tqdm draws."""

    def isatty(self) -> bool:
        return True


class CountingBar:
    """A bar of one's own: counts updates and closes."""

    def __init__(self) -> None:
        self.n = 0
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


def test_map_with_progress_is_quiet_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """With stderr captured (not a terminal), progress=True draws nothing, starts no thread
    (the leak check would see tqdm's monitor) and changes no result."""
    with workpool.Pool(2) as pool:
        assert list(pool.map(abs, range(-50, 0), progress=True)) == list(range(50, 0, -1))
        view = pool.options(name="abs")
        assert sum(view.map(abs, range(10), progress=True, ordered=False)) == 45
    assert capsys.readouterr().err == ""


def test_map_draws_done_rate_and_total_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the bar reaches n/n with a rate."""
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    with workpool.Pool(2) as pool:
        assert len(list(pool.map(abs, range(30), progress=True))) == 30
    drawn = screen.getvalue()
    assert "30/30" in drawn and "task/s" in drawn


def test_progress_over_tasks_counts_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """workpool.progress(tasks) yields each task as it completes and shows how many failed."""
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    with workpool.Pool(2) as pool:
        tasks = [pool.submit(int, t) for t in "12x4y6"]
        done = list(workpool.progress(tasks, desc="parse"))
    assert sorted(done, key=lambda t: t.id) == tasks
    drawn = screen.getvalue()
    assert "6/6" in drawn and "failed=2" in drawn and "parse" in drawn


def test_progress_wraps_an_iterator_with_a_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """An as_completed iterator is wrapped as it is, with the total given."""
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    with workpool.Pool(2) as pool:
        tasks = [pool.submit(abs, i) for i in range(8)]
        assert len(list(workpool.progress(pool.as_completed(tasks), total=8))) == 8
    assert "8/8" in screen.getvalue()


def test_map_advances_a_bar_you_pass_and_leaves_it_open() -> None:
    """A bar given as progress= is advanced once per result and not closed."""
    bar = CountingBar()
    with workpool.Pool(2) as pool:
        list(pool.map(abs, range(25), progress=bar))
    assert bar.n == 25 and not bar.closed


def test_bad_progress_is_refused_before_anything_runs() -> None:
    """progress= of the wrong kind raises TypeError and submits nothing."""
    with workpool.Pool(1) as pool:
        with pytest.raises(TypeError, match="progress"):
            pool.map(abs, range(5), progress="yes")  # type: ignore[arg-type]
        assert pool.stats().submitted == 0


def test_leaving_a_map_with_progress_early_cancels_the_rest() -> None:
    """Closing the wrapped results cancels the tasks still in flight, as plain map does."""
    gate = threading.Event()

    def slow(i: int) -> int:
        if i:
            gate.wait(30)
        return i

    with workpool.Pool(1) as pool:
        results = pool.map(slow, range(10), progress=True, chunksize=1)  # a task per item
        assert next(results) == 0
        results.close()  # type: ignore[attr-defined]  # a generator
        gate.set()
    assert pool.stats().cancelled >= 8


def test_missing_tqdm_warns_once_and_still_iterates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without tqdm, on a terminal, progress=True warns once with the pip hint and returns
    every result."""
    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr(progress_module, "_warned", False)
    with workpool.Pool(1) as pool:
        with pytest.warns(RuntimeWarning, match=r"workpool\[progress\]"):
            assert list(pool.map(abs, [-1, -2], progress=True)) == [1, 2]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert len(list(workpool.progress([pool.submit(abs, 1)]))) == 1
