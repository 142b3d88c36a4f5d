"""What an edge with a wrong clock does with expiry (issue 13, item 6; docs/SECURITY.md): a day
behind, a day ahead or at 1970 it takes valid releases (it is not bricked), and at 1970 it still
refuses a manifest that truly expired, because expiry is never checked against a time earlier
than the newest signed index it verified.

The agents run in this process, with their clock shifted, against the real broker and
coordinator."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from edge_node import EdgeAgent, EdgeConfig
from protocol import UpdateState
from testkit.synthetic_models import make_model
from tests.support.env import Env

DAY = 86400.0


@contextmanager
def agent(env: Env, device: str, clock: Callable[[], float]) -> Iterator[EdgeAgent]:
    config = EdgeConfig(
        broker_url=env.broker.url,
        device_id=device,
        data_dir=env.tmp / device,
        trust_path=env.keys.root_pub,
        fleet=env.fleet,
        http=None,
        telemetry_interval=1.0,
    )
    edge = EdgeAgent(config, clock=clock)
    edge.start()
    try:
        yield edge
    finally:
        edge.stop()


def _release(env: Env, version: int, **kwargs: float) -> None:
    model = make_model(env.tmp / f"m{version}.onnx", size_bytes=200_000, seed=version)
    env.registry.add_release(
        model, name="m", version=version, keys=env.keys.release, fleet=env.fleet, **kwargs
    )
    env.registry.deploy("m", version, fleet=env.fleet)


@pytest.mark.parametrize(
    ("device", "offset"),
    [("behind", -DAY), ("ahead", DAY), ("at1970", None)],
    ids=["a-day-behind", "a-day-ahead", "at-1970"],
)
def test_a_wrong_clock_still_takes_a_valid_release(
    env: Env, device: str, offset: float | None
) -> None:
    _release(env, 1)
    env.start_coordinator()
    clock = (lambda: 12.0) if offset is None else (lambda: time.time() + offset)
    with agent(env, device, clock):
        env.watch.wait_active(device, "m", 1, timeout=60)
    record = json.loads((env.tmp / device / "agent.json").read_text())
    assert record["time_floor"] > time.time() - 600  # the index's issued time, kept


def test_at_1970_a_truly_expired_manifest_is_still_refused(env: Env) -> None:
    # signed an hour ago, expired a minute after: the index naming it is fresh
    _release(env, 1, now=time.time() - 3600, expires_in=60.0)
    env.start_coordinator()
    with agent(env, "at1970", lambda: 12.0) as edge:
        state = env.watch.wait_state(
            "at1970", lambda s: s.state is UpdateState.REJECTED and "expired" in (s.reason or "")
        )
        assert state.active == {}
        assert edge.reporter.rejections["expired"] >= 1
