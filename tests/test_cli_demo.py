"""`workpool demo`: real images filtered on a pool, with the speedup measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import workpool

pytest.importorskip("click")
Image = pytest.importorskip("PIL.Image")

WORKPOOL = [sys.executable, "-m", "workpool.cli"]
SMALL = ["--images", "3", "--size", "64x48", "-j", "2"]


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WORKPOOL, "demo", *args], capture_output=True, text=True, timeout=60)


def test_demo_filters_generated_images_and_reports_the_speedup(tmp_path: Path) -> None:
    """The demo writes one filtered image per input and prints the timing summary."""
    out = tmp_path / "out"
    done = demo(*SMALL, "-o", str(out))
    assert done.returncode == 0, done.stderr
    for text in ("3 images", "one by one", "2 threads", "speedup", "parallel efficiency"):
        assert text in done.stdout
    written = sorted(out.iterdir())
    assert len(written) == 3
    with Image.open(written[0]) as image:
        assert image.size == (64, 48)


def test_demo_takes_images_from_a_folder(tmp_path: Path) -> None:
    """--source filters the images found in a folder, with the chosen filters."""
    source = tmp_path / "photos"
    source.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.new("RGB", (40, 30), "orange").save(source / name)
    (source / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    done = demo("--source", str(source), "-o", str(out), "-f", "edges", "-f", "emboss")
    assert done.returncode == 0, done.stderr
    assert "edges + emboss" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg"]


def test_demo_on_processes(tmp_path: Path) -> None:
    """--backend process runs the same demo on worker processes."""
    try:
        workpool.Pool(1, backend="process").shutdown()
    except ValueError:
        pytest.skip("this build has no process backend")
    done = demo(*SMALL, "--backend", "process", "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "2 processes:" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--size", "big"], "WIDTHxHEIGHT"), (["--images", "0"], "--images"),
     (["--filter", "nope"], "--filter")],
)  # fmt: skip
def test_demo_rejects_bad_arguments_clearly(args: list[str], message: str) -> None:
    """Bad demo arguments exit 2 naming the option, without a traceback."""
    from click.testing import CliRunner

    from workpool.cli._app import cli

    result = CliRunner().invoke(cli, ["demo", *args])
    assert result.exit_code == 2 and message in result.output


def test_demo_with_an_empty_source_folder_says_so(tmp_path: Path) -> None:
    """A --source folder without images is a clear error."""
    done = demo("--source", str(tmp_path), "-o", str(tmp_path / "out"))
    assert done.returncode == 1 and "no images" in done.stderr


def test_demo_live_display_shows_each_worker(tmp_path: Path) -> None:
    """With --progress the live display lists the workers and the images they took."""
    done = demo(*SMALL, "--progress", "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "worker 1" in done.stdout and "image_00" in done.stdout
