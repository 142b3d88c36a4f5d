"""An edge on a broker that lets anyone publish anything (as if the broker, or a coordinator
credential, were compromised): oversized messages on every topic it subscribes to, msgpack that
nests without end or declares huge lengths, material signed under an expired certificate, an
expired manifest, and a flood of garbage. Each is refused with its reason, nothing reaches the
active model, the agent keeps serving (its local HTTP API answers, the next genuine release
still goes through) and its memory stays bounded.

The test plays the coordinator (``ScriptedCoordinator`` of test_rejections, with the keys)."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
import time
import urllib.request
from dataclasses import replace

from coordinator.keystore import ReleaseKeys
from protocol import ChunkFrame, ChunkRequest, DeviceEvent, certify
from protocol.codec import pack
from runtime.files import sha256_file
from testkit.edge_process import EdgeProcess
from testkit.synthetic_models import make_model
from tests.integration.test_rejections import CHUNK, Release, Setup, setup
from tests.integration.test_trust_updates import root_key
from tests.support.fleet import Keys

__all__ = ["setup"]

BROKER_MAX = 1_050_000  # under the broker's max_packet_size (1100000): it reaches the edge


def start_download(setup: Setup, version: int = 2) -> Release:
    """A genuine index and manifest for m@version; returns once the edge asks for its chunks
    (it is then subscribed to the manifest topic and to the release's chunk blocks)."""
    c = setup.coord
    r = c.release(make_model(setup.tmp / f"v{version}.onnx", 200_000, seed=version), "m", version)
    c.publish_manifest(r)
    c.publish_index(c.index({"m": r}))
    c.probe.wait_for(
        lambda m: (
            m.topic == c.topics.request("target")
            and ChunkRequest.decode(m.payload).version == version
        )
    )
    return r


def finish(setup: Setup, r: Release, timeout: float = 90.0) -> None:
    """The genuine chunks: the edge still completes and activates the release, byte for byte."""
    setup.coord.serve_all(r)
    setup.watch.wait_active("target", "m", r.manifest.version, timeout)
    path = setup.edge.model_path("m", r.manifest.version)
    assert sha256_file(path) == hashlib.sha256(r.data).digest()


def rejected_on(setup: Setup, reason: str, topic: str) -> DeviceEvent:
    return setup.watch.wait_event(
        "target", lambda e: e.event == "rejected" and e.reason == reason and e.topic == topic
    )


def test_oversized_messages_on_every_subscribed_topic_are_refused(setup: Setup) -> None:
    c, t = setup.coord, setup.coord.topics
    big = b"\x00" * BROKER_MAX
    for topic in (
        t.index(),
        t.root_chain(),
        t.revocations(),
        t.commands("target"),
        t.fleet_commands(),
    ):
        c.probe.publish(topic, big)
        rejected_on(setup, "oversized", topic)
    setup.assert_untouched()

    v2 = start_download(setup)
    for chunk_topic in (t.chunk_block("m", 2, 0), t.resend("target")):
        c.probe.publish(chunk_topic, ChunkFrame.encode(0, v2.id, b"\x00" * (BROKER_MAX - 64)))
        rejected_on(setup, "oversized", chunk_topic)
    setup.assert_untouched()
    finish(setup, v2)


def test_an_oversized_manifest_is_refused(setup: Setup) -> None:
    c, t = setup.coord, setup.coord.topics
    v2 = c.release(make_model(setup.tmp / "v2.onnx", 200_000, seed=2), "m", 2)
    c.publish_index(c.index({"m": v2}))  # the manifest is not there: the edge waits for it
    c.publish_manifest(v2, payload=b"\x00" * BROKER_MAX)
    rejected_on(setup, "oversized", t.manifest("m", 2))
    setup.assert_untouched()
    c.publish_manifest(v2)
    c.probe.wait_for(lambda m: m.topic == t.request("target"))
    finish(setup, v2)


#: msgpack that nests 60000 levels deep, and headers that declare 4 GiB of map, array, str, bin
DEEP = b"\x91" * 60_000 + b"\xc0"  # under every cap (revocation lists: 64 KiB)
HUGE = {
    "map32": b"\xdf\xff\xff\xff\xff",
    "array32": b"\xdd\xff\xff\xff\xff",
    "str32": b"\xdb\xff\xff\xff\xff" + b"x" * 100,
    "bin32": b"\xc6\xff\xff\xff\xff" + b"x" * 100,
}


def test_deeply_nested_truncated_msgpack_and_huge_declared_lengths_are_refused(
    setup: Setup,
) -> None:
    c, t = setup.coord, setup.coord.topics
    topics = [t.index(), t.root_chain(), t.revocations(), t.commands("target")]
    for topic in topics:
        c.probe.publish(topic, DEEP)
        rejected_on(setup, "malformed", topic)
    for header in HUGE.values():
        c.probe.publish(t.index(), header)
    # inside a well-formed envelope: a body that declares 4 GiB
    envelope = b"\x84" + pack("v") + pack(1) + pack("kind") + pack("index") + pack("body")
    c.probe.publish(t.index(), envelope + HUGE["bin32"] + pack("sig") + pack(b"s" * 64))
    for topic in (t.root_chain(), t.revocations(), t.fleet_commands()):
        c.probe.publish(topic, HUGE["map32"])
        rejected_on(setup, "malformed", topic)
    # truncated: a genuine index cut short
    c.probe.publish(t.index(), c.index({"m": setup.v1})[:-20])
    events = [
        e
        for e in setup.watch.events("target")
        if e.event == "rejected" and e.topic == t.index() and e.reason == "malformed"
    ]
    assert len(events) >= 1
    state = setup.watch.wait_state("target", lambda s: s.rejections >= 4 + 5 + 3 + 1)
    assert state.active == {"m": 1}

    # a chunk frame that declares 4 GiB of payload
    v2 = start_download(setup)
    chunk_topic = t.chunk_block("m", 2, 0)
    frame = bytearray(ChunkFrame.encode(0, v2.id, v2.data[:CHUNK]))
    struct.pack_into(">I", frame, 12, 0xFFFFFFFF)
    c.publish_chunk(v2, 0, bytes(frame))
    rejected_on(setup, "malformed", chunk_topic)
    c.publish_chunk(v2, 0, bytes(frame[:20]))  # truncated inside the header
    setup.watch.wait_state("target", lambda s: s.rejections >= 4 + 5 + 3 + 1 + 2)
    setup.assert_untouched()
    finish(setup, v2)


def test_material_signed_under_an_expired_certificate_and_an_expired_manifest(
    setup: Setup,
) -> None:
    c, t = setup.coord, setup.coord.topics
    now = time.time()
    release = setup.keys.release
    expired_cert = certify(
        root_key(setup.keys), release.key.verify_key, issued=now - 7200, expires=now - 3600
    )
    stale = Keys(setup.keys.dir, ReleaseKeys(release.key, expired_cert))
    v2 = c.release(make_model(setup.tmp / "v2.onnx", 200_000, seed=2), "m", 2, keys=stale)
    c.publish_manifest(v2)
    c.publish_index(c.index({"m": v2}, keys=stale))
    event = rejected_on(setup, "expired", t.index())
    assert "certificate expired" in (event.detail or "")
    # a current index naming that release: its manifest, signed under the expired certificate
    c.publish_index(c.index({"m": v2}))
    event = rejected_on(setup, "expired", t.manifest("m", 2))
    assert "certificate expired" in (event.detail or "")
    setup.assert_untouched()

    # freeze: a manifest past its own expiry, validly signed
    v3 = c.release(make_model(setup.tmp / "v3.onnx", 200_000, seed=3), "m", 3)
    old = replace(v3.manifest, created=now - 7200, expires=now - 3600)
    k = setup.keys.release
    v3 = Release(old, old.sign(k.key, k.cert), old.release_id, v3.data)
    c.publish_manifest(v3)
    c.publish_index(c.index({"m": v3}))
    event = rejected_on(setup, "expired", t.manifest("m", 3))
    assert "manifest m@3 expired" in (event.detail or "")
    setup.assert_untouched()
    c.probe.publish(t.manifest("m", 3), b"", retain=True)


def http_port(edge: EdgeProcess) -> int:
    found = re.search(r"local inference endpoint on http://127\.0\.0\.1:(\d+)", edge.log())
    assert found, "the edge did not log its HTTP endpoint"
    return int(found.group(1))


def health(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=10) as answer:
        loaded: dict[str, object] = json.loads(answer.read())
    return loaded


FLOOD = 10_000  # per topic


def test_a_flood_of_garbage_is_counted_the_agent_keeps_serving_memory_stays_bounded(
    setup: Setup,
) -> None:
    c, t = setup.coord, setup.coord.topics
    edge = setup.edge
    port = http_port(edge)
    assert health(port)["models"] == {"m": 1}
    v2 = start_download(setup)  # so the edge also listens on the release's chunk blocks
    before = edge.rss_kb()
    chunk_topic = t.chunk_block("m", 2, 0)
    junk = bytes(range(256)) * 16  # 4 KiB
    answers: list[dict[str, object]] = []
    done = threading.Event()

    def keep_asking() -> None:
        while not done.is_set():
            answers.append(health(port))
            done.wait(0.2)

    asker = threading.Thread(target=keep_asking, name="health")
    asker.start()
    try:
        sent = c.probe.publish_many(
            item
            for i in range(FLOOD)
            for item in (
                (t.index(), junk[: 100 + i % 4000]),
                (chunk_topic, b"MCCH" + junk[: 100 + i % 4000]),
            )
        )
        assert sent == 2 * FLOOD
        # counted: the state's rejection counter climbs far beyond what was reported one by one
        state = setup.watch.wait_state("target", lambda s: s.rejections >= FLOOD // 2, timeout=180)
    finally:
        done.set()
        asker.join(30)
    after = edge.rss_kb()
    reported = [e for e in setup.watch.events("target") if e.event == "rejected"]
    print(
        f"flood: {sent} sent, {state.rejections} counted, {len(reported)} reported, "
        f"{len(answers)} health answers, RSS {before} -> {after} kB"
    )
    assert edge.alive
    assert len(answers) >= 2 and all(a["models"] == {"m": 1} for a in answers)
    assert after - before < 64 * 1024, f"RSS grew from {before} kB to {after} kB"
    assert state.active == {"m": 1}
    # reported in bounded numbers: a few events and log lines per reason, not one per message
    assert len(reported) < 500, len(reported)
    assert edge.log().count("rejected message on") < 500
    # and the agent still does its job; the broker may have dropped chunks queued behind the
    # flood, which a coordinator would resend on the edge's repair request: send them again
    for _attempt in range(5):
        try:
            finish(setup, v2, timeout=30)
            break
        except AssertionError:
            continue
    setup.watch.wait_active("target", "m", 2, timeout=1)
    assert health(port)["models"] == {"m": 2}
    assert edge.rss_kb() - before < 64 * 1024
