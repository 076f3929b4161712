"""End to end in a real browser: nodes publish metric batches on the bus, the recorder writes them to influxd,
`streamlit run` serves the dashboard, headless Chromium opens every page, checks it shows the fleet's
data, and saves a screenshot of each: under $EDGEFLEET_SCREENSHOTS (set it to docs/screenshots to refresh the
committed ones), else in pytest's temporary directory, so a test run leaves the checkout clean.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from broker.client import BusClient
from broker.messages.metrics import MetricBatch
from broker.topics import METRICS
from dashboards.config import DashboardConfig
from dashboards.launcher import DashboardProcess, DashboardServerConfig
from dashboards.sample_data import CENTER, sample_fleet
from fleet_center.recorder import MetricRecorder
from metrics import schema
from metrics.config import RecorderConfig
from metrics.launcher import free_port
from tests.conftest import RunningBroker, wait_until
from tests.integration.metrics_servers import RunningInflux

SCREENSHOTS_ENV = "EDGEFLEET_SCREENSHOTS"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1440,1000", "--hide-scrollbars",
)
WIDTH = 1440
PAGE_WAIT_S = 45.0  # first page: Streamlit compiles the app and the browser loads its bundle, on 2 shared cores

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None, reason="needs Debian's chromium and chromium-driver (make setup)"
)


@dataclass
class Fleet:
    recorder: MetricRecorder
    dashboard: DashboardProcess
    points: int


@pytest.fixture(scope="module")
def fleet(mosquitto_module: RunningBroker, influxd: RunningInflux, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Recorder on the bus, nodes' batches published and recorded, dashboard serving."""
    store_config = influxd.store_config()
    recorder = MetricRecorder(RecorderConfig(store=store_config, flush_interval_s=0.1)).start()
    center = BusClient("center", mosquitto_module.bus_config("center")).connect()
    recorder.attach(center, wait_s=5.0)
    points = sample_fleet(time.time_ns())
    total = sum(len(batch) for batch in points.values())
    for node, node_points in points.items():
        if node == CENTER:
            recorder.record(node_points)  # the center records its own points in-process
            continue
        with BusClient(node, mosquitto_module.bus_config(node)) as client:
            assert client.wait_connected(5.0)
            client.publish(METRICS, MetricBatch(node, tuple(node_points)), node=node)
            client.flush(5.0)
    assert wait_until(lambda: recorder.stats().written == total, timeout_s=20), recorder.stats()
    log_path = tmp_path_factory.mktemp("dashboard") / "streamlit.log"
    dashboard = DashboardProcess(
        DashboardServerConfig(port=free_port()),
        # pi-03 fell silent 120 s before the sample's "now"; the others 2 s before. 60 s keeps that
        # distinction however long the set-up took on busy cores.
        DashboardConfig(url=influxd.url, db=store_config.db, refresh_s=2.0, offline_after_s=60.0),
        log_path=str(log_path),
    ).start()
    try:
        yield Fleet(recorder, dashboard, total)
    finally:
        dashboard.stop()
        center.close()
        recorder.stop()


@pytest.fixture(scope="module")
def mosquitto_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """The shared `mosquitto` fixture, once for this module (one broker serves every page)."""
    from broker.launcher import BrokerConfig, LocalBroker
    from tests.conftest import CLOUD_USERS, EDGE_USERS

    tmp_path = tmp_path_factory.mktemp("broker")
    config = BrokerConfig(port=free_port(), state_dir=str(tmp_path / "broker"), secrets_dir=str(tmp_path / "secrets"),
                          edge_users=EDGE_USERS, cloud_users=CLOUD_USERS)
    broker = LocalBroker(config).start()
    try:
        yield RunningBroker(broker, tmp_path / "secrets")
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: webdriver.Chrome, url: str, title: str, expected: list[str], charts: int) -> str:
    """Load a page; wait until its title, the expected texts and `charts` rendered charts are there. Returns its text."""
    driver.set_window_size(WIDTH, 1000)
    driver.get(url)

    def rendered(driver: webdriver.Chrome) -> bool:
        main = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"]')
        if not main:
            return False
        text = main[0].text
        drawn = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg')
        return title in text and all(item in text for item in expected) and len(drawn) >= charts

    try:
        WebDriverWait(driver, PAGE_WAIT_S, poll_frequency=0.25).until(rendered)
    except TimeoutException:
        text = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"{url}: expected {title!r}, {expected} and {charts} charts; page shows:\n{text[:2000]}")
    assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text
    return driver.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text


def screenshot(driver: webdriver.Chrome, directory: Path, name: str) -> None:
    """The whole page: grow the window to the content's height first (Streamlit scrolls inside stMain)."""
    height = driver.execute_script(
        "const main = document.querySelector('[data-testid=\"stMain\"]');"
        "return Math.max(main ? main.scrollHeight : 0, document.body.scrollHeight);"
    )
    driver.set_window_size(WIDTH, min(4000, int(height) + 40))
    time.sleep(0.8)  # charts re-lay out to the new size
    directory.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(directory / f"{name}.png"))


PAGES = [
    # path, title, texts that only the recorded data can produce, charts drawn, table cells (in the grid's DOM)
    ("", "Fleet", ["Nodes online", "3 / 4", "2 / 3"], 3, ["pi-03", "cloud-1", "smollm2-135m-int8"]),
    ("rounds", "Rounds", ["#23", "Round timeline", "Per round"], 4, []),
    ("caching", "Caching", ["round 21", "Placement after round 21", "Failed deployments"], 1, ["smollm2-135m-edge15"]),
    ("tokens", "Tokens", ["Cloud requests", "Bytes up per response", "Sessions"], 3, ["s-pi-01-000"]),
    ("models", "Models", ["Perplexity vs size", "Loads and unloads"], 3, ["smollm2-135m-edge20"]),
    ("pipeline", "Pipeline", ["Allocation over time", "Compute vs communication", "Reallocations"], 3, ["pl-sample"]),
]


@pytest.mark.parametrize(("path", "title", "expected", "charts", "cells"), PAGES, ids=[page[1] for page in PAGES])
def test_page_shows_the_recorded_fleet(
    fleet: Fleet, browser: webdriver.Chrome, path: str, title: str, expected: list[str], charts: int, cells: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    open_page(browser, f"{fleet.dashboard.url}/{path}", title, expected, charts)
    # Tables draw on a canvas; their accessible DOM copy carries the cell texts.
    assert wait_until(lambda: all(cell in browser.page_source for cell in cells), timeout_s=10), cells
    screenshot(browser, Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path_factory.getbasetemp() / "screenshots"),
               title.lower())


def test_rounds_page_refreshes_live(fleet: Fleet, browser: webdriver.Chrome) -> None:
    open_page(browser, f"{fleet.dashboard.url}/rounds", "Rounds", ["#23"], 1)
    stats = {"QA": schema.TaskTypeStats(tasks=5, edge=4, cloud=1, latency_ms_mean=400.0, quality=0.8)}
    fleet.recorder.record(schema.round_points(24, stats, duration_s=9.0, timestamp_ns=time.time_ns()))
    # No reload: the page's fragment re-queries every refresh_s (2 s here).
    WebDriverWait(browser, 20, poll_frequency=0.25).until(
        lambda driver: "#24" in driver.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text
    )
