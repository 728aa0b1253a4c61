"""The review app in a real headless Chromium (Debian's package, driven by Playwright; no browser download).

Run with ``python -m pytest -m browser tests/qa``. Skipped with the reason when Playwright or a Chromium binary
is missing (``apt-get install chromium``; ``KOAIMG_CHROMIUM`` may name another binary).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qa_testutil import BASELINE, PAIR, labels_of, nifti_bytes

pytestmark = pytest.mark.browser

#: software WebGL2 in headless Chromium (SwiftShader via ANGLE), as NiiVue's own Playwright setup uses
CHROMIUM_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"]


def chromium_path() -> str | None:
    """The system Chromium, if any."""
    return os.environ.get("KOAIMG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def expect(locator):
    """Playwright's auto-waiting assertions (its string predicates would need 'unsafe-eval', which the CSP forbids)."""
    from playwright.sync_api import expect as _expect

    return _expect(locator)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is not installed (pip install -e '.[dev]')")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium binary: install Debian's chromium (apt-get install chromium) or set KOAIMG_CHROMIUM")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(out: Path, **options) -> Iterator[str]:
    """Run the app with uvicorn on a loopback port in a thread; yields the base URL."""
    import uvicorn

    from koaimg.qa import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(out, **options), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def site(qa_out: Path) -> Iterator[str]:
    yield from serve(qa_out, reviewer="dr.browser")


@pytest.fixture
def page(browser, site: str):
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    pg.errors = errors
    yield pg
    context.close()


def open_case(page, site: str, case: str) -> None:
    page.goto(f"{site}/cases/{case}")
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)


def canvas_is_not_blank(page) -> tuple[float, int]:
    """Pixel spread and number of distinct colours of the viewer canvas."""
    from PIL import Image

    page.wait_for_timeout(500)
    png = page.locator("#viewer").screenshot()
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return float(rgb.std()), len(np.unique(rgb.reshape(-1, 3), axis=0))


def test_a_late_answer_to_an_older_filter_does_not_replace_the_newer_list(page, site: str) -> None:
    # the US-only list is answered 1.5 s late; by then the reviewer has cleared the filter and sees all four cases
    page.add_init_script("""
      const realFetch = window.fetch;
      window.fetch = async (url, options) => {
        const response = await realFetch(url, options);
        if (String(url).includes("/api/cases?") && String(url).includes("modality=US"))
          await new Promise((resolve) => setTimeout(resolve, 1500));
        return response;
      };""")
    page.goto(site)
    page.wait_for_selector("body[data-ready='1']")
    page.select_option("#f-modality", "US")
    page.select_option("#f-modality", "")
    expect(page.locator("#worklist tbody tr")).to_have_count(4)
    page.wait_for_timeout(2500)  # the late answer has arrived
    expect(page.locator("#worklist tbody tr")).to_have_count(4)


def test_worklist_opens_and_keyboard_triage(page, site: str) -> None:
    page.goto(site)
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#worklist tbody tr").count() == 4
    page.keyboard.press("a")  # approve the selected (first) case
    page.wait_for_selector(f"tr[data-id='{BASELINE}'][data-status='approved']")
    assert page.locator("tr.selected").get_attribute("data-id") == PAIR  # moved on to the next case
    page.keyboard.press("f")
    page.wait_for_selector(f"tr[data-id='{PAIR}'][data-status='flagged']")
    page.select_option("#f-status", "approved")
    expect(page.locator("#worklist tbody tr")).to_have_count(1)
    page.select_option("#f-status", "")
    page.select_option("#f-modality", "US")
    expect(page.locator("#worklist tbody tr")).to_have_count(1)
    page.select_option("#f-modality", "")
    page.fill("#f-q", "koa-002")
    expect(page.locator("#worklist tbody tr")).to_have_count(1)
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    page.wait_for_url("**/cases/KOA-002~baseline~US")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("img[data-role='overlay']").is_visible()
    assert not page.errors


def test_case_view_renders_viewer_and_approves(page, site: str) -> None:
    open_case(page, site, BASELINE)
    assert page.evaluate("document.body.dataset.viewer") == "ok"
    assert page.evaluate("window.koaimgQA.nv.volumes.length") == 3  # image, segmentation, thickness
    spread, colours = canvas_is_not_blank(page)
    assert spread > 10 and colours > 50, (spread, colours)
    assert page.locator("#moaks tr[data-region='FMC'] select").count() == 2
    page.fill("#comment", "segmentation looks right")
    page.click("#approve")
    page.wait_for_selector("#status .badge.approved")
    assert "approved by dr.browser" in page.inner_text("#msg")
    page.select_option("#moaks tr[data-region='FMC'] select[data-grade='moaks_any_loss_grade']", "2")
    expect(page.locator("#msg")).to_contain_text("grade saved")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#history tr").count() == 2
    assert not page.errors


def test_uploaded_correction_shows_recomputed_thickness(page, site: str, qa_out: Path, tmp_path: Path) -> None:
    ref = labels_of(qa_out)
    labels = np.asarray(ref.dataobj).copy()
    fem = np.argwhere(labels == 2)
    labels[tuple(fem[fem[:, 0] < np.median(fem[:, 0])].T)] = 0
    upload = tmp_path / "corrected.nii.gz"
    upload.write_bytes(nifti_bytes(labels, ref.affine))
    open_case(page, site, BASELINE)
    page.set_input_files("#upload-file", str(upload))
    page.click("#upload-submit")
    page.wait_for_selector("#status .badge.corrected", timeout=60_000)
    page.wait_for_selector("body[data-ready='1']")
    cell = page.locator("td[data-structure='femoral_cartilage'][data-region='all'][data-metric='tAB']")
    assert "→" in cell.inner_text() and cell.locator(".changed").count() == 1
    assert "Stored correction v1" in page.inner_text("#viewer-msg")
    assert page.evaluate("document.body.dataset.viewer") == "ok"  # the corrected labels load in the viewer
    page.select_option("#seg-version", "0")  # back to the automated segmentation
    page.wait_for_url("**?v=0")
    page.wait_for_selector("body[data-ready='1']")
    assert page.evaluate("window.koaimgQA.detail.volumes.labels").endswith("/v/0/labels.nii.gz")


def test_drawn_correction_is_submitted_from_the_viewer(page, site: str) -> None:
    open_case(page, site, BASELINE)
    page.click("#draw-toggle")
    page.wait_for_selector("body[data-drawing='1']")
    before = page.evaluate("Array.from(window.koaimgQA.nv.drawBitmap).filter(v => v === 5).length")
    page.select_option("#pen", "5")
    box = page.locator("#viewer").bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25
    page.mouse.move(x0, y0)
    page.mouse.down()
    for step in range(1, 15):
        page.mouse.move(x0 + step * 4, y0 + step * 2)
    page.mouse.up()
    after = page.evaluate("Array.from(window.koaimgQA.nv.drawBitmap).filter(v => v === 5).length")
    assert after > before  # the mouse drag painted patella voxels
    # erase half the femoral cartilage through NiiVue's drawing bitmap, as a reviewer would with pen 0
    page.evaluate("""() => { const nv = window.koaimgQA.nv; const d = nv.drawBitmap; let seen = 0;
        const total = d.filter(v => v === 2).length;
        for (let i = 0; i < d.length; i++) { if (d[i] === 2 && seen++ < total / 2) d[i] = 0; }
        nv.refreshDrawing(); }""")
    page.click("#draw-submit")
    page.wait_for_selector("#status .badge.corrected", timeout=60_000)
    page.wait_for_selector("body[data-ready='1']")
    cell = page.locator("td[data-structure='femoral_cartilage'][data-region='all'][data-metric='tAB']")
    assert "→" in cell.inner_text()
    history = page.inner_text("#history")
    assert "correction" in history and "drawn" in history


def test_pair_view_shows_delta_overlay(page, site: str) -> None:
    open_case(page, site, PAIR)
    assert page.evaluate("document.body.dataset.viewer") == "ok"
    assert page.locator("input[data-layer='Δ thickness (mm)']").count() == 1
    assert page.locator("#change tbody tr").count() > 3
    spread, colours = canvas_is_not_blank(page)
    assert spread > 10 and colours > 50


def test_token_login_sets_a_cookie(browser, qa_out: Path) -> None:
    for url in serve(qa_out, token="tok-123", reviewer="dr.t", allowed_hosts=None):
        context = browser.new_context()
        pg = context.new_page()
        assert pg.goto(url).status == 401
        pg.goto(f"{url}/?token=tok-123")
        pg.wait_for_selector("body[data-ready='1']")
        assert "token" not in pg.url
        assert pg.locator("#worklist tbody tr").count() == 4
        context.close()


def test_second_reviewer_in_another_browser_gets_a_conflict(browser, page, site: str, qa_out: Path,
                                                            tmp_path: Path) -> None:
    open_case(page, site, BASELINE)
    other = browser.new_context().new_page()
    open_case(other, site, BASELINE)
    other.click("#flag")
    other.wait_for_selector("#status .badge.flagged")
    page.click("#approve")  # based on the version this page loaded: stale now
    expect(page.locator("#msg")).to_contain_text("Another reviewer")
    assert page.locator("#msg button", has_text="Reload").count() == 1
    ref = labels_of(qa_out)
    upload = tmp_path / "c.nii.gz"
    upload.write_bytes(nifti_bytes(np.asarray(ref.dataobj), ref.affine))
    page.set_input_files("#upload-file", str(upload))
    page.click("#upload-submit")
    page.wait_for_selector("#viewer-msg a[download]")  # the correction is offered back, not lost
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#status .badge.flagged").count() == 1
    other.context.close()
