"""The demo's live display: overall progress, and which worker handles which image."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from .demo import Filtered


@dataclass
class _Worker:
    label: str
    images: int = 0
    busy: float = 0.0
    last: str = ""


class DemoDisplay:
    """A progress bar, the images running now, and one row per worker; nothing when disabled."""

    def __init__(self, total: int, workers: int, enabled: bool) -> None:
        self.enabled = enabled
        self.workers: dict[str, _Worker] = {}
        self.tasks: list[tuple[Future[Any], str]] = []
        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.bar = self.progress.add_task(f"{workers} workers", total=total)
        self.live = Live(get_renderable=self._render, refresh_per_second=10, transient=False)

    def __enter__(self) -> DemoDisplay:
        if self.enabled:
            self.live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.enabled:
            self.live.stop()

    def watch(self, tasks: Sequence[Future[Any]], names: Sequence[str]) -> None:
        self.tasks = list(zip(tasks, names, strict=True))

    def finished(self, item: Filtered) -> None:
        worker = self.workers.get(item.worker)
        if worker is None:
            worker = self.workers[item.worker] = _Worker(f"worker {len(self.workers) + 1}")
        worker.images += 1
        worker.busy += item.seconds
        worker.last = item.name
        self.progress.advance(self.bar)

    def _render(self) -> RenderableType:
        running = [name for task, name in self.tasks if task.running()]
        table = Table("worker", "images", "busy", "last image", box=None, padding=(0, 2))
        for worker in self.workers.values():
            table.add_row(worker.label, str(worker.images), f"{worker.busy:.2f} s", worker.last)
        now = ", ".join(running) if running else "-"
        return Group(self.progress, f"running now: {now}", table)
