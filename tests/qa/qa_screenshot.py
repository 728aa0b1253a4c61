"""Take the README screenshot of the case view: ``python tests/qa/qa_screenshot.py docs/qa_case_view.png``.

Builds the QA test output folder (a finer phantom than the tests use), records a decision and a grade override so
the history is not empty, serves it on loopback and photographs the case view in headless Debian Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from qa_testutil import BASELINE, build_output
from test_qa_browser import CHROMIUM_ARGS, chromium_path, serve


def main(target: Path) -> None:
    """Write the screenshot to ``target``."""
    from playwright.sync_api import sync_playwright

    from koaimg.qa import ReviewService

    with tempfile.TemporaryDirectory() as tmp:
        out = build_output(Path(tmp), scale=2)
        svc = ReviewService(out, reviewer="dr.demo")
        state = svc.override_grade(BASELINE, expected_version=0, region="FMC", grade="moaks_any_loss_grade", value=2,
                                   comment="defect extends posteriorly")
        svc.decide(BASELINE, expected_version=state.version, status="flagged", comment="second read requested")
        for url in serve(out, reviewer="dr.demo"):
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1500, "height": 980})
                page.goto(f"{url}/cases/{BASELINE}")
                page.wait_for_selector("body[data-ready='1']", timeout=120_000)
                page.wait_for_timeout(1500)
                target.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(target))
                browser.close()
    print(f"wrote {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/qa_case_view.png"))
