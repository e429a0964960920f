"""The Prefect UI shows a real curation flow run and its funnel artifact (headless Chromium).

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

from tests.prefect_server import local_prefect_server
from tests.run_sample import small_flow_config

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
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.curate import run_curate

    cfg = small_flow_config(tmp_path, "ui", ["toxicity", "pii", "near_dedup"])
    with local_prefect_server(tmp_path) as server:
        stats = run_curate(cfg, server.url)  # the real curate flow, tasks on Ray
        dedup = stats["stages"]["near_dedup"]
        assert dedup["removed"].get("near_duplicate", 0) > 0

        with get_client(sync_client=True) as client:
            (run,) = client.read_flow_runs()  # this server has seen this one run only
            (funnel,) = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sluice-ui-funnel"]))
            )
        assert run.state.is_completed()
        assert run.name == cfg.name  # the flow run is named after the Sluice run
        run_id, name = run.id, run.name

        # the flow runs page lists the run; its page shows it completed
        browser.get(f"{server.ui}/runs")
        _wait_text(browser, [name])
        _shot(browser, "ui-flow-runs.png")
        browser.get(f"{server.ui}/runs/flow-run/{run_id}")
        _wait_text(browser, [name, "Completed"])
        _shot(browser, "ui-flow-run.png")

        # the funnel artifact renders its markdown table and its inline PNG
        browser.get(f"{server.ui}/artifacts/artifact/{funnel.id}")
        text = _wait_text(browser, ["Funnel", "toxicity", "near_dedup", f"{dedup['kept']:,}"])
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


def test_ui_pretrain_form_runs_to_completed_with_progress_artifact(tmp_path, browser, train_shards):
    """Open the sluice-pretrain deployment, fill its form (shards, one override), submit; the
    served run trains the real sample shards and reaches Completed with its progress artifact
    (100 %) and metrics table."""
    import json
    import shutil
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from selenium.webdriver.common.by import By

    from tests.prefect_server import REPO_ROOT, stop_group

    run_dir = tmp_path / "run"
    shutil.copytree(train_shards, run_dir / "shards")
    fast = ["device=cpu", "tensorboard=false", "steps=10", "log_every=2", "eval_every=4",
            "eval_sequences=16", "checkpoint_every=0", "warmup_steps=2"]  # fmt: skip
    log = tmp_path / "serve.log"
    with local_prefect_server(tmp_path) as server:
        cmd = [sys.executable, "-m", "flows.deploy", "--flow", "pretrain", "--serve",
               "--api-url", server.url, *(a for s in fast for a in ("--train-set", s))]  # fmt: skip
        env = {**server.env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            dep = None
            deadline = time.monotonic() + 120
            while dep is None and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                try:
                    with get_client(sync_client=True) as client:
                        dep = client.read_deployment_by_name("sluice-pretrain/sluice-pretrain")
                except Exception:  # not registered yet
                    time.sleep(1)
            assert dep is not None, log.read_text()

            # the form: typed parameters, the training settings as a nested form
            browser.get(f"{server.ui}/deployments/deployment/{dep.id}/run")
            _wait_text(browser, ["shards", "curate_run", "Nproc", "Predict", "Overrides", "Submit"])
            fields = browser.find_elements(By.CSS_SELECTOR, "textarea")
            fields[0].send_keys(str(run_dir))  # shards: the curated run directory
            browser.find_element(By.CSS_SELECTOR, ".p-draggable-list__create-button").click()
            time.sleep(1)  # a new, empty item at the end of the overrides list
            items = [f for f in browser.find_elements(By.CSS_SELECTOR, "textarea")
                     if not f.get_attribute("value")]  # fmt: skip
            items[1].send_keys("steps=6")  # [shards filled, new override, law, out_dir...]
            _shot(browser, "ui-pretrain-form.png")
            submit = browser.find_element(By.XPATH, "//button[@type='submit']")
            browser.execute_script("arguments[0].scrollIntoView(true);", submit)
            submit.click()
            deadline = time.monotonic() + 30  # a submitted form leaves the /run page
            while browser.current_url.endswith("/run") and time.monotonic() < deadline:
                time.sleep(1)
            _shot(browser, "ui-pretrain-submitted.png")
            assert not browser.current_url.endswith("/run"), _wait_text(browser, ["no such"], 1)

            run, progress_seen_running = None, 0.0
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                with get_client(sync_client=True) as client:
                    runs = client.read_flow_runs()
                run = next((r for r in runs if r.deployment_id == dep.id), None)
                if run and run.state and run.state.is_final():
                    break
                if run and run.state and run.state.is_running():
                    with get_client(sync_client=True) as client:
                        progress_seen_running = max(
                            [progress_seen_running]
                            + [a.data for a in client.read_artifacts() if a.type == "progress"
                               and a.flow_run_id == run.id and a.data < 100]
                        )  # fmt: skip
                time.sleep(2)
            assert run is not None and run.state.is_completed(), (
                f"{run and run.state}\n{log.read_text(errors='replace')[-4000:]}"
            )
        finally:
            stop_group(proc)
        assert run.parameters["shards"] == str(run_dir)
        assert run.parameters["training"]["overrides"] == [*fast, "steps=6"]
        final = json.loads((run_dir / "pretrain" / run.name / "final.json").read_text())
        assert final["steps"] == 6

        browser.get(f"{server.ui}/runs/flow-run/{run.id}")
        _wait_text(browser, [run.name, "Completed"])
        _shot(browser, "ui-pretrain-run.png")
        tab = [e for e in browser.find_elements(By.XPATH, "//*[normalize-space(.)='Artifacts']")
               if e.is_displayed()]  # fmt: skip
        tab[-1].click()
        _wait_text(browser, [f"pretrain-progress-{run.name}", f"pretrain-metrics-{run.name}"])
        _shot(browser, "ui-pretrain-artifacts.png")
        with get_client(sync_client=True) as client:
            mine = [a for a in client.read_artifacts() if a.flow_run_id == run.id]
        arts = {a.key: a for a in sorted(mine, key=lambda a: a.created)}  # the latest versions
        progress = arts[f"pretrain-progress-{run.name}"]
        # shown while training ran: seen between 0 and 100 by the 2 s poll, or (a run that
        # trains faster than the poll) created before the run ended
        assert progress_seen_running > 0 or progress.created < run.end_time, (
            "no progress while training ran"
        )
        assert progress.data == 100.0
        table = arts[f"pretrain-metrics-{run.name}"]
        browser.get(f"{server.ui}/artifacts/artifact/{table.id}")
        text = _wait_text(browser, ["train_loss", "tokens_per_s", "predicted_val_loss"])
        assert "6" in text
        _shot(browser, "ui-pretrain-metrics.png")
