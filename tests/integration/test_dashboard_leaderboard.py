"""The Leaderboard page in a real browser: `streamlit run` serves a job's leaderboard CSV, headless Chromium
shows the scatter with the Pareto front and the ranked table; a screenshot is saved under
$EDGEFLEET_SCREENSHOTS (docs/screenshots to refresh the committed one), else pytest's temporary directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from dashboards.config import DashboardConfig
from dashboards.launcher import DashboardProcess, DashboardServerConfig
from metrics.launcher import free_port
from tests.integration.test_dashboard_browser import (
    CHROMEDRIVER,
    CHROMIUM,
    SCREENSHOTS_ENV,
    open_page,
    screenshot,
)
from tests.unit.dashboards.test_leaderboard import write

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None, reason="needs Debian's chromium and chromium-driver (make setup)"
)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardProcess]:
    directory = tmp_path_factory.mktemp("leaderboard")
    csv_path = write(directory)
    process = DashboardProcess(
        DashboardServerConfig(port=free_port()),
        # The page reads only the CSV; the store URL is never queried on it.
        DashboardConfig(url="http://127.0.0.1:9", refresh_s=0.0, leaderboard_csv=str(csv_path)),
        log_path=str(directory / "streamlit.log"),
    ).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    from tests.integration.test_dashboard_browser import browser as shared_browser

    yield from shared_browser.__wrapped__(tmp_path_factory)


def test_leaderboard_page_shows_the_pareto_front_and_the_ranked_cells(
    dashboard: DashboardProcess, browser: webdriver.Chrome, tmp_path_factory: pytest.TempPathFactory
) -> None:
    text = open_page(browser, f"{dashboard.url}/leaderboard", "Leaderboard",
                     ["Ranked cells", "Cells on the Pareto front", "2 / 3", "miner · mining then inference"], 1)
    assert "random · mining then inference (0.40 cloud)" not in text  # dominated: not on the front
    assert "miner" in browser.page_source and "random" in browser.page_source
    screenshot(browser, Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path_factory.getbasetemp() / "screenshots"),
               "leaderboard")


def test_leaderboard_page_without_a_job_run_says_how_to_make_one(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from tests.integration.test_dashboard_pages import open_page as open_app_page

    monkeypatch.setenv("EDGEFLEET_DASHBOARD_LEADERBOARD_CSV", str(tmp_path / "none.csv"))
    app = open_app_page("leaderboard")
    assert any("benchmarks.job" in info.value for info in app.info)
    assert not app.error


def test_leaderboard_page_ranks_the_cells_of_the_csv(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from tests.integration.test_dashboard_pages import open_page as open_app_page

    monkeypatch.setenv("EDGEFLEET_DASHBOARD_LEADERBOARD_CSV", str(write(tmp_path)))
    app = open_app_page("leaderboard")
    table = app.dataframe[0].value
    assert list(table["router"]) == ["cloud_only", "miner", "random"]
    assert {item.label: item.value for item in app.metric}["Cells on the Pareto front"] == "2 / 3"
