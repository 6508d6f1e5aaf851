"""Cases, sizes and the interleaved runner.

A *case* is one contender in one *group* (say ``ThreadPoolExecutor`` in "threads: submit +
result"); each run returns one number in the group's unit. Rounds are interleaved (A B C A B C,
not A A B B C C), so that a slow spell of a shared machine hits every contender alike, and each
case is summarised by its median, min and max. Within a group, the workpool case is the
reference: ``advantage`` says how many times better workpool did than each peer.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Better = Literal["lower", "higher"]
Role = Literal["contender", "floor", "sequential"]
REFERENCE = "workpool"


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is; ``quick()`` is a smoke run of a few seconds."""

    dispatch: int = 100_000
    process_dispatch: int = 10_000
    process_map: int = 100_000
    latency: int = 2_000
    io_tasks: int = 2_000
    io_threads: int = 64
    io_delay: float = 0.010
    cpu_tasks: int = 200
    cpu_seconds: float = 0.005
    cpu_workers: int = 2
    workers: int = 2
    memory_items: int = 2_000_000
    memory_slow_items: int = 50_000
    memory_slow_delay: float = 50e-6
    startups: int = 20
    timeout: float = 0.2

    def scaled(self, factor: float) -> Sizes:
        """These sizes with every task count multiplied by ``factor`` (at least one of each)."""
        counts: tuple[str, ...] = ("dispatch", "process_dispatch", "process_map", "latency")
        counts += ("io_tasks",)
        counts += ("cpu_tasks", "memory_items", "memory_slow_items", "startups")
        changes = {name: max(1, round(getattr(self, name) * factor)) for name in counts}
        return dataclasses.replace(self, **changes)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            dispatch=500,
            process_dispatch=200,
            process_map=1_000,
            latency=50,
            io_tasks=64,
            io_threads=16,
            io_delay=0.002,
            cpu_tasks=8,
            cpu_seconds=0.002,
            memory_items=5_000,
            memory_slow_items=500,
            memory_slow_delay=10e-6,
            startups=2,
            timeout=0.05,
        )


@dataclass
class Case:
    """One contender in one group: ``run()`` measures once and returns a value in ``unit``."""

    scenario: str
    group: str
    label: str
    run: Callable[[], float] | None
    unit: str
    better: Better = "lower"
    skip: str | None = None
    """Why the case does not run (a peer not installed, a backend not there yet)."""
    role: Role = "contender"
    """A ``floor`` is the best the machine can do (bare threads or processes); ``sequential`` is
    the work done one by one. Their medians give each contender's efficiency and speedup."""
    samples: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def is_reference(self) -> bool:
        return self.label.startswith(REFERENCE)

    @property
    def note(self) -> str | None:
        return self.skip or self.error


def skipped(scenario: str, group: str, label: str, unit: str, why: str) -> Case:
    """A case that is listed in the report but does not run."""
    return Case(scenario, group, label, None, unit, skip=why)


def run_cases(cases: Sequence[Case], rounds: int, *, verbose: bool = False) -> None:
    """Run every runnable case ``rounds`` times, interleaved; a case that raises stops running."""
    for round_no in range(rounds):
        for case in cases:
            if case.run is None or case.skip or case.error:
                continue
            started = time.perf_counter()
            try:
                case.samples.append(case.run())
            except Exception as exc:  # a peer's failure is a finding to report, not a crash
                case.error = f"{type(exc).__name__}: {exc}"[:200]
            if verbose:
                took = time.perf_counter() - started
                value = f"{case.samples[-1]:.4g}" if not case.error else f"failed: {case.error}"
                print(
                    f"  round {round_no + 1}/{rounds} {case.group} | {case.label}: "
                    f"{value} {case.unit} ({took:.2f} s)",
                    file=sys.stderr,
                    flush=True,
                )


@dataclass(frozen=True)
class Summary:
    """One case, summarised."""

    scenario: str
    group: str
    label: str
    unit: str
    better: Better
    median: float | None
    min: float | None
    max: float | None
    samples: tuple[float, ...]
    role: Role
    advantage: float | None
    """How many times better workpool did than this case (above 1: workpool wins)."""
    of_floor: float | None
    """The group's floor (or ceiling) over this case's median: 1.0 is as good as the machine."""
    speedup: float | None
    """The group's sequential time over this case's median."""
    status: Literal["ok", "skipped", "failed"]
    note: str | None


def summarise(cases: Sequence[Case]) -> list[Summary]:
    """Medians, spreads and workpool's advantage over each peer in its group."""
    medians = {id(c): statistics.median(c.samples) if c.samples else None for c in cases}
    marks: dict[tuple[str, str], float] = {}  # (group, "workpool" | role) -> median
    for case in cases:
        value = medians[id(case)]
        key = REFERENCE if case.is_reference else case.role
        if value is not None and (case.is_reference or case.role != "contender"):
            marks.setdefault((case.group, key), value)
    return [_summary(case, medians[id(case)], marks) for case in cases]


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _summary(case: Case, median: float | None, marks: dict[tuple[str, str], float]) -> Summary:
    ours = marks.get((case.group, REFERENCE))
    advantage = of_floor = speedup = None
    if case.role == "contender" and not case.is_reference:
        lower = case.better == "lower"
        advantage = _ratio(median, ours) if lower else _ratio(ours, median)
    if case.role == "contender":
        of_floor = _ratio(marks.get((case.group, "floor")), median)
        speedup = _ratio(marks.get((case.group, "sequential")), median)
    return Summary(
        scenario=case.scenario,
        group=case.group,
        label=case.label,
        unit=case.unit,
        better=case.better,
        median=median,
        min=min(case.samples) if case.samples else None,
        max=max(case.samples) if case.samples else None,
        samples=tuple(case.samples),
        role=case.role,
        advantage=advantage,
        of_floor=of_floor,
        speedup=speedup,
        status="skipped" if case.skip else "failed" if case.error else "ok",
        note=case.note,
    )
