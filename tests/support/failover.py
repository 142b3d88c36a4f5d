"""A fleet mid-download while a broker node dies: the set-up and the checks that the failover
tests (test_failover.py, test_nats_cluster.py) share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from protocol import ChunkRequest, DeviceState, UpdateState
from testkit.edge_process import EdgeProcess
from testkit.fleet_watch import FleetWatch
from testkit.mqtt_recorder import Received
from tests.support.env import Env
from tests.support.fleet import release_and_deploy

#: Edges reconnect quickly so a move costs a fraction of a second, not the 30 s default cap.
FAST_RECONNECT = ("--reconnect-min", "0.2", "--reconnect-max", "1.0")


def downloading(version: int, held: int) -> Callable[[DeviceState], bool]:
    """Downloading ``version`` and holding at least ``held`` chunks."""

    def pred(s: DeviceState) -> bool:
        return s.version == version and s.state is UpdateState.DOWNLOADING and s.chunks_held >= held

    return pred


def start_transfer(
    env: Env,
    model: Path,
    devices: Sequence[str],
    *,
    edge_url: str,
    coordinator_url: str,
    extra: tuple[str, ...] = FAST_RECONNECT,
) -> tuple[list[EdgeProcess], int]:
    """Edges on ``edge_url``, online; then the coordinator on ``coordinator_url``, and ``model``
    released and deployed as m@1. Returns the edges and the number of chunks."""
    edges = [env.edge(d, broker_url=edge_url, extra=extra) for d in devices]
    for d in devices:
        env.wait_online(d)
    env.start_coordinator(broker_url=coordinator_url)
    release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet)
    record = env.registry.release(env.fleet, "m", 1)
    assert record is not None
    return edges, record.n_chunks


def wait_quarter(watch: FleetWatch, devices: Iterable[str], n: int) -> dict[str, DeviceState]:
    """Each device's first state holding a quarter of the ``n`` chunks of m@1."""
    return {d: watch.wait_state(d, downloading(1, n // 4), 90) for d in devices}


def assert_resumed(
    watch: FleetWatch, after: Sequence[Received], held: dict[str, DeviceState], n: int
) -> None:
    """Every device of ``held`` asked, in the messages ``after`` the kill, only for chunks it
    lacked then (at most ``n`` minus what it held), and is the same process (one boot)."""
    for device, seen in held.items():
        asked: set[int] = set()
        for m in after:
            if m.topic == watch.topics.request(device):
                asked |= set(ChunkRequest.decode(m.payload).indices())
        assert len(asked) <= n - seen.chunks_held, (device, len(asked), seen)
        boots = {s.boot for s in watch.states(device)}
        assert boots == {seen.boot}, f"{device} restarted: {boots}"
        print(f"{device}: held {seen.chunks_held}/{n} at the kill, then asked for {len(asked)}")
