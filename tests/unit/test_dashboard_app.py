"""The dashboard's routes over a snapshot: pages and their live fragments, the token and CSRF
rules end to end, the rollout buttons writing the rollouts table as ``modelcast rollout`` does,
``/api`` in the shapes of ``--json`` and ``/metrics``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.rollout_plan import Rollout
from coordinator.rollout_store import RolloutStore
from modelcast.dashboard.access import COOKIE, Access
from modelcast.dashboard.app import DashboardApp
from modelcast.dashboard.broker_watch import BrokerState
from modelcast.dashboard.snapshot import SnapshotReader
from modelcast.dashboard.web import Request, Response
from protocol import Selector
from tests.unit.dashboard_fakes import FakeSource, device, fleet_data, rollout

HOST = {"Host": "127.0.0.1:8471"}
HOSTILE = "<script>window.pwned=1</script>\x1b[2J"
TOKEN = "a-long-enough-token-42"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database holding one running rollout, m@2 over m@1 (as the rollout table keeps it)."""
    path = tmp_path / "coord.db"
    store = RolloutStore(path)
    store.insert(
        Rollout(
            fleet="f",
            name="m",
            version=2,
            base=1,
            select=Selector(),
            stages=(50.0, 100.0),
            soak=60.0,
            created=time.time(),
            updated=time.time(),
        )
    )
    store.close()
    return path


@pytest.fixture
def source() -> FakeSource:
    devices = [device("a"), device("evil", state="failed", reason=HOSTILE, active={"m": 2})]
    return FakeSource(fleet_data(devices, [rollout()]))


@pytest.fixture
def reader(source: FakeSource) -> Iterator[SnapshotReader]:
    r = SnapshotReader(source, 0.05)
    r.start()
    r.wait_for_generation(0, 5.0)
    yield r
    r.stop()


def make_app(db: Path, reader: SnapshotReader, token: str | None = None) -> DashboardApp:
    broker = BrokerState("mqtt://b:1", True, 0.0, {"ab" * 8: 100})
    access = Access.make(token, "127.0.0.1" if token is None else "0.0.0.0", 8471)
    return DashboardApp(db=db, fleet="f", access=access, reader=reader, broker=lambda: broker)


def get(app: DashboardApp, path: str, **headers: str) -> Response:
    return app.handle(Request.parse("GET", path, {**HOST, **headers}))


def post(app: DashboardApp, path: str, form: str) -> Response:
    return app.handle(Request.parse("POST", path, HOST, form.encode()))


def page(response: Response) -> str:
    assert response.status == 200, response.body[:300]
    return response.body.decode()


def test_every_page_is_served_from_the_snapshot(
    db: Path, reader: SnapshotReader, source: FakeSource
) -> None:
    app = make_app(db, reader)
    reads = source.fleet_reads
    fleet = page(get(app, "/"))
    assert '<div id="live" data-gen="' in fleet and "/static/dashboard.js" in fleet
    assert "evil" in fleet and "2 devices" in fleet
    assert "<script>window" not in fleet and "&lt;script&gt;window.pwned=1" in fleet
    assert "\\x1b[2J" in fleet
    for path in ("/releases", "/rollouts", "/health", "/devices/evil", "/api", "/metrics"):
        assert get(app, path).status == 200, path
    assert get(app, "/nowhere").status == 404
    assert source.fleet_reads - reads <= 1  # the reader's own pace, not one per page
    assert get(app, "/static/dashboard.js").content_type.startswith("text/javascript")


def test_a_live_fragment_waits_for_a_newer_snapshot(db: Path, reader: SnapshotReader) -> None:
    app = make_app(db, reader)
    old = reader.snapshot().generation
    reader.wait_for_generation(old, 5.0)  # a newer snapshot exists, however slow the machine
    fresh = get(app, "/", **{"X-Live": f"{old}-00000000"})
    assert fresh.status == 200 and "<html" not in fresh.body.decode()
    token = dict(fresh.headers)["X-Live-Generation"]
    assert int(token.split("-")[0]) > old
    reader.stop()  # no newer snapshot from now on
    assert get(app, "/", **{"X-Live": token}).status == 204  # after a wait: nothing changed
    assert get(app, "/", **{"X-Live": "junk"}).status == 200


def test_the_token_flow(db: Path, reader: SnapshotReader) -> None:
    app = make_app(db, reader, TOKEN)
    assert get(app, "/").status == 401
    assert get(app, "/api/status").status == 401
    signed = get(app, f"/rollouts?token={TOKEN}")
    assert signed.status == 303
    headers = dict(signed.headers)
    assert headers["Location"] == "/rollouts"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and TOKEN not in cookie
    assert page(get(app, "/rollouts", Cookie=cookie))
    assert get(app, "/metrics", Authorization=f"Bearer {TOKEN}").status == 200
    assert get(app, "/", Cookie=f"{COOKIE}=nope").status == 401


def stored_state(db: Path) -> str:
    store = RolloutStore(db)
    try:
        stored = store.get("f", "m", 2)
        assert stored is not None
        return stored.rollout.state
    finally:
        store.close()


def test_the_buttons_write_the_rollout_as_the_cli_does(db: Path, reader: SnapshotReader) -> None:
    app = make_app(db, reader)
    csrf = app.access.csrf
    assert post(app, "/rollouts/m@2/pause", "csrf=forged").status == 403
    assert stored_state(db) == "running"
    done = post(app, "/rollouts/m@2/pause", f"csrf={csrf}")
    assert done.status == 303 and dict(done.headers)["Location"].startswith("/rollouts?done=pause")
    assert stored_state(db) == "paused"
    again = post(app, "/rollouts/m@2/pause", f"csrf={csrf}")
    assert again.status == 409 and "not running" in again.body.decode()
    ask = page(post(app, "/rollouts/m@2/abort", f"csrf={csrf}"))
    assert "Abort the rollout of m@2" in ask and 'name="confirm" value="yes"' in ask
    assert stored_state(db) == "paused"  # nothing done before the answer
    assert post(app, "/rollouts/m@2/abort", f"csrf={csrf}&confirm=yes").status == 303
    assert stored_state(db) == "aborted"
    assert post(app, "/rollouts/m@2/explode", f"csrf={csrf}").status == 404
    notice = page(get(app, "/rollouts?done=abort&rollout=m@2"))
    assert "Rollout m@2 aborted" in notice
    assert "&lt;b&gt;" not in page(get(app, "/rollouts?done=abort&rollout=<b>"))


def test_the_api_has_the_shapes_of_the_command_line(db: Path, reader: SnapshotReader) -> None:
    import json

    app = make_app(db, reader)
    status = json.loads(get(app, "/api/status").body)
    assert set(status) == {
        "fleet",
        "deployments",
        "kinds",
        "devices",
        "health",
        "health_since",
        "rollouts",
    }
    assert [d["device_id"] for d in status["devices"]] == ["a", "evil"]
    only = json.loads(get(app, "/api/status?state=failed&limit=5").body)
    assert [d["device_id"] for d in only["devices"]] == ["evil"]
    [report] = json.loads(get(app, "/api/rollouts").body)
    assert report["rollout"] == "m@2" and "live_gates" not in report
    assert json.loads(get(app, "/api/rollouts/m@2").body)["state"] == "running"
    assert get(app, "/api/rollouts/m@9").status == 404
    assert json.loads(get(app, "/api/devices/evil").body)["device"]["reason"] == HOSTILE


def test_metrics_in_the_exposition_format(db: Path, reader: SnapshotReader) -> None:
    app = make_app(db, reader)
    scrape = get(app, "/metrics")
    assert scrape.content_type.startswith("text/plain; version=0.0.4")
    text = scrape.body.decode()
    for line in (
        "modelcast_devices_online 2.0",
        'modelcast_devices{state="active"} 1.0',
        'modelcast_devices{state="failed"} 1.0',
        'modelcast_release_devices{model="m",variant="",version="1"} 1.0',
        'modelcast_rollout_stage{model="m",version="2"} 1.0',
        'modelcast_rollout_state{model="m",state="running",version="2"} 1.0',
        'modelcast_telemetry_samples_ingested_total{kind="metrics"} 0.0',
        "modelcast_dashboard_broker_up 1.0",
        'modelcast_chunk_bytes_published_total{model="?",variant="%s",version="?"} 100.0'
        % ("ab" * 8),
    ):
        assert line in text, line


def test_a_banner_reaches_an_open_page_without_a_new_snapshot(
    db: Path, reader: SnapshotReader
) -> None:
    broker = {"now": BrokerState("mqtt://b:1", True, 0.0)}
    access = Access.make(None, "127.0.0.1", 8471)
    app = DashboardApp(db=db, fleet="f", access=access, reader=reader, broker=lambda: broker["now"])
    reader.stop()  # the snapshot stays as it is
    token = dict(get(app, "/", **{"X-Live": "0-0"}).headers)["X-Live-Generation"]
    assert get(app, "/", **{"X-Live": token}).status == 204
    broker["now"] = BrokerState("mqtt://b:1", False, 0.0)
    lost = get(app, "/", **{"X-Live": token})
    assert lost.status == 200 and "mqtt://b:1 cannot be reached" in lost.body.decode()
