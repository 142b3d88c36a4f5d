"""One device floods the coordinator with chunk requests while two honest edges download a
release: the per-device rate limit drops the flood before it reaches the worker, the honest edges
complete, and what the flooder could make the coordinator publish stays bounded.

The flooder is a plain paho client on the development broker (which lets anyone publish on any
device's request topic); each of its requests is valid and asks for every chunk as a repair (never
coalesced), the most expensive request there is.
"""

from __future__ import annotations

import threading
import time

import protocol
from coordinator.service import Coordinator, CoordinatorConfig
from testkit.mqtt_recorder import TopicRecorder
from testkit.synthetic_models import make_model
from tests.support.env import Env
from tests.support.fleet import release_and_deploy

RATE = 20.0
BURST = 40.0
FLOOD = 20_000
CHUNK = 16 * 1024


def test_a_request_flood_from_one_device_is_limited_and_the_others_complete(env: Env) -> None:
    model = make_model(env.tmp / "m.onnx", 1_000_000, seed=1)
    release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet, chunk_size=CHUNK)
    record = env.registry.release(env.fleet, "m", 1)
    assert record is not None
    coord = env.coordinator = Coordinator(
        CoordinatorConfig(
            broker_url=env.broker.url,
            db_path=env.tmp / "coord.db",
            keydir=env.keys.dir,
            fleet=env.fleet,
            request_rate=RATE,
            request_burst=BURST,
        )
    )
    started = time.monotonic()
    coord.start()
    assert coord.wait_connected(30)

    topics = protocol.Topics(env.fleet)
    flood_request = protocol.ChunkRequest(
        device="flooder",
        name="m",
        version=1,
        release_id=record.short_id,
        ranges=((0, record.n_chunks),),
        repair=True,
    ).encode()
    flooded: list[int] = []
    with TopicRecorder(env.broker.host, env.broker.port) as flooder:

        def flood() -> None:
            flooded.append(
                flooder.publish_many(
                    (topics.request("flooder"), flood_request) for _ in range(FLOOD)
                )
            )

        env.edge("honest-1")
        env.edge("honest-2")
        thread = threading.Thread(target=flood, name="flooder")
        thread.start()
        try:
            env.watch.wait_active("honest-1", "m", 1, timeout=120)
            env.watch.wait_active("honest-2", "m", 1, timeout=120)
        finally:
            thread.join(180)
        assert flooded == [FLOOD]
        # a request from another device, after the flood on the same connection: once the
        # coordinator has handled it, it has handled every flood message the broker passed on
        sentinel = protocol.ChunkRequest(
            device="sentinel",
            name="m",
            version=1,
            release_id=record.short_id,
            ranges=((0, 1),),
        )
        flooder.publish(topics.request("sentinel"), sentinel.encode())
        assert coord.wait_until(
            lambda: coord.scheduler.device_requests.get("sentinel", 0) == 1, 60
        ), coord.scheduler.device_requests
    elapsed = time.monotonic() - started

    limited = coord.rate_limited
    admitted = coord.scheduler.device_requests
    print(
        f"flood: {limited.get('flooder', 0)} limited, {admitted} admitted, "
        f"{coord.chunks_published} chunks published ({record.n_chunks} per copy), {elapsed:.1f}s"
    )
    # (the broker may drop part of a QoS 0 flood; most of it arrives)
    assert limited.get("flooder", 0) > FLOOD / 4, limited
    assert "honest-1" not in limited and "honest-2" not in limited
    assert coord.rejections["rate-limited"] == limited["flooder"]
    # the flooder got no more than its bucket allows...
    assert admitted["flooder"] <= BURST + RATE * elapsed + 1
    # ...so the chunks published, whoever asked, stay within a copy per honest edge and per
    # request the bucket lets through (each flood request asks for every chunk)
    assert coord.chunks_published <= record.n_chunks * (2 + 1 + BURST + RATE * elapsed)
