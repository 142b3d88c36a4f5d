"""Headless Chromium for the dashboard's tests: Debian's ``chromium`` driven through its
``chromium-driver`` by Selenium (nothing downloaded at run time).

Absent, the tests that need it skip, saying how to install it; with
``MODELCAST_REQUIRE_BROWSER=1`` (``make test`` sets it) they fail instead, so CI cannot pass
without running them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE = "MODELCAST_REQUIRE_BROWSER"
#: as root, in a closed network: no sandbox, no GPU, none of the browser's own connections
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1360,1000",
)


def require_browser() -> None:
    """Skip (or fail under ``MODELCAST_REQUIRE_BROWSER=1``) without chromium and its driver."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return
    why = (
        f"needs {', '.join(missing)}: apt-get install chromium chromium-driver "
        "(make setup does it as root)"
    )
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{REQUIRE}=1 and the browser tests cannot run: {why}", pytrace=False)
    pytest.skip(why)


@contextmanager
def chromium() -> Iterator[Any]:
    """A fresh headless Chromium (its own profile directory), quit afterwards."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="modelcast-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """``pred()``'s first truthy value, polled every 0.1 s (a browser offers no event to wait
    on for another process's change); AssertionError naming ``what`` at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)
