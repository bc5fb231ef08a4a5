"""A real headless Chromium driven by selenium, for tests and bench scripts that render pages.

Debian's `chromium` and `chromium-driver` packages (`.ci/run` installs them where apt-get
works); `why_unavailable()` says what is missing so tests can skip with that reason.
Selenium is given both paths, so it never tries to download a browser or a driver.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def binaries() -> tuple[str | None, str | None]:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    return browser, shutil.which("chromedriver")


def why_unavailable() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'vdna[test]')"
    browser, driver = binaries()
    if browser is None or driver is None:
        return ("no headless Chromium here: install Debian's chromium and chromium-driver "
                "(apt-get install -y chromium chromium-driver; .ci/run does it where apt-get works)")
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A fresh browser with its own profile directory, closed and removed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = binaries()
    profile = tempfile.mkdtemp(prefix="vdna-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = None
    try:
        drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
        yield drv
    finally:
        if drv is not None:
            drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(drv) -> list[str]:
    """Messages the page logged at error level (JS exceptions, failed loads, CSP refusals)."""
    return [e["message"] for e in drv.get_log("browser") if e.get("level") == "SEVERE"]


def full_page_png(drv, path, width: int = 1400, max_height: int = 20000) -> None:
    """A screenshot of the whole page (the window grown to the page's height)."""
    h = drv.execute_script("return document.documentElement.scrollHeight")
    drv.set_window_size(width, min(int(h) + 140, max_height))
    drv.execute_script("window.scrollTo(0, 0)")
    drv.save_screenshot(str(path))
