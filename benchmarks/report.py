"""The results as a text table, a Markdown table, JSON and a PNG chart."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .harness import Sizes, Summary

PEER_DISTRIBUTIONS = ("workpool", "pebble", "joblib", "loky", "mpire", "matplotlib")
COLUMNS = ("case", "median", "min", "max", "workpool's advantage", "of floor", "speedup")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                model,
            )
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PEER_DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _times(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _rows(group: Sequence[Summary]) -> list[list[str]]:
    rows = []
    for s in group:
        if s.median is None:
            rows.append([s.label, s.status, "", "", "", "", ""])
            continue
        rows.append(
            [
                s.label,
                _number(s.median),
                _number(s.min),
                _number(s.max),
                _times(s.advantage),
                _percent(s.of_floor),
                _times(s.speedup),
            ]
        )
    return rows


def _groups(summaries: Iterable[Summary]) -> dict[str, list[Summary]]:
    groups: dict[str, list[Summary]] = {}
    for s in summaries:
        groups.setdefault(s.group, []).append(s)
    return groups


def _used_columns(rows: list[list[str]]) -> list[int]:
    """Columns with something in them (the first four always)."""
    return [i for i in range(len(COLUMNS)) if i < 4 or any(row[i] for row in rows)]


def _notes(group: Sequence[Summary]) -> list[str]:
    return [f"{s.label} {s.status}: {s.note}" for s in group if s.note]


def _heading(group: Sequence[Summary]) -> str:
    first = group[0]
    return f"{first.group}  [{first.unit}, {first.better} is better]"


def text_table(summaries: Sequence[Summary]) -> str:
    """One block per group; workpool's advantage above 1x means workpool did better."""
    out = []
    for group in _groups(summaries).values():
        rows = _rows(group)
        used = _used_columns(rows)
        table = [[COLUMNS[i] for i in used], *[[row[i] for i in used] for row in rows]]
        widths = [max(len(r[j]) for r in table) for j in range(len(used))]
        out.append(_heading(group))
        for r in table:
            cells = [
                r[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)),
            ]
            out.append("  " + "  ".join(cells).rstrip())
        out += [f"  * {note}" for note in _notes(group)]
        out.append("")
    return "\n".join(out)


def markdown_table(summaries: Sequence[Summary]) -> str:
    out = []
    for group in _groups(summaries).values():
        rows = _rows(group)
        used = _used_columns(rows)
        out += [f"**{_heading(group)}**", ""]
        out.append("| " + " | ".join(COLUMNS[i] for i in used) + " |")
        out.append("| --- " + "| ---: " * (len(used) - 1) + "|")
        out += ["| " + " | ".join(row[i] for i in used) + " |" for row in rows]
        notes = _notes(group)
        out += ["", *(f"- {note}" for note in notes)] if notes else []
        out.append("")
    return "\n".join(out)


def to_json(summaries: Sequence[Summary], sizes: Sizes, rounds: int) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "rounds": rounds,
        "sizes": dataclasses.asdict(sizes),
        "results": [dataclasses.asdict(s) for s in summaries],
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")


def chart(summaries: Sequence[Summary], path: Path, title: str) -> None:
    """A bar per peer: workpool's advantage over it, on a log scale (right of 1x: workpool wins)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed: the chart goes to a file
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        raise SystemExit("the chart needs matplotlib: pip install 'workpool[bench]'") from None
    bars = [s for s in summaries if s.advantage is not None]
    if not bars:
        raise SystemExit("nothing to chart: no peer ran beside workpool")
    labels = [f"{s.group}\nvs {s.label}" for s in bars]
    values = [s.advantage or 0.0 for s in bars]
    figure, axes = plt.subplots(figsize=(10, 0.5 * len(bars) + 1.5))
    colours = ["tab:green" if v >= 1 else "tab:red" for v in values]
    axes.barh(range(len(bars)), values, color=colours)
    axes.set_yticks(range(len(bars)), labels, fontsize=6)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xlabel("workpool's advantage (times better; right of 1 = workpool wins)")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
