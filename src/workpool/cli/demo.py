"""``workpool demo``: filter a batch of real images on a pool, and measure the speedup.

The images are generated (a Mandelbrot set, noise and a gradient: no download, so it works
offline) or taken from a folder. Each is filtered with Pillow, one by one and then on a pool,
and the summary compares the two on the same images. Pillow releases the GIL in its filters, so
threads speed this up as processes do. ``filter_image`` is a module-level function so that a
process pool can pickle it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import workpool

from ._demo_display import DemoDisplay

if TYPE_CHECKING:
    from PIL.Image import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _filters() -> dict[str, Callable[[Image], Image]]:
    from PIL import ImageFilter, ImageOps

    return {
        "blur": lambda im: im.filter(ImageFilter.GaussianBlur(3)),
        "sharpen": lambda im: im.filter(ImageFilter.UnsharpMask(radius=2, percent=150)),
        "edges": lambda im: ImageOps.autocontrast(im.convert("L").filter(ImageFilter.FIND_EDGES)),
        "emboss": lambda im: im.filter(ImageFilter.EMBOSS),
        "contrast": lambda im: ImageOps.autocontrast(im, cutoff=1),
        "sepia": lambda im: ImageOps.colorize(im.convert("L"), "#2b1a0e", "#f6e7c8"),
    }


FILTER_NAMES = ("blur", "sharpen", "edges", "emboss", "contrast", "sepia")


@dataclass(frozen=True)
class Filtered:
    """One image done: which worker did it, and how long it took."""

    name: str
    worker: str
    seconds: float


def filter_image(source: str, target: str, filters: tuple[str, ...]) -> Filtered:
    """Apply ``filters`` in order to the image at ``source`` and save it as JPEG at ``target``."""
    from PIL import Image as PILImage

    started = time.perf_counter()
    chain = _filters()
    with PILImage.open(source) as opened:
        image = opened.convert("RGB")
    for name in filters:
        image = chain[name](image)
    image.convert("RGB").save(target, quality=90)
    worker = f"{os.getpid()}/{threading.current_thread().name}"
    return Filtered(Path(source).name, worker, time.perf_counter() - started)


def generate_image(target: str, width: int, height: int, seed: int) -> str:
    """Write a synthetic photo-sized image (each ``seed`` a different view) as JPEG."""
    from PIL import Image as PILImage

    zoom = 1.0 / (1 + seed % 7)
    centre_x, centre_y = -0.75 + 0.02 * (seed % 11), 0.1 * ((seed % 5) - 2)
    extent = (
        centre_x - 1.6 * zoom,
        centre_y - 1.2 * zoom,
        centre_x + 1.6 * zoom,
        centre_y + 1.2 * zoom,
    )
    fractal = PILImage.effect_mandelbrot((width, height), extent, 32)
    noise = PILImage.effect_noise((width, height), 24 + seed % 40)
    gradient = PILImage.linear_gradient("L").resize((width, height)).rotate(seed * 37 % 360)
    PILImage.merge("RGB", (fractal, noise, gradient)).save(target, quality=92)
    return target


def _size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 1024x768") from None
    if not (16 <= width <= 8000 and 16 <= height <= 8000):
        raise click.BadParameter("each side must be between 16 and 8000 pixels")
    return width, height


@click.command("demo", short_help="filter a batch of real images and show the speedup")
@click.option(
    "-n",
    "--images",
    type=click.IntRange(1, 10_000),
    default=16,
    show_default=True,
    help="How many images to generate.",
)
@click.option(
    "--size",
    default="800x600",
    show_default=True,
    metavar="WxH",
    help="The generated images' size.",
)
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Filter the images in this folder instead of generated ones.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("workpool-demo"),
    show_default=True,
    help="Where the filtered images are written.",
)
@click.option(
    "-j",
    "--workers",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="the CPU count",
    help="Workers in the pool.",
)
@click.option(
    "--backend",
    type=click.Choice(["thread", "process"]),
    default="thread",
    show_default=True,
    help="Threads or processes.",
)
@click.option(
    "-f",
    "--filter",
    "filters",
    type=click.Choice(FILTER_NAMES),
    multiple=True,
    help="A filter to apply, in order; repeat for more  [default: blur, sharpen, sepia]",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show the live display  [default: when stdout is a terminal]",
)
def command(
    images: int,
    size: str,
    source: Path | None,
    output: Path,
    workers: int,
    backend: str,
    filters: tuple[str, ...],
    progress: bool | None,
) -> None:
    """Filter a batch of images with Pillow on a workpool Pool, and report the speedup.

    The same images are filtered one by one first, then on the pool; the summary
    compares the two. Without --source the images are generated, so it runs offline.
    """
    try:
        import PIL  # noqa: F401  # only to fail early, with the extra to install
    except ImportError:
        raise click.ClickException("the demo needs Pillow: pip install 'workpool[demo]'") from None
    filters = filters or ("blur", "sharpen", "sepia")
    width, height = _size(size)
    started = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="workpool-demo-") as scratch:
        if source is None:
            sources = _generate(Path(scratch), images, width, height, workers)
        else:
            sources = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not sources:
                raise click.ClickException(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
        jobs = [(str(p), str(output / f"{p.stem}.jpg"), filters) for p in sources]
        sequential = _one_by_one(jobs)
        live = sys.stdout.isatty() if progress is None else progress
        parallel, done = _on_pool(jobs, workers, backend, live)
    timings = (sequential, parallel, time.perf_counter() - started)
    _summary(len(jobs), filters, workers, backend, timings, done, output)


def _generate(folder: Path, count: int, width: int, height: int, workers: int) -> list[Path]:
    targets = [folder / f"image_{i:03d}.jpg" for i in range(1, count + 1)]
    click.echo(f"generating {count} images of {width}x{height}...", err=True)
    with workpool.Pool(workers) as pool:
        tasks = [
            pool.submit(generate_image, str(target), width, height, seed)
            for seed, target in enumerate(targets)
        ]
        for task in tasks:
            task.result()
    return targets


def _one_by_one(jobs: list[tuple[str, str, tuple[str, ...]]]) -> float:
    click.echo(f"filtering {len(jobs)} images one by one...", err=True)
    started = time.perf_counter()
    for job in jobs:
        filter_image(*job)
    return time.perf_counter() - started


def _on_pool(
    jobs: list[tuple[str, str, tuple[str, ...]]], workers: int, backend: str, live: bool
) -> tuple[float, list[Filtered]]:
    click.echo(f"filtering them on {workers} {backend} workers...", err=True)
    try:
        pool = workpool.Pool(workers, backend=backend)
    except ValueError as error:
        raise click.ClickException(f"backend {backend!r} is not available: {error}") from None
    display = DemoDisplay(len(jobs), workers, enabled=live)
    done: list[Filtered] = []
    started = time.perf_counter()
    with pool, display:
        tasks = [pool.submit(filter_image, *job) for job in jobs]
        display.watch(tasks, [Path(job[0]).name for job in jobs])
        for task in pool.as_completed(tasks):
            result: Any = task.result()
            done.append(result)
            display.finished(result)
    return time.perf_counter() - started, done


def _summary(
    count: int,
    filters: tuple[str, ...],
    workers: int,
    backend: str,
    timings: tuple[float, float, float],
    done: list[Filtered],
    output: Path,
) -> None:
    sequential, parallel, total = timings
    speedup = sequential / parallel if parallel > 0 else float("inf")
    used = len({item.worker for item in done})
    kind = {"thread": ("thread", "threads"), "process": ("process", "processes")}[backend]
    pool = f"{workers} {kind[workers > 1]}:"
    click.echo(f"workpool demo: {count} images, filters {' + '.join(filters)}")
    click.echo(f"  {'one by one:':18s}{sequential:7.2f} s")
    click.echo(f"  {pool:18s}{parallel:7.2f} s   ({used} of {workers} workers took images)")
    click.echo(f"  speedup {speedup:.2f}x, parallel efficiency {speedup / workers:.0%}")
    click.echo(f"  total time {total:.2f} s; filtered images in {output}{os.sep}")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores:
        click.echo(f"  (the machine is busy: load average {load:.1f} on {cores} cores)")
