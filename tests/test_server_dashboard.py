"""The dashboard in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import LONG_LIVED, direct_children
from server_support import TOKEN, Gate, Server

pytest.importorskip("fastapi", reason="needs workpool[server]")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install)")

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).exists()),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary (apt-get install chromium) to drive"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module; each test leaves it idle (gates opened, queue drained)."""
    srv = Server(tmp_path_factory.mktemp("dashboard") / "jobs.sqlite3", workers=1).start()
    yield srv
    srv.stop()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    """A gate that is opened at the end of the test whatever happens, so the server goes idle."""
    g = Gate(tmp_path)
    yield g
    g.open()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module: launching it is the slow part."""
    before = direct_children()
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        # Playwright's driver and Chromium's helper processes live as long as the module's
        # browser, and Chromium starts and ends renderers on its own schedule.
        driver = direct_children() - before
        LONG_LIVED.update(driver)
        try:
            yield chromium
        finally:
            chromium.close()
            LONG_LIVED.difference_update(driver)


@pytest.fixture
def page(server: Server, browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(f"http://127.0.0.1:{server.port}/")
        yield tab
        assert not errors, errors
    finally:
        context.close()


def test_dashboard_shows_workers_queue_and_failures(server: Server, page: Any, gate: Gate) -> None:
    """The page fills its tiles and the failures table from the live server."""
    failed = server.submit("boom", kwargs={"message": "dashboard-visible"})["id"]
    server.wait_state(failed, "failed")
    server.submit("gated", *gate.args())
    gate.wait_started(1)
    server.submit("add", 1, 2)  # waits behind the gated job: queue depth 1
    expect = sync_api.expect
    expect(page.locator("#busy")).to_have_text("1")
    expect(page.locator("#queued")).to_have_text("1")
    expect(page.locator("#failures")).to_contain_text("dashboard-visible")
    expect(page.locator("#status")).to_contain_text("live")
    gate.open()
    expect(page.locator("#queued")).to_have_text("0")


def test_dashboard_retry_and_cancel_buttons_act(server: Server, page: Any, gate: Gate) -> None:
    """With the token typed in, Retry reruns a failure and Cancel cancels a queued job."""
    failed = server.submit("boom")["id"]
    server.wait_state(failed, "failed")
    server.submit("gated", *gate.args())
    gate.wait_started(1)
    waiting = server.submit("add", 5, 5)["id"]
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    expect = sync_api.expect
    retry = page.locator(f'#failures tr[data-job="{failed}"] button[data-action="retry"]')
    retry.click()
    cancel = page.locator(f'#jobs tr[data-job="{waiting}"] button[data-action="cancel"]')
    cancel.click()
    assert server.wait_state(waiting, "cancelled")["state"] == "cancelled"
    gate.open()
    assert server.wait_state(failed, "failed")["attempts"] == 2
    expect(page.locator(f'#jobs tr[data-job="{waiting}"]')).to_contain_text("cancelled")


def test_dashboard_renders_a_non_blank_screenshot(server: Server, page: Any) -> None:
    """A screenshot of the page after a few jobs shows real content, charts included."""
    ids = [server.submit("add", i, i)["id"] for i in range(20)]
    for job_id in ids:
        server.wait_state(job_id, "succeeded")
    succeeded = server.request("GET", "/api/summary").body["counts"]["succeeded"]
    sync_api.expect(page.locator("#succeeded")).to_have_text(str(succeeded))
    page.wait_for_function("() => document.querySelector('#jobs').children.length >= 15")
    drawn = page.evaluate(
        """() => { const c = document.getElementById('latency');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
    )
    assert drawn > 0  # the chart drew something
    png = page.screenshot(full_page=True)
    width, height, colours = png_summary(png)
    assert (width, height) >= (1200, 900)
    assert colours > 20  # text, tiles, charts: not a blank or single-colour page


def png_summary(png: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct pixel values of an 8-bit RGB(A) PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, chunk = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            data += chunk
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(data)
    stride = width * channels + 1
    # Filtered bytes still differ between rows of different content: enough to tell a blank
    # page from a drawn one without undoing PNG's filters.
    sample = {raw[i : i + channels] for row in range(0, height, 7) for i in
              range(row * stride + 1, row * stride + stride - channels, channels * 5)}  # fmt: skip
    return width, height, len(sample)
