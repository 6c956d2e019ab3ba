"""Headless Chromium for the page tests: Debian's ``chromium`` driven by Selenium.

Nothing here downloads a browser or a driver: Selenium is given Debian's binaries
(``/usr/bin/chromium``, ``/usr/bin/chromedriver``, from the ``chromium`` and
``chromium-driver`` packages that ``infra/test`` installs), so Selenium Manager has
nothing to look for, and it is told to stay offline in case it is asked anyway.

Screenshots are test artefacts: :func:`save_screenshot` writes them under
``test-artifacts/screenshots/`` at the repository root (ignored by git), named after the
test and the page, so a failed run leaves what the browser showed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = os.environ.get("STUDENTWORK_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("STUDENTWORK_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
#: A desktop window, and the width of a small phone (accessibility: works at phone width).
DESKTOP = (1280, 900)
PHONE = (375, 812)


def browser_missing() -> str | None:
    """Why no browser test can run here, or None when Chromium and its driver are there."""
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if shutil.which(binary) is None:
            return f"{binary} is missing (Debian package {package}; infra/test installs it)"
    return None


@contextmanager
def chromium(download_dir: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium that saves downloads (attestation PDFs) in ``download_dir``."""
    # Selenium Manager would otherwise try to resolve a driver over the network.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        # Root in a container has no user namespace for the sandbox.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--lang=en-GB",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(download_dir),
            "download.prompt_for_download": False,
            # A PDF link downloads the file instead of opening the viewer.
            "plugins.always_open_pdf_externally": True,
        },
    )
    # Chromium keeps its singleton socket and a profile in directories of its own under
    # TMPDIR, which outlive the driver's quit: given a directory of the test's, a run
    # leaves nothing behind in /tmp.
    with tempfile.TemporaryDirectory(prefix="studentwork-chromium-") as scratch:
        service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "TMPDIR": scratch})
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield driver
        finally:
            driver.quit()


def save_screenshot(driver: webdriver.Chrome, test_name: str, page: str) -> Path:
    """Save what the browser shows as ``<test>--<page>.png``; return the file."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{test_name}--{page}")
    path = ARTIFACTS / f"{safe}.png"
    driver.save_screenshot(str(path))
    return path
