"""The dashboard in headless Chromium: it loads, its figures move with new events, no console errors.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the
``playwright`` Python package; never ``playwright install`` (offline). Skips
with the reason when either is missing. Saves ``bench/results/dashboard.png``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import SKUS, Cluster

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "bench" / "results" / "dashboard.png"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def wait_page(page: Any, probe: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``probe`` (locator reads) until true; the page's CSP forbids eval-based waits."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        page.wait_for_timeout(100)  # lets the page's events run between reads


def number(page: Any, selector: str) -> int:
    text = (page.text_content(selector) or "").replace(",", "").strip()
    return int(text) if text.lstrip("-").isdigit() else -1


def updates(page: Any) -> int:
    return int(page.get_attribute("body", "data-updates") or 0)


def test_dashboard_updates_live_without_console_errors(cluster: Cluster, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: apt-get install -y chromium (make setup tries)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})

            def on_console(msg: Any) -> None:
                if msg.type in ("error", "warning"):
                    problems.append(f"console {msg.type}: {msg.text}")

            page.on("console", on_console)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))

            page.goto(cluster.workers[1].url + "/", wait_until="load")
            wait_page(page, lambda: updates(page) >= 1, timeout=15, what="a first update")
            stores_before = number(page, "#stores-count")
            sales_before = page.text_content("#sales-legend")
            assert stores_before >= 100
            assert number(page, "#duplicates") >= 1
            assert page.locator("#stores tbody tr.behind").count() >= 1  # S002 has a gap

            # new events: three new stores with sales -> more stores, more sales
            new_stores = [f"B{i}" for i in range(3)]
            cluster.produce(
                [cluster.event(store, "sale", [{"sku": SKUS[0], "qty": 1}]) for store in new_stores]
            )
            wait_page(
                page,
                lambda: number(page, "#stores-count") >= stores_before + 3,
                timeout=30,
                what="the new stores on the page",
            )
            assert page.text_content("#sales-legend") != sales_before
            seen = updates(page)
            wait_page(
                page, lambda: updates(page) >= seen + 2, timeout=5, what="polling each second"
            )

            # stock lookup through the page (routed to the owner by whichever worker)
            page.fill("#lookup-store", "S010")
            page.fill("#lookup-sku", SKUS[0])
            page.click("#lookup button")
            wait_page(
                page,
                lambda: "on hand" in (page.text_content("#lookup-result") or ""),
                timeout=10,
                what="the lookup answer",
            )
            expected = cluster.expected[("S010", SKUS[0])]
            assert f"on hand {expected}," in (page.text_content("#lookup-result") or "")

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copyfile(shot, SCREENSHOT)
        finally:
            browser.close()
    assert not problems, problems
