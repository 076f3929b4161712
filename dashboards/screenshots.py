"""`python -m dashboards.screenshots --out docs/screenshots/live`: every dashboard page of a running
dashboard (e.g. the one `make run` starts) in headless Chromium, saved as PNG once its charts drew."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PAGES = (("", "Fleet"), ("rounds", "Rounds"), ("caching", "Caching"), ("tokens", "Tokens"), ("models", "Models"),
         ("leaderboard", "Leaderboard"), ("pipeline", "Pipeline"))
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")
WIDTH = 1440


def capture(url: str, out: Path, wait_s: float = 60.0) -> list[Path]:
    """Screenshot each page; raises RuntimeError if Chromium is missing or a page never rendered."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        raise RuntimeError("needs Debian's chromium and chromium-driver (make setup installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            for path, title in PAGES:
                driver.set_window_size(WIDTH, 1000)
                driver.get(f"{url.rstrip('/')}/{path}")
                try:
                    WebDriverWait(driver, wait_s, poll_frequency=0.25).until(lambda d, t=title: _rendered(d, t))
                except TimeoutException as error:
                    raise RuntimeError(f"page {title} did not render within {wait_s:.0f} s") from error
                time.sleep(2.0)  # let the last charts finish drawing
                height = driver.execute_script(
                    "const m = document.querySelector('[data-testid=\"stMain\"]');"
                    "return Math.max(m ? m.scrollHeight : 0, document.body.scrollHeight);")
                driver.set_window_size(WIDTH, min(4000, int(height) + 40))
                time.sleep(0.8)
                target = out / f"{title.lower()}.png"
                driver.save_screenshot(str(target))
                saved.append(target)
        finally:
            driver.quit()
    return saved


def _rendered(driver: webdriver.Chrome, title: str) -> bool:
    main = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"]')
    return bool(main) and title in main[0].text and not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSkeleton"]')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.screenshots", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8501")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots/live"))
    args = parser.parse_args(argv)
    try:
        for path in capture(args.url, args.out):
            print(path)  # noqa: T201 - CLI output
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
