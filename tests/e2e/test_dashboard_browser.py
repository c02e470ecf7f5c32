"""GET /dashboard in a real browser (Debian's chromium driven by Playwright) against a real
`churnops serve` with two workers: it loads without a console error, shows empty states before any
prediction, its charts hold the live service's data, and a burst of predictions changes the figures
on screen within a refresh. The screenshot is written to test-artifacts/dashboard.png (git-ignored)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.conftest import REPO, PipelineRun
from tests.monitoring_helpers import private_home
from tests.servers import ChurnopsServer, start_churnops, stop_churnops

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def server(pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChurnopsServer]:
    root = tmp_path_factory.mktemp("dashboard")
    home = private_home(pipeline_run.settings.home, root / "home")
    env = {
        "CHURNOPS_AUTH": "off",
        "CHURNOPS_MONITOR_FLUSH_SECONDS": "0.5",
        "CHURNOPS_MONITOR_REFRESH_SECONDS": "1",
    }
    started = start_churnops(home, root / "serve.log", workers=2, env=env)
    yield started
    stop_churnops(started)


@pytest.fixture(scope="module")
def customers(pipeline_run: PipelineRun) -> list[str]:
    return list(pd.read_csv(pipeline_run.data)["customer_id"])


def _served_predictions(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return int(
        sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("predictions_total{"))
    )


def test_dashboard_in_a_real_browser(server: ChurnopsServer, customers: list[str]) -> None:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda err: problems.append(str(err)))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto(f"{server.url}/dashboard")
            page.wait_for_function("Number(document.body.dataset.refreshes || 0) >= 1", timeout=15_000)
            # Before any prediction: empty states, not broken charts.
            assert page.inner_text("#sources-body") == "No predictions yet."
            assert "not enough data" in page.inner_text("#drift-body")
            assert "No alias moves recorded yet" in page.inner_text("#aliases-body")
            assert page.inner_text("#total") == "0"
            assert "v1" in page.inner_text("#slots-body")

            # A burst: 1,200 predictions (batches) and a few single ones; the figures change within a
            # refresh of the first batch's answer (the page polls every 2 s).
            for chunk in range(3):
                instances = [{"customer_id": c} for c in customers[chunk * 400 : (chunk + 1) * 400]]
                response = httpx.post(
                    f"{server.url}/v1/predict/batch", json={"instances": instances}, timeout=30
                )
                assert response.status_code == 200, response.text
                if chunk == 0:
                    answered = int(page.evaluate("document.body.dataset.refreshes"))
                    page.wait_for_function(
                        "document.getElementById('total').textContent !== '0'", timeout=10_000
                    )
                    seen_after = int(page.evaluate("document.body.dataset.refreshes")) - answered
                    assert seen_after <= 2, f"figures changed only after {seen_after} refreshes"
            for c in customers[:25]:
                reply = httpx.post(f"{server.url}/v1/predict", json={"customer_id": c}, timeout=5)
                assert reply.status_code == 200
            sent_at = time.monotonic()
            # Drift bars appear once the workers flushed their counts (0.5 s) and a refresh read them.
            page.wait_for_selector("#drift-body svg.drift-chart rect.bar", timeout=10_000)
            assert time.monotonic() - sent_at < 10

            # The charts hold the live service's data.
            deadline = time.monotonic() + 10  # the other worker's counters arrive with its next snapshot
            while (served := _served_predictions(server.url)) < 1225 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert served == 1225
            page.wait_for_function(
                f"document.getElementById('total').textContent === '{served:,}'", timeout=10_000
            )
            drift = httpx.get(f"{server.url}/v1/monitoring/drift", timeout=10).json()["variants"][0]
            assert drift["report"]["n"] == 1225  # both workers' windows, merged in the SQL store
            bars = page.locator("#drift-body svg.drift-chart rect.bar").count()
            assert bars == len(drift["report"]["features"]) + 1  # every feature and the prediction
            worst = drift["report"]["features"][0]["feature"]
            assert (page.locator("#drift-body svg.drift-chart text").first.text_content() or "").startswith(
                worst
            )
            sources = page.inner_text("#sources-body")
            assert "online_store" in sources
            assert "100.0%" in sources
            page.wait_for_function(
                "Number(document.getElementById('traffic-chart').dataset.points) >= 2", timeout=15_000
            )
            assert page.locator("#traffic-chart svg polyline.series").count() == 1
            assert page.inner_text("#p95") != "–"
            page.wait_for_function("document.querySelector('#cost-body table') !== null", timeout=10_000)
            assert "$" in page.inner_text("#cost-body")
            assert "0.024" in page.inner_text("#cost-body")  # the seed's figure beside the measured one
            page.wait_for_function(
                "document.querySelector('#performance-body svg.auc-chart') !== null", timeout=15_000
            )
            assert page.locator("#performance-body svg circle.estimated").count() >= 1

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
