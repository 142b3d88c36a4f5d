"""Drift end to end on the real MiniLM: a release with a reference profile of support requests,
one edge fed fresh support requests and one fed recipes. From their drift telemetry alone the
coordinator flags the second and not the first, and no text they embedded reaches the broker
or the coordinator's database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.drift import drift_report
from modelcast.cli import main
from modelcast.drift_reference import ReferenceProfile, read_reference
from testkit.mqtt_recorder import TopicRecorder
from tests.support import local_http
from tests.support.env import Env
from tests.support.local_http import post
from tests.support.minilm import BuiltMiniLM

DATA = Path(__file__).parents[1] / "data" / "drift"
#: texts each edge embeds, in requests of BATCH
TEXTS = 80
BATCH = 20


def lines(name: str) -> list[str]:
    return [t for t in (DATA / name).read_text(encoding="utf-8").splitlines() if t.strip()]


def embed_all(env: Env, device: str, texts: list[str]) -> None:
    port = local_http.http_port(env.watch, device)
    for i in range(0, len(texts), BATCH):
        code, answer = post(port, "minilm", {"texts": texts[i : i + BATCH]})
        assert code == 200, answer


def counted(db: Path, fleet: str) -> dict[str, int]:
    report = drift_report(db, fleet, since=0.0)
    return {d["device_id"]: d["window"]["count"] for d in report["devices"]}


@pytest.fixture
def everything(env: Env) -> Iterator[TopicRecorder]:
    """Every message on the broker, whatever its topic."""
    with TopicRecorder(env.broker.host, env.broker.port, "#") as recorder:
        yield recorder


def test_an_edge_fed_another_domain_is_flagged_and_no_text_leaves_the_devices(
    env: Env, minilm: BuiltMiniLM, everything: TopicRecorder
) -> None:
    reference = DATA / "support_reference.txt"
    profile = ReferenceProfile(read_reference(reference), reference)
    coordinator = env.start_coordinator()
    env.registry.add_release(
        minilm.int8,
        name="minilm",
        version=1,
        keys=env.keys.release,
        fleet=env.fleet,
        profile=profile,
    )
    env.registry.deploy("minilm", 1, fleet=env.fleet)
    env.edge("support")
    env.edge("kitchen")
    for device in ("support", "kitchen"):
        env.watch.wait_active(device, "minilm", 1, timeout=120)

    fresh, recipes = lines("support_fresh.txt")[:TEXTS], lines("cooking.txt")[:TEXTS]
    embed_all(env, "support", fresh)
    embed_all(env, "kitchen", recipes)
    db = env.tmp / "coord.db"
    every_window_in = coordinator.wait_until(
        lambda: counted(db, env.fleet) == {"support": TEXTS, "kitchen": TEXTS}, timeout=60
    )
    assert every_window_in, counted(db, env.fleet)

    report = drift_report(db, env.fleet, since=0.0)
    flags = {d["device_id"]: (d["drifted"], d["score"]) for d in report["devices"]}
    assert flags["support"][0] is False and flags["kitchen"][0] is True, flags
    (version,) = report["fleet"]["versions"]
    assert version["drifted_devices"] == 1 and version["devices"] == 2

    # what an operator sees, from the same database
    assert main(["drift", "--db", str(db), "--fleet", env.fleet, "--json", "--since", "0"]) == 0

    # no text reached the broker or the database: only window statistics did
    coordinator.stop()
    env.coordinator = None
    payloads = [m.payload for m in everything.messages]
    drift_topics = [m for m in everything.messages if m.topic.endswith("/telemetry/drift")]
    assert drift_topics and all(len(m.payload) <= 2048 for m in drift_topics)
    stored = b"".join(p.read_bytes() for p in env.tmp.glob("coord.db*") if p.is_file())
    for text in [*fresh, *recipes, *read_reference(reference)]:
        raw = text.encode("utf-8")
        assert not any(raw in p for p in payloads), f"{text!r} went over the broker"
        assert raw not in stored, f"{text!r} is in the coordinator's database"
    assert json.dumps(report)  # the report itself is plain figures
