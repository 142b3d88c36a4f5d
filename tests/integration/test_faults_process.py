"""Flaky processes, brokers and disks, end to end against a real Mosquitto.

* an edge SIGKILLed at seeded random points (mid-transfer, while verifying, while activating)
  never finds anything but a whole, verified model behind ``active.json``, and resumes;
* Mosquitto SIGKILLed and restarted empty mid-transfer: both edges finish;
* an edge offline for three releases goes straight to the newest;
* the coordinator (a process) SIGKILLed and restarted mid-transfer carries on from its database;
* an edge whose writes fail (RLIMIT_FSIZE) reports it, keeps its active model, and finishes once
  space returns.

Nothing here sleeps to wait for a condition: every wait is on a recorded MQTT message (or a
process exit) with a timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import resource
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.registry import Registry
from edge_node.config import EdgeConfig
from edge_node.storage import FINAL, PART, release_dir
from protocol import (
    ChunkRequest,
    DeviceEvent,
    DeviceState,
    DeviceStatus,
    Manifest,
    TrustedRoot,
    UpdateState,
    VerifyKey,
    open_index,
)
from protocol.envelope import Envelope
from runtime.files import sha256_file
from runtime.urls import parse_broker_url
from testkit.cli_process import CliProcess
from testkit.edge_process import EdgeProcess
from testkit.faultproxy import FaultProxy
from testkit.fleet_watch import FleetWatch
from testkit.local_broker import LocalBroker
from testkit.mqtt_recorder import Received, TopicRecorder
from testkit.synthetic_models import make_model
from tests.support.env import Env, running_env
from tests.support.fleet import release_and_deploy

MB = 1 << 20
WINDOW = EdgeConfig.window  # the edge's default window: chunks outstanding at most


# --- helpers -------------------------------------------------------------------------------
def manifest_of(registry: Registry, fleet: str, version: int) -> Manifest:
    record = registry.release(fleet, "m", version)
    assert record is not None
    return Manifest.decode(Envelope.decode(record.manifest, 1 << 20).body)


def boots(watch: FleetWatch, device: str) -> set[str]:
    """Every agent start (``boot``) of ``device`` seen so far, from its states and events."""
    return {s.boot for s in watch.states(device)} | {e.boot for e in watch.events(device)}


def sigkill_and_settle(watch: FleetWatch, edge: EdgeProcess) -> None:
    """SIGKILL the edge, then wait for its MQTT will: the broker has seen the connection end, so
    everything the dead process had sent is recorded by now."""
    topic = watch.topics.status(edge.device)

    def offline(m: Received) -> bool:
        return m.topic == topic and not DeviceStatus.decode(m.payload).online

    before = {id(m) for m in watch.recorder.messages if offline(m)}
    edge.kill()
    watch.recorder.wait_for(lambda m: offline(m) and id(m) not in before, timeout=30)


def wait_new_boot_state(
    watch: FleetWatch,
    device: str,
    dead: set[str],
    pred: Callable[[DeviceState], bool],
    timeout: float = 60.0,
) -> DeviceState:
    return watch.wait_state(device, lambda s: s.boot not in dead and pred(s), timeout)


def downloading(version: int, held: int) -> Callable[[DeviceState], bool]:
    def pred(s: DeviceState) -> bool:
        return s.version == version and s.state is UpdateState.DOWNLOADING and s.chunks_held >= held

    return pred


def in_phase(version: int, phases: set[UpdateState]) -> Callable[[DeviceState], bool]:
    """In one of ``phases`` of ``version``, or past them (active already: no hanging)."""

    def pred(s: DeviceState) -> bool:
        return (s.version == version and s.state in phases) or s.active.get("m") == version

    return pred


def slow_model(path: Path, seed: int, *, steps: int = 12, width: int = 1024) -> Path:
    """A valid 12 MB model whose test inference takes most of a second on one core: 12 chained
    MatMuls of a fixed [2048, 1024] input with three 1024x1024 weights, so that an activation
    (verify, load, run, switch) lasts long enough for a kill to land inside it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(
            (rng.standard_normal((width, width), dtype=np.float32) / 32).astype(np.float32),
            f"w{i}",
        )
        for i in range(3)
    ]
    nodes = [
        helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i % 3}"], [f"h{i}"])
        for i in range(steps)
    ]
    graph = helper.make_graph(
        nodes,
        f"slow_{seed}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2048, width])],
        [helper.make_tensor_value_info(f"h{steps - 1}", TensorProto.FLOAT, [2048, width])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def download_start(boot: str, version: int) -> Callable[[DeviceEvent], bool]:
    def pred(e: DeviceEvent) -> bool:
        return e.boot == boot and e.version == version and e.event in ("resumed", "downloading")

    return pred


def fresh_request(topic: str) -> Callable[[Received], bool]:
    def pred(m: Received) -> bool:
        return m.topic == topic and ChunkRequest.decode(m.payload).fresh

    return pred


@dataclass(frozen=True)
class DiskView:
    """What a (stopped) edge would find in its data directory."""

    active: dict[str, int]  # active.json: model name -> version
    pointer: bytes | None  # active.json, raw
    held: frozenset[int] | None  # verified chunks in the part file of the release; None: no part
    final: bool  # the release's model.onnx exists (whole and verified: checked)


def inspect_disk(data: Path, released: dict[int, bytes], manifest: Manifest) -> DiskView:
    """Assert the on-disk invariants of a dead edge and describe what it holds.

    ``active.json`` may only name a finalized ``model.onnx`` whose sha256 is the one recorded in
    the pointer and the one of the released version it claims; ``model.onnx`` files only ever
    hold verified bytes; the previous (rollback) model is whole too.
    """
    pointer = data / "active.json"
    raw = pointer.read_bytes() if pointer.exists() else None
    active: dict[str, int] = {}
    for name, entry in (json.loads(raw) if raw is not None else {}).items():
        path = Path(entry["path"])
        version = entry["version"]
        assert version in released, f"active.json names unreleased {name}@{version}"
        assert path.name == FINAL, f"active.json points at {path}, not a finalized model"
        assert path.is_file(), f"active.json points at missing {path}"
        digest = sha256_file(path)
        assert digest.hex() == entry["sha256"], f"{path} does not match the sha256 in active.json"
        assert digest == released[version], f"{path} is not the released {name}@{version}"
        if entry.get("previous_path"):
            previous = Path(entry["previous_path"])
            assert sha256_file(previous) == released[entry["previous_version"]], previous
        active[name] = version
    for version, digest in released.items():
        final = release_dir(data, "m", version) / FINAL
        if final.exists():
            assert sha256_file(final) == digest, f"unverified bytes in {final}"
    directory = release_dir(data, manifest.name, manifest.version)
    held: frozenset[int] | None = None
    if (directory / PART).exists():
        blob = (directory / PART).read_bytes()
        held = frozenset(
            i
            for i in range(manifest.n_chunks)
            if hashlib.sha256(
                blob[i * manifest.chunk_size : i * manifest.chunk_size + manifest.chunk_length(i)]
            ).digest()
            == manifest.chunk_hash(i)
        )
    return DiskView(active, raw, held, (directory / FINAL).exists())


def coordinator_process(
    *, broker_url: str, db: Path, keys: Path, fleet: str, log: Path
) -> CliProcess:
    """``python -m modelcast.cli coordinator`` as a child process (not started), logging to
    ``log``."""
    args = ["coordinator", "--broker", broker_url, "--db", str(db), "--keys", str(keys)]
    return CliProcess([*args, "--fleet", fleet], log_path=log, name="coordinator")


@pytest.fixture
def fresh_env(tmp_path: Path, fresh_broker: LocalBroker, mqtt_fleet: str) -> Iterator[Env]:
    """Like ``env``, on a broker of this test's own, which it may kill and restart."""
    with running_env(tmp_path, fresh_broker, mqtt_fleet) as e:
        yield e


# --- 1. the edge killed anywhere, activation included --------------------------------------
def test_edge_sigkilled_at_random_points_only_ever_activates_whole_verified_models(
    env: Env,
) -> None:
    rng = random.Random(0x5EED)
    v1 = make_model(env.tmp / "v1.onnx", 1 * MB, seed=11)
    v2 = slow_model(env.tmp / "v2.onnx", seed=12)
    released = {1: sha256_file(v1), 2: sha256_file(v2)}
    host, port = parse_broker_url(env.broker.url)
    device = "crashy"
    with FaultProxy(host, port, rate_bytes_per_s=4 * MB, seed=rng.randrange(1 << 30)) as proxy:
        env.start_coordinator()
        release_and_deploy(env.registry, env.keys, v1, "m", 1, env.fleet)
        edge = env.edge(device, broker_url=proxy.url)
        env.watch.wait_active(device, "m", 1)

        release_and_deploy(env.registry, env.keys, v2, "m", 2, env.fleet)
        manifest = manifest_of(env.registry, env.fleet, 2)
        n = manifest.n_chunks
        # Two kills mid-transfer, at random progress and a random instant after it showed (so
        # not in step with the edge's journal syncs); two at random instants after `verifying`
        # shows: within 10 ms (sync, whole-file hash, rename) and 50-300 ms (onnxruntime load and
        # test inference); one as soon as `activating` shows. v2's test inference takes ~0.7 s,
        # so the last three all land before the pointer may be switched.
        plan: list[tuple[str, float, float]] = [
            ("transfer", f, rng.uniform(0.0, 0.4))
            for f in sorted(rng.uniform(0.1, 0.75) for _ in range(2))
        ]
        plan += [
            ("verifying", 0.0, rng.uniform(0.0, 0.01)),
            ("verifying", 0.0, rng.uniform(0.05, 0.3)),
            ("activating", 0.0, 0.0),
        ]
        dead: set[str] = set()
        resumes: dict[str, int] = {}  # boot -> chunks verified on disk when it started
        on_disk_at_start: int | None = None  # of the edge process started last
        for kind, progress, delay in plan:
            if kind == "transfer":
                target = max(1, int(progress * n))
                seen = wait_new_boot_state(env.watch, device, dead, downloading(2, target))
            else:
                phases = {UpdateState.ACTIVATING}
                if kind == "verifying":
                    phases.add(UpdateState.VERIFYING)
                seen = wait_new_boot_state(env.watch, device, dead, in_phase(2, phases))
            if on_disk_at_start is not None:
                resumes[seen.boot] = on_disk_at_start
            assert edge.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):  # unless it dies first
                edge.proc.wait(timeout=delay)
            sigkill_and_settle(env.watch, edge)
            dead |= boots(env.watch, device)

            # The edge is dead: this is what it will find when it starts again.
            disk = inspect_disk(edge.data, released, manifest)
            assert disk.active.get("m") in (1, 2), disk.active  # old or new, never none
            if kind == "transfer":
                assert seen.state is UpdateState.DOWNLOADING
                assert disk.active == {"m": 1} and not disk.final
            else:
                # Killed while v2 was being verified, finalized or checked by onnxruntime: the
                # pointer still names v1; it is replaced only after every check passed.
                assert seen.state in phases, seen
                assert disk.active == {"m": 1}, disk
            if kind == "activating":  # past the hash and the rename: whole and verified on disk
                assert disk.final, disk
            holding = "final" if disk.final else f"{len(disk.held or ())}/{n} chunks"
            print(f"killed {delay:.3f}s after {seen.state.value} ({kind}): {holding} on disk")

            edge.start()
            on_disk_at_start = len(disk.held) if disk.held and not disk.final else None

        final = wait_new_boot_state(
            env.watch,
            device,
            dead,
            lambda s: s.state is UpdateState.ACTIVE and s.active.get("m") == 2,
            timeout=90,
        )
        assert final.version == 2
        if on_disk_at_start is not None:
            resumes[final.boot] = on_disk_at_start
        # Each start resumed from exactly what was verified on disk, no more, no less. (Events
        # go out when the agent's worker is free, or with the next start: waited for here.)
        for boot, held in resumes.items():
            ev = env.watch.wait_event(device, download_start(boot, 2))
            assert (ev.event, ev.detail) == ("resumed", f"{held}/{n} chunks on disk"), ev
    edge.stop()
    assert sha256_file(edge.model_path("m", 2)) == released[2]
    disk = inspect_disk(edge.data, released, manifest)
    assert disk.active == {"m": 2}
    pointer = json.loads(disk.pointer or b"{}")
    assert pointer["m"]["previous_version"] == 1  # the old version kept for rollback


# --- 2. the broker killed and restarted empty ----------------------------------------------
def test_broker_sigkilled_and_restarted_mid_transfer_both_edges_finish(
    fresh_env: Env, fresh_broker: LocalBroker
) -> None:
    env = fresh_env
    model = make_model(env.tmp / "m1.onnx", 12 * MB, seed=21)
    topics = env.watch.topics
    with FaultProxy(fresh_broker.host, fresh_broker.port, rate_bytes_per_s=8 * MB) as proxy:
        coordinator = env.start_coordinator()
        release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet)
        n = manifest_of(env.registry, env.fleet, 1).n_chunks
        devices = ["edge-a", "edge-b"]
        edges = [env.edge(d, broker_url=proxy.url) for d in devices]
        for d in devices:
            env.watch.wait_state(d, downloading(1, n // 4))
        with TopicRecorder(fresh_broker.host, fresh_broker.port, [topics.index()]) as probe:
            index_before = probe.wait_for_topic(topics.index(), 10).payload

        fresh_broker.kill()
        # The edges stay away (their link is down) until the coordinator is back, so that what
        # they send first on their new sessions reaches it and is recorded.
        proxy.refuse_for(600, cut_existing=True)
        fresh_broker.restart()  # no persistence: sessions, subscriptions, retained: all gone

        # The coordinator noticed, reconnected, subscribed again and republished the retained
        # index and manifest (the same signed bytes: a reconnect is no new deployment).
        wanted = [topics.index(), topics.manifest("m", 1)]
        with TopicRecorder(fresh_broker.host, fresh_broker.port, wanted) as probe:
            assert probe.wait_for_topic(topics.index(), 30).payload == index_before
            probe.wait_for_topic(topics.manifest("m", 1), 30)
        assert coordinator.connected

        with FleetWatch(fresh_broker.url, env.fleet) as after:
            proxy.refuse_for(0)
            for d in devices:
                # A new session: the edge subscribes again and asks again at once, saying its
                # old subscriptions are gone, without waiting for a stall to repair things.
                # (A request it queued while offline may go first: paho keeps QoS 1 publishes
                # across a reconnect.)
                after.recorder.wait_for(fresh_request(topics.request(d)), 30)
                requests = [
                    ChunkRequest.decode(m.payload)
                    for m in after.recorder.messages
                    if m.topic == topics.request(d)
                ]
                first_fresh = next(i for i, r in enumerate(requests) if r.fresh)
                fresh = requests[first_fresh]
                assert not any(r.repair for r in requests[: first_fresh + 1]), requests
                assert fresh.subscribed and fresh.ranges, fresh  # it still lacked chunks
            for d in devices:
                after.wait_active(d, "m", 1, timeout=60)
    for e in edges:
        assert sha256_file(e.model_path("m", 1)) == sha256_file(model)


# --- 3. an edge that slept through three releases ------------------------------------------
def test_edge_offline_during_three_releases_goes_straight_to_the_newest(env: Env) -> None:
    models = {v: make_model(env.tmp / f"v{v}.onnx", 1 * MB, seed=30 + v) for v in range(1, 5)}
    env.start_coordinator()
    release_and_deploy(env.registry, env.keys, models[1], "m", 1, env.fleet)
    away = env.edge("away")
    env.edge("online")
    env.watch.wait_active("away", "m", 1)
    env.watch.wait_active("online", "m", 1)
    away.stop()  # a clean stop; its MQTT session stays at the broker, queueing its QoS 1 mail

    for v in (2, 3, 4):  # each one released, deployed and rolled out before the next
        release_and_deploy(env.registry, env.keys, models[v], "m", v, env.fleet)
        env.watch.wait_active("online", "m", v)

    away.start()
    env.watch.wait_active("away", "m", 4)
    fetched = {
        (e.model, e.version)
        for e in env.watch.events("away")
        if e.event in ("downloading", "resumed")
    }
    assert fetched == {("m", 1), ("m", 4)}, fetched
    versions = {s.version for s in env.watch.states("away")}
    assert versions <= {None, 1, 4}, versions
    assert not release_dir(away.data, "m", 2).exists()
    assert not release_dir(away.data, "m", 3).exists()
    assert sha256_file(away.model_path("m", 4)) == sha256_file(models[4])


# --- 4. the coordinator killed and restarted -----------------------------------------------
@pytest.mark.portable
def test_coordinator_sigkilled_mid_transfer_carries_on_from_its_database(env: Env) -> None:
    v1 = make_model(env.tmp / "v1.onnx", 1 * MB, seed=41)
    # large enough that a third of it plus a full window in flight is not all of it
    v2 = make_model(env.tmp / "v2.onnx", 24 * MB, seed=42)
    host, port = parse_broker_url(env.broker.url)
    topics = env.watch.topics
    trust = TrustedRoot(VerifyKey.from_pem(env.keys.root_pub.read_bytes()))

    def index_seq(m: Received) -> int:
        return open_index(trust, m.payload, now=time.time(), fleet=env.fleet).seq

    coordinator = coordinator_process(
        broker_url=env.broker.url,
        db=env.tmp / "coord.db",
        keys=env.keys.dir,
        fleet=env.fleet,
        log=env.tmp / "coordinator.log",
    )
    device = "patient"
    try:
        with (
            FaultProxy(host, port, rate_bytes_per_s=4 * MB) as proxy,
            TopicRecorder(host, port, [topics.index()]) as indexes,
        ):
            coordinator.start()
            release_and_deploy(env.registry, env.keys, v1, "m", 1, env.fleet)
            # a short stall timeout: chunks the dead coordinator had only in memory are asked
            # for again soon
            edge = env.edge(device, broker_url=proxy.url, extra=("--stall-timeout", "2"))
            env.watch.wait_active(device, "m", 1)

            release_and_deploy(env.registry, env.keys, v2, "m", 2, env.fleet)
            manifest = manifest_of(env.registry, env.fleet, 2)
            n = manifest.n_chunks
            at_kill = env.watch.wait_state(device, downloading(2, n // 3))
            coordinator.kill()
            seq_before = max(index_seq(m) for m in indexes.messages)
            # it cannot finish on what is already in flight: it needs the new coordinator
            assert at_kill.chunks_held + WINDOW < n, at_kill

            coordinator.start()
            # The new process continues the index sequence from the database (an edge refuses
            # an older seq) and names the same release.
            newer = indexes.wait_for(lambda m: index_seq(m) > seq_before, 30)
            target = open_index(trust, newer.payload, now=time.time(), fleet=env.fleet)
            record = env.registry.release(env.fleet, "m", 2)
            assert record is not None
            assert target.targets["m"].version == 2
            assert target.targets["m"].manifest_id == record.release_id

            final = env.watch.wait_active(device, "m", 2, timeout=90)
    finally:
        coordinator.stop()
        print(f"----- coordinator log (tail) -----\n{coordinator.log()[-3000:]}")
    assert sha256_file(edge.model_path("m", 2)) == sha256_file(v2)
    events = env.watch.events(device)
    assert not [e for e in events if e.event == "rejected"], events
    assert final.rejections == 0
    starts = [e.event for e in events if e.version == 2 and e.event in ("downloading", "resumed")]
    assert starts == ["downloading"], starts  # one download, carried on, never restarted
    assert final.received - final.duplicates == n  # every chunk it got, it kept


# --- 5. the disk fills up, then space returns ----------------------------------------------
FSIZE_LIMIT = 4 * MB


def _limit_file_size() -> None:  # runs in the child, between fork and exec
    # The soft limit is what fails writes (EFBIG: Python ignores SIGXFSZ). The hard limit stays
    # unlimited so the test can lift the soft one later without CAP_SYS_RESOURCE.
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, resource.RLIM_INFINITY))


def test_failed_writes_are_reported_keep_the_active_model_and_recover_when_space_returns(
    env: Env,
) -> None:
    v1 = make_model(env.tmp / "v1.onnx", 1 * MB, seed=51)
    v2 = make_model(env.tmp / "v2.onnx", 10 * MB, seed=52)
    assert os.path.getsize(v1) < FSIZE_LIMIT < os.path.getsize(v2)
    device = "cramped"
    edge = EdgeProcess(
        device,
        broker_url=env.broker.url,
        data=env.tmp / device,
        trust=env.keys.root_pub,
        fleet=env.fleet,
        log_dir=env.tmp,
        # no stall repair within the test: the edge's own retry of failed writes must do
        extra=("--stall-timeout", "120"),
        preexec_fn=_limit_file_size,
    )
    env.edges.append(edge)
    env.start_coordinator()
    release_and_deploy(env.registry, env.keys, v1, "m", 1, env.fleet)
    edge.start()
    env.watch.wait_active(device, "m", 1)
    pointer = edge.data / "active.json"
    pointer_before = pointer.read_bytes()

    release_and_deploy(env.registry, env.keys, v2, "m", 2, env.fleet)
    failed = env.watch.wait_state(
        device,
        lambda s: s.state is UpdateState.FAILED and (s.reason or "").startswith("write-failed"),
    )
    assert failed.version == 2 and failed.active == {"m": 1}, failed
    # a failed chunk write touches nothing that is active
    assert pointer.read_bytes() == pointer_before
    assert sha256_file(edge.model_path("m", 1)) == sha256_file(v1)
    assert not edge.model_path("m", 2).exists()
    part = release_dir(edge.data, "m", 2) / PART
    assert 0 < part.stat().st_size <= FSIZE_LIMIT
    assert edge.alive
    # It retries (with backoff) and fails again while the disk stays full.
    first = env.watch.wait_event(device, lambda e: e.event == "write-failed")
    assert first.reason == "write-failed", first
    env.watch.wait_event(
        device,
        lambda e: e.event == "write-failed" and e.boot == first.boot and e.seq > first.seq,
        timeout=30,
    )
    assert pointer.read_bytes() == pointer_before

    assert edge.proc is not None  # space returns
    resource.prlimit(
        edge.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    )
    final = env.watch.wait_active(device, "m", 2, timeout=30)
    assert final.reason is None
    assert sha256_file(edge.model_path("m", 2)) == sha256_file(v2)
    active = json.loads(pointer.read_bytes())["m"]
    assert (active["version"], active["previous_version"]) == (2, 1)
