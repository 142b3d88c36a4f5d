"""The dashboard in a real browser (headless Chromium, driven by Selenium through Debian's
chromedriver) against a real coordinator, real Mosquitto and real edges: the fleet page shows
a new version's activation without a reload, a device's hostile reason renders as text, the
rollout page shows a halt with its reason, abort works from the button, and the token is
required off loopback.

``MODELCAST_DASHBOARD_SCREENSHOTS=DIR`` (``make dashboard-screenshots``: docs/) also saves a
screenshot of each page, taken by this browser.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.rollout_status import rollout_reports
from modelcast.cli import main
from modelcast.dashboard import Dashboard, DashboardConfig
from protocol import DeviceEvent, DeviceState, Topics, UpdateState
from testkit.plain_mqtt import plain_client
from testkit.synthetic_models import make_failing_model, make_model
from tests.support.brokers import Broker
from tests.support.browser import chromium, require_browser, wait_for
from tests.support.env import Env, running_env
from tests.support.fleet import devices_check_only, release_and_deploy

DEVICES = ("e0", "e1")
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>\x1b]0;t\x07'
TOKEN = "dashboard-test-token-0123456789"
SCREENSHOTS = os.environ.get("MODELCAST_DASHBOARD_SCREENSHOTS")


@dataclass
class Site:
    env: Env
    dashboard: Dashboard
    browser: Any

    @property
    def db(self) -> Path:
        return self.env.tmp / "coord.db"

    def open(self, path: str = "/") -> None:
        self.browser.get(self.dashboard.url.rstrip("/") + path)

    def text(self, css: str = "#live") -> str:
        from selenium.common.exceptions import WebDriverException

        try:
            return str(self.browser.find_element("css selector", css).text)
        except WebDriverException:  # replaced while read: the next poll reads it again
            return ""

    def shows(self, css: str, text: str, timeout: float = 60.0) -> None:
        """Wait until ``css`` shows ``text`` (the live region is replaced under the reader)."""
        wait_for(lambda: text in self.text(css), f"{css} showing {text!r}", timeout)

    def cli(self, *args: str) -> int:
        return main([*args, "--db", str(self.db), "--fleet", self.env.fleet])

    def release(self, version: int, model: Path, **kw: Any) -> None:
        self.env.registry.add_release(
            model,
            name="m",
            version=version,
            keys=self.env.keys.release,
            fleet=self.env.fleet,
            **kw,
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, broker: Broker) -> Iterator[Site]:
    """Two edges on m@1 under a coordinator, the dashboard (a fast interval) and one browser,
    for the module (the tests build on each other, as an operator's day would)."""
    require_browser()
    tmp = tmp_path_factory.mktemp("dashboard")
    with running_env(tmp, broker, "t" + uuid.uuid4().hex[:10]) as env:
        env.start_coordinator()
        model = make_model(tmp / "m1.onnx", 20_000, seed=1, inputs=16)
        release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet)
        for i, device in enumerate(DEVICES):
            env.edge(device, extra=("--tag", f"site=s{i}"))
        for device in DEVICES:
            env.watch.wait_active(device, "m", 1)
        config = DashboardConfig(
            db=tmp / "coord.db", broker_url=broker.url, fleet=env.fleet, port=0, interval=0.5
        )
        with Dashboard(config) as dashboard, chromium() as browser:
            yield Site(env, dashboard, browser)


def test_the_fleet_page_shows_an_activation_without_a_reload(site: Site) -> None:
    site.open("/")
    wait_for(lambda: site.text("#devices").count("m@1") == 2, "both edges on m@1")
    site.browser.execute_script("window.sameDocument = true")
    site.release(2, make_model(site.env.tmp / "m2.onnx", 20_000, seed=2, inputs=16))
    site.env.registry.deploy("m", 2, fleet=site.env.fleet)

    def active_on_2() -> list[str]:
        rows = site.text("#devices").splitlines()[1:]
        return [r for r in rows if " active " in f" {r} " and "m@2" in r]

    wait_for(lambda: len(active_on_2()) == 2, "both edges shown active on m@2")
    assert site.browser.execute_script("return window.sameDocument") is True  # no reload
    site.shows(".summary", "m@2 2")


def test_a_hostile_reason_renders_as_text(site: Site) -> None:
    topics = Topics(site.env.fleet)
    client = plain_client("evil-" + uuid.uuid4().hex[:6])
    client.connect(site.env.broker.host, site.env.broker.port)
    client.loop_start()
    try:
        state = DeviceState(
            "evil", UpdateState.FAILED, ts=1.0, model="m", version=2, reason=HOSTILE
        )
        event = DeviceEvent(
            "evil", "rejected", ts=2.0, boot="b", seq=1, reason="bad-signature", detail=HOSTILE
        )
        for topic, payload in (
            (topics.state("evil"), state.encode()),
            (topics.telemetry("evil", "events"), event.encode()),
        ):
            client.publish(topic, payload, qos=1, retain=topic.endswith("state")).wait_for_publish(
                10
            )
    finally:
        client.loop_stop()
        client.disconnect()
    site.open("/?q=evil")
    shown = wait_for(
        lambda: "<img src=x" in site.text("#devices") and site.text("#devices"),
        "the hostile reason on the fleet page",
    )
    assert "<script>window.pwned=2</script>\\x1b]0;t\\x07" in shown
    assert not site.browser.find_elements("css selector", "#live img, #live script")
    site.open("/devices/evil")
    site.shows(".events", "bad-signature")
    site.shows(".now", '<img src=x onerror="window.pwned=1">')
    assert not site.browser.find_elements("css selector", "#live img, #live script")
    assert site.browser.execute_script("return typeof window.pwned") == "undefined"


def test_the_rollout_page_shows_a_halt_with_its_reason(site: Site) -> None:
    site.open("/rollouts")
    site.release(3, make_failing_model(site.env.tmp / "m3.onnx"), check=devices_check_only)
    assert site.cli("rollout", "start", "m@3", "--stages", "50,100", "--soak", "1") == 0
    section = "#rollout-m-3"
    site.shows(section, "HALTED", timeout=120)
    [report] = rollout_reports(site.db, site.env.fleet, "m", 3)
    assert report["state"] == "halted" and "activation failed" in report["reason"]
    site.shows(f"{section} .reason", f"Reason: {report['reason']}")
    site.shows(f"{section} .gates", "fail")


def test_abort_works_from_the_button(site: Site) -> None:
    for device in DEVICES:  # back on m@2 after the halt
        site.env.watch.wait_active(device, "m", 2)
    site.release(4, make_model(site.env.tmp / "m4.onnx", 20_000, seed=4, inputs=16))
    assert site.cli("rollout", "start", "m@4", "--stages", "50,100", "--soak", "600") == 0
    site.open("/rollouts")
    section = "#rollout-m-4"
    site.shows(section, "RUNNING")
    site.browser.find_element("css selector", f"{section} button.act-abort").click()
    site.shows(".confirm", "Abort the rollout of m@4")
    assert rollout_reports(site.db, site.env.fleet, "m", 4)[0]["state"] == "running"
    site.browser.find_element("css selector", ".confirm button.act-abort").click()
    site.shows(section, "ABORTED")
    site.shows(".notice", "Rollout m@4 aborted")
    assert rollout_reports(site.db, site.env.fleet, "m", 4)[0]["state"] == "aborted"
    for device in DEVICES:  # the coordinator acted on it: everyone on the base
        site.env.watch.wait_active(device, "m", 2)


def test_the_token_is_required_off_loopback(site: Site, tmp_path: Path) -> None:
    env = site.env
    refused = DashboardConfig
    with pytest.raises(ValueError, match="--token-file"):
        refused(db=site.db, broker_url=env.broker.url, fleet=env.fleet, bind="0.0.0.0")
    config = DashboardConfig(
        db=site.db,
        broker_url=env.broker.url,
        fleet=env.fleet,
        bind="0.0.0.0",
        port=0,
        token=TOKEN,
        interval=0.5,
    )
    with Dashboard(config) as open_wide:
        base = open_wide.url.rstrip("/")
        site.browser.get(base + "/releases")
        assert "needs its token" in site.text("body")
        site.browser.get(base + f"/releases?token={TOKEN}")
        site.shows("#live", "v4")
        assert site.browser.current_url == base + "/releases"  # the token left the address
        cookie = site.browser.get_cookie("modelcast_dashboard")
        assert (
            cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
        )
        site.browser.get(base + "/rollouts")  # the cookie is enough from now on
        site.shows("#live", "m@4")
        forged = urllib.request.Request(
            base + "/rollouts/m@4/pause",
            data=b"csrf=nope",
            headers={"Cookie": f"modelcast_dashboard={cookie['value']}"},
        )
        with pytest.raises(urllib.error.HTTPError) as no_csrf:
            urllib.request.urlopen(forged, timeout=10)
        assert no_csrf.value.code == 403
        bearer = urllib.request.Request(
            base + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(bearer, timeout=10) as reply:
            assert json.loads(reply.read())["fleet"] == env.fleet
        site.browser.delete_all_cookies()
        site.browser.get(base + "/")
        assert "needs its token" in site.text("body")


@pytest.mark.skipif(not SCREENSHOTS, reason="MODELCAST_DASHBOARD_SCREENSHOTS=DIR saves them")
def test_screenshots_of_every_page(site: Site) -> None:
    """A rollout soaking under its gates, with inference traffic for the charts, then each page."""
    assert SCREENSHOTS is not None
    folder = Path(SCREENSHOTS)
    site.release(5, make_model(site.env.tmp / "m5.onnx", 20_000, seed=5, inputs=16))
    start = ("rollout", "start", "m@5", "--stages", "50,100", "--soak", "600")
    assert site.cli(*start, "--max-error-rate", "0.01", "--max-p95-ms", "50") == 0
    rows = {r["device_id"]: r for r in site.env.registry.devices(site.env.fleet)}
    ports = [rows[d]["profile"]["http_port"] for d in DEVICES]
    site.open("/devices/e0")

    def charted() -> bool:  # traffic until every chart of e0 has a line (the page is live)
        for port in ports:
            _infer(port, 5)
        return len(site.browser.find_elements("css selector", ".charts polyline")) >= 6

    wait_for(charted, "e0's charts drawn")
    for name, path, ready in (
        ("fleet", "/", "#devices"),
        ("device", "/devices/e0", ".charts polyline"),
        ("releases", "/releases", ".releases"),
        ("rollouts", "/rollouts", ".rollout"),
        ("health", "/health", ".health"),
    ):
        site.open(path)
        wait_for(lambda ready=ready: site.browser.find_elements("css selector", ready), name)
        site.browser.save_screenshot(str(folder / f"dashboard-{name}.png"))


def _infer(port: int, calls: int) -> None:
    body = json.dumps({"inputs": {"x": [[0.1] * 16]}}).encode()
    for _ in range(calls):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/models/m/infer",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with suppress(OSError), urllib.request.urlopen(request, timeout=10):
            pass
