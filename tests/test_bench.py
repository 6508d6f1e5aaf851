"""The benchmark harness (``workpool bench``) runs, reports, and skips what is not there."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import workpool
from workpool.cli.bench import harness, register, run_bench


@pytest.fixture(autouse=True)
def stop_reusable_executors() -> Iterator[None]:
    """loky and joblib keep their workers between calls, by design: stop them after a test."""
    yield
    for name in ("loky", "joblib.externals.loky"):
        module = sys.modules.get(name)
        if module is not None:
            module.get_reusable_executor().shutdown(wait=True)


PACKAGE = harness().__name__  # "benchmarks" in a checkout, "workpool._benchmarks" in a wheel


def part(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def tiny() -> Any:
    """Sizes smaller still than ``--quick``: the harness is under test, not the pools."""
    return dataclasses.replace(part("harness").Sizes.quick(), dispatch=50, latency=5, startups=1)


def counting_case(name: str, order: list[str], value: float = 1.0, group: str = "g") -> Any:
    def run() -> float:
        order.append(name)
        return value

    return part("harness").Case("s", group, name, run, "us")


def test_rounds_are_interleaved() -> None:
    """Each round runs every case once, in turn (A B A B), not each case's rounds together."""
    order: list[str] = []
    cases = [counting_case("workpool", order), counting_case("peer", order)]
    part("harness").run_cases(cases, rounds=3)
    assert order == ["workpool", "peer"] * 3


def test_summary_gives_median_spread_and_advantage() -> None:
    """Each case is summarised by median, min and max, and workpool's advantage over each peer."""
    h = part("harness")
    ours = h.Case("s", "g", "workpool", None, "us", samples=[1.0, 2.0, 9.0])
    peer = h.Case("s", "g", "peer", None, "us", samples=[4.0, 6.0, 5.0])
    faster = h.Case("s", "g", "rate", None, "x", better="higher", samples=[8.0])
    summary = {s.label: s for s in h.summarise([ours, peer, faster])}
    assert (summary["workpool"].median, summary["workpool"].min, summary["workpool"].max) == (
        2.0,
        1.0,
        9.0,
    )
    assert summary["peer"].advantage == pytest.approx(2.5)
    assert summary["workpool"].advantage is None
    assert summary["rate"].advantage == pytest.approx(0.25)


def test_floor_and_sequential_give_efficiency_and_speedup() -> None:
    """A group's floor and sequential cases turn each contender's time into efficiency, speedup."""
    h = part("harness")
    cases = [
        h.Case("s", "g", "sequential", None, "s", role="sequential", samples=[8.0]),
        h.Case("s", "g", "ceiling", None, "s", role="floor", samples=[4.0]),
        h.Case("s", "g", "workpool", None, "s", samples=[5.0]),
    ]
    ours = h.summarise(cases)[2]
    assert ours.of_floor == pytest.approx(0.8)
    assert ours.speedup == pytest.approx(1.6)


def test_case_that_raises_is_reported_and_not_run_again() -> None:
    """A peer that fails is noted as failed; the run goes on without it."""
    h = part("harness")
    calls: list[int] = []

    def broken() -> float:
        calls.append(1)
        raise OSError("no luck")

    case = h.Case("s", "g", "peer", broken, "us")
    h.run_cases([case], rounds=3)
    (summary,) = h.summarise([case])
    assert calls == [1]
    assert summary.status == "failed"
    assert "no luck" in summary.note


def test_missing_peer_is_skipped_with_a_note() -> None:
    """A peer that is not installed is a skip that names the extra to install."""
    note = part("peers").missing("no_such_pool_library")
    assert note is not None and "workpool[bench]" in note
    assert part("peers").missing("concurrent") is None


def test_unknown_process_backend_skips_the_process_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a process backend, workpool's process rows are skipped with the reason."""
    peers = part("peers")

    def no_processes(*args: object, **kwargs: object) -> workpool.Pool:
        raise ValueError("unknown backend 'process'")

    monkeypatch.setattr(peers.workpool, "Pool", no_processes)
    peers.workpool_process.cache_clear()
    try:
        cases = part("dispatch").startup(tiny())
    finally:
        monkeypatch.undo()
        peers.workpool_process.cache_clear()
    ours = next(c for c in cases if c.label == "workpool" and c.group.startswith("processes"))
    assert ours.skip is not None and "unknown backend" in ours.skip


def test_thread_dispatch_and_latency_cases_run() -> None:
    """The thread rows of dispatch and latency each measure a positive time per task."""
    sizes = tiny()
    cases = part("dispatch").dispatch(sizes) + part("dispatch").latency(sizes)
    threads = [c for c in cases if c.group.startswith("threads") and not c.skip]
    part("harness").run_cases(threads, rounds=1)
    assert threads
    for case in threads:
        assert case.error is None and case.samples[0] > 0, (case.label, case.error)


def test_memory_is_measured_in_a_fresh_process() -> None:
    """The memory scenario's child process reports a peak RSS growth."""
    growth = part("memory")._in_fresh_process("thread", "workpool.map", 1000, 2, 0.0)
    assert growth >= 0


def test_bench_command_prints_the_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``workpool bench --quick --only ...`` prints a table and writes JSON and Markdown."""
    out, table = tmp_path / "bench.json", tmp_path / "bench.md"
    argv = ["--quick", "--only", "startup", "--json", str(out), "--markdown", str(table)]
    assert run_bench(argv) == 0
    printed = capsys.readouterr().out
    assert "threads: start + shutdown" in printed and "ThreadPoolExecutor" in printed
    document = json.loads(out.read_text())
    assert document["machine"]["cpus"] >= 1 and document["rounds"] == 1
    labels = {r["label"] for r in document["results"]}
    assert {"workpool", "ThreadPoolExecutor"} <= labels
    assert "| workpool |" in table.read_text()


def test_bench_command_writes_a_chart(tmp_path: Path) -> None:
    """``--chart`` writes a PNG of workpool's advantage over each peer."""
    pytest.importorskip("matplotlib")
    chart = tmp_path / "bench.png"
    assert run_bench(["--quick", "--only", "startup", "--chart", str(chart)]) == 0
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_unknown_scenario_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Asking for a scenario that does not exist fails with the list of real ones."""
    assert run_bench(["--only", "dispatch,warp"]) == 2
    error = capsys.readouterr().err
    assert "unknown scenario warp" in error and "dispatch" in error


def test_argparse_subcommand_passes_every_argument_through(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``register`` mounts ``bench`` on an argparse CLI, handing its options to the harness."""
    parser = argparse.ArgumentParser(prog="workpool")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--only", "warp", "--quick"])
    assert args.bench_args == ["--only", "warp", "--quick"]
    assert args.run(args) == 2
    assert "unknown scenario warp" in capsys.readouterr().err


def test_instructions_reads_callgrinds_count_and_skips_without_valgrind(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """benchmarks/instructions.py reads the count callgrind prints at exit, and without
    valgrind it says so and runs nothing."""
    instructions = part("instructions")
    assert instructions.collected("==7== Events    : Ir\n==7== Collected : 123456\n") == 123456
    with pytest.raises(RuntimeError, match="no instruction count"):
        instructions.collected("valgrind: command not found")
    monkeypatch.setattr(instructions.shutil, "which", lambda _: None)
    assert instructions.main([]) == 0
    assert "skipped: valgrind is not installed" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
@pytest.mark.timeout(240)  # two interpreters under valgrind: about 25 s on a calm machine
def test_instructions_counts_what_a_task_costs() -> None:
    """Under callgrind, the runs over 2N and N tasks differ by N tasks' instructions."""
    instructions = part("instructions")
    _, label, code = instructions.CASES[0]
    assert label == "workpool"
    cost = instructions.per_task(code, 100)
    assert 1_000 < cost < 1_000_000  # a task is thousands of instructions, not none nor millions


def test_feature_cost_measures_every_configuration() -> None:
    """benchmarks/feature_cost.py runs each feature's pool inline and times it."""
    feature_cost = part("feature_cost")
    for pool_args, submitter in feature_cost.CONFIGS.values():
        assert feature_cost.run(20, pool_args, submitter) > 0
