"""The scan report renders in headless Chromium (no network): images decode, the page is not blank."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from koaimg.export import write_scan_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this machine")
def test_scan_report_renders_in_chromium(scan_dir, tmp_path):
    from PIL import Image

    report = write_scan_report(scan_dir)
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,1600", f"--screenshot={shot}", report.as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert pixels.shape[:2] == (1600, 1280)
    assert pixels.std() > 20  # header band, tables and figures, not an empty page
    # the header band is the report's dark blue (#102a43), so the CSS was applied
    assert np.allclose(pixels[10, 640], (16, 42, 67), atol=3)
