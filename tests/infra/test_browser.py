"""The browser the page tests use: Debian's headless Chromium, driven by Selenium.

Checked on a local file, apart from any service: it starts without downloading anything,
reads text, hovers and focuses, and saves screenshots as test artefacts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from selenium.webdriver import ActionChains, Chrome
from selenium.webdriver.common.by import By

from tests.browser import ARTIFACTS, DESKTOP, PHONE

PAGE = """<!DOCTYPE html><html lang="nl"><head><meta charset="utf-8"><title>proef</title>
<style>.tip { display: none } .day:hover .tip, .day:focus .tip { display: block }</style>
</head><body><h1>Kalender</h1>
<div class="day" tabindex="0" id="d1">3<span class="tip">Brasserie De Kroon: 40 uren</span></div>
<div class="day" tabindex="0" id="d2">4<span class="tip">Supermarché Lambert: 8 uren</span></div>
</body></html>"""


def test_chromium_reads_hovers_focuses_and_saves_screenshots(
    browser: Chrome, screenshot: Callable[[str], Path], tmp_path: Path
) -> None:
    page = tmp_path / "page.html"
    page.write_text(PAGE, encoding="utf-8")
    browser.get(page.as_uri())
    assert browser.find_element(By.TAG_NAME, "h1").text == "Kalender"
    first, second = (browser.find_element(By.ID, i) for i in ("d1", "d2"))
    tip = first.find_element(By.CLASS_NAME, "tip")
    assert not tip.is_displayed()
    ActionChains(browser).move_to_element(first).perform()
    assert tip.text == "Brasserie De Kroon: 40 uren"
    # The keyboard reaches a day too: focus shows its tooltip.
    browser.execute_script("arguments[0].focus()", second)
    assert second.find_element(By.CLASS_NAME, "tip").text == "Supermarché Lambert: 8 uren"
    saved = screenshot("calendar-desktop")
    browser.set_window_size(*PHONE)
    try:
        phone = screenshot("calendar-phone")
    finally:
        browser.set_window_size(*DESKTOP)
    for path in (saved, phone):
        assert path.parent == ARTIFACTS
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
