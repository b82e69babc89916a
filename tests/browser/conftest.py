"""A real headless browser for the console's tests: Debian's ``chromium`` driven by ``chromium-driver``.

Selenium is pointed at the system binaries (``/usr/bin/chromium``'s real
executable and ``/usr/bin/chromedriver``) and told to work offline, so no
driver or browser is ever downloaded. A missing browser skips locally and
fails in CI (``tests.conftest.need``). The browser log is collected (level
ALL) so a test can fail on any SEVERE entry; screenshots go to a directory
under pytest's temp path (and, when ``DISTRICT_CONSOLE_SCREENSHOTS`` names a
directory, are copied there too: how ``docs/console/`` is made).
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need

CHROMIUM = Path("/usr/bin/chromium")
#: Debian's /usr/bin/chromium is a wrapper script; WebDriver starts the real binary.
CHROMIUM_BINARY = Path("/usr/lib/chromium/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1600, 1000)


class Browser:
    """One headless Chromium: the WebDriver, its log, and screenshots."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver = driver
        self.shots = shots
        self.log: list[dict[str, Any]] = []

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def read_log(self) -> list[dict[str, Any]]:
        """Browser console entries since the last read (also kept in :attr:`log`)."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")
        self.log.extend(entries)
        return entries

    def severe(self) -> list[dict[str, Any]]:
        return [e for e in self.read_log() if e.get("level") == "SEVERE"]

    def screenshot(self, name: str) -> Path:
        """The whole page as ``<name>.png``: the viewport grown to the page's height, then put back."""
        cdp = self.driver.execute_cdp_cmd
        height = 0
        for _ in range(3):  # a taller viewport can reflow the page: settle its height
            metrics = cdp("Page.getLayoutMetrics", {})
            wanted = int((metrics.get("cssContentSize") or metrics["contentSize"])["height"])
            if wanted == height:
                break
            height = wanted
            cdp(
                "Emulation.setDeviceMetricsOverride",
                {"width": WINDOW[0], "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
        try:
            shot = cdp("Page.captureScreenshot", {"format": "png"})
        finally:
            cdp("Emulation.clearDeviceMetricsOverride", {})
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        extra = os.environ.get("DISTRICT_CONSOLE_SCREENSHOTS")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(extra) / path.name)
        return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    need(CHROMIUM.exists() and CHROMEDRIVER.exists(), "chromium and chromium-driver are not installed (scripts/setup)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:  # pragma: no cover - a venv from before selenium was a dev dependency
        need(False, "selenium is not installed (scripts/setup)")
        raise
    old = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver or a browser
    profile = tmp_path_factory.mktemp("chromium-profile")
    shots = tmp_path_factory.mktemp("console-screenshots")
    options = Options()
    options.binary_location = str(CHROMIUM_BINARY if CHROMIUM_BINARY.exists() else CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
        "--lang=en-GB",
        "--no-first-run",
        "--no-default-browser-check",
        # Nothing but the page under test talks to the network.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        "--metrics-recording-only",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(shots / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(30)
        yield Browser(driver, shots)
    finally:
        driver.quit()
        if old is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = old
