"""The Prefect UI shows a curation flow run and its funnel artifact (headless Chromium).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/install-browser``). Without them the
test is skipped, except under CI (``CI`` set), where it fails. Screenshots go to
``tests/artifacts/`` (gitignored).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from prefect import flow

from flows.artifacts import publish_report_artifacts
from tests.prefect_server import local_prefect_server
from tests.run_sample import build_run

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parent / "artifacts"
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1800",
)


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if not missing:
        return
    msg = f"missing {', '.join(missing)}: run .ci/install-browser"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
def browser(tmp_path):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    # an explicit driver: Selenium Manager would otherwise try to download one
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


@flow(name="sluice-ui-check")
def publish_run_report(run_dir: str) -> dict[str, str]:
    """Publish the report of an already written run as artifacts of this flow run."""
    return {k: str(v) for k, v in publish_report_artifacts(run_dir, prefix="sluice-ui").items()}


def _wait_text(driver, needles: list[str], timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element("tag name", "body").text
        if all(n in text for n in needles):
            return text
        time.sleep(1)
    missing = [n for n in needles if n not in text]
    raise AssertionError(f"{driver.current_url}: never showed {missing}; page text:\n{text[:2000]}")


def _shot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_ui_shows_flow_run_and_funnel_artifact(tmp_path, browser):
    run_dir = tmp_path / "ui-run"
    info = build_run(run_dir, shards=False)
    with local_prefect_server(tmp_path) as server:
        state = publish_run_report(str(run_dir), return_state=True)
        assert state.is_completed()
        run_id = state.state_details.flow_run_id
        ids = state.result()
        assert "funnel" in ids

        import asyncio

        from prefect.client.orchestration import get_client

        async def run_name() -> str:
            async with get_client() as client:
                return (await client.read_flow_run(run_id)).name

        name = asyncio.run(run_name())

        # the flow runs page lists the run; its page shows it completed
        browser.get(f"{server.ui}/runs")
        _wait_text(browser, [name])
        _shot(browser, "ui-flow-runs.png")
        browser.get(f"{server.ui}/runs/flow-run/{run_id}")
        _wait_text(browser, [name, "Completed"])
        _shot(browser, "ui-flow-run.png")

        # the funnel artifact renders its markdown table and its inline PNG
        browser.get(f"{server.ui}/artifacts/artifact/{ids['funnel']}")
        dedup = next(s for s in info["stats"] if s.stage == "dedup")
        text = _wait_text(browser, ["Funnel", "toxicity", "dedup", f"{dedup.kept:,}"])
        assert "docs in" in text
        deadline = time.monotonic() + 30
        widths: list = []
        while time.monotonic() < deadline:
            widths = browser.execute_script(
                "return Array.from(document.images)"
                ".filter(i => i.src.startsWith('data:image/png'))"
                ".map(i => i.complete ? i.naturalWidth : 0)"
            )
            if widths and all(w > 0 for w in widths):
                break
            time.sleep(1)
        _shot(browser, "ui-funnel-artifact.png")
        assert widths and all(w > 100 for w in widths), widths

        # and the artifacts page lists it by key
        browser.get(f"{server.ui}/artifacts")
        _wait_text(browser, ["sluice-ui-funnel"])
        _shot(browser, "ui-artifacts.png")
