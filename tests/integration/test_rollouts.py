"""Staged rollouts on a real Mosquitto with six edge processes: a release that fails when run
halts after the first stage, a good one completes (across a coordinator restart), a slow one
trips the p95 gate and its stage goes back to the previous version at once."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.errors import RegistryError
from coordinator.release_build import ModelCheck
from coordinator.rollout_status import rollout_reports
from modelcast.acceptance import load_vectors
from modelcast.cli import main
from runtime.files import sha256_file
from runtime.model_check import check_model
from testkit.synthetic_models import make_failing_model, make_model, make_slow_model
from tests.support.brokers import Broker
from tests.support.env import Env, running_env
from tests.support.fleet import devices_check_only, release_and_deploy

DEVICES = [f"e{i}" for i in range(6)]
TAGS = {d: ("class=gateway" if i < 3 else "class=camera") for i, d in enumerate(DEVICES)}


@pytest.fixture(scope="module")
def fleet_env(tmp_path_factory: pytest.TempPathFactory, broker: Broker) -> Iterator[Env]:
    """Six edges running m@1, started once for the module (the tests build on each other)."""
    tmp = tmp_path_factory.mktemp("rollouts")
    with running_env(tmp, broker, "t" + uuid.uuid4().hex[:10]) as env:
        env.start_coordinator()
        base = make_model(tmp / "m1.onnx", 20_000, seed=1, inputs=16)
        release_and_deploy(env.registry, env.keys, base, "m", 1, env.fleet)
        for device in DEVICES:
            env.edge(device, extra=("--tag", TAGS[device]))
        for device in DEVICES:
            env.watch.wait_active(device, "m", 1)
        wait_for(lambda: len(profiled(env)) == len(DEVICES), "every device's profile recorded")
        yield env


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def profiled(env: Env) -> dict[str, dict[str, Any]]:
    return {r["device_id"]: r for r in env.registry.devices(env.fleet) if r.get("profile")}


def report(env: Env, release: str) -> dict[str, Any]:
    name, _, version = release.partition("@")
    [r] = rollout_reports(env.tmp / "coord.db", env.fleet, name, int(version))
    return r


def wait_rollout(
    env: Env, release: str, pred: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def check() -> bool:
        found[:] = [report(env, release)]
        return pred(found[0])

    wait_for(check, f"rollout {release}: {what}")
    return found[0]


def cli(env: Env, *args: str) -> int:
    return main([*args, "--db", str(env.tmp / "coord.db"), "--fleet", env.fleet])


def release(env: Env, model: Path, version: int, *, check: ModelCheck = check_model) -> None:
    env.registry.add_release(
        model, name="m", version=version, keys=env.keys.release, fleet=env.fleet, check=check
    )


def serving(env: Env, device: str) -> dict[str, int]:
    port = profiled(env)[device]["profile"]["http_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as reply:
        body = json.loads(reply.read())
    models: dict[str, int] = body["models"]
    return models


def downloaded(env: Env, device: str, version: int) -> bool:
    events = env.watch.events(device)
    asked = any(e.event in ("downloading", "resumed") and e.version == version for e in events)
    return asked or (env.tmp / device / "models" / "m" / str(version)).exists()


def stage_members(r: dict[str, Any], stage: int = 1) -> set[str]:
    return {d for d, s in r["devices"].items() if s["stage"] == stage}


def test_a_release_that_fails_when_run_halts_after_the_first_stage(
    fleet_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env = fleet_env
    failing = make_failing_model(env.tmp / "m2.onnx")
    with pytest.raises(RegistryError, match="test inference failed"):
        release(env, failing, 2)  # the coordinator runs it once before signing it
    # one that fails only on the devices (another runtime, another CPU) gets past that check
    release(env, failing, 2, check=devices_check_only)
    assert cli(env, "rollout", "start", "m@2", "--stages", "34,100", "--soak", "1") == 0
    r = wait_rollout(env, "m@2", lambda r: r["state"] == "halted", "halted")
    first = stage_members(r)
    assert len(first) == 3  # ceil(34% of 6)
    assert "activation failed" in r["reason"] and "stage 1" in r["reason"]
    assert r["stage"] == 1 and r["base"] == 1
    for device in DEVICES:
        env.watch.wait_active(device, "m", 1)
        assert serving(env, device) == {"m": 1}, device
    outside = set(DEVICES) - first
    # the first failure halts the stage: members still downloading then drop the download
    wait_for(
        lambda: any(report(env, "m@2")["devices"][d]["state"] == "failed" for d in first),
        "a stage 1 failure reported",
    )
    states = report(env, "m@2")["devices"]
    assert all(states[d]["state"] in ("failed", "not-updated") for d in first), states
    for device in outside:
        assert not downloaded(env, device, 2), f"{device} outside stage 1 downloaded m@2"
        assert report(env, "m@2")["devices"][device]["state"] == "waiting"
    capsys.readouterr()
    assert cli(env, "rollout", "status", "m@2", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "halted" and shown["reason"] == r["reason"]
    assert cli(env, "rollout", "status", "m@2") == 0
    text = capsys.readouterr().out
    assert "HALTED, stage 1 of 2" in text and r["reason"] in text and " failed" in text
    assert cli(env, "status") == 0
    table = capsys.readouterr().out
    assert "m@2" in table and "halted" in table and "activation failed" in table


def test_a_good_release_completes_and_a_restart_resumes_at_the_same_stage(
    fleet_env: Env,
) -> None:
    env = fleet_env
    release(env, make_model(env.tmp / "m3.onnx", 20_000, seed=3, inputs=16), 3)
    assert cli(env, "rollout", "start", "m@3", "--stages", "34,100", "--soak", "4") == 0
    r = wait_rollout(
        env,
        "m@3",
        lambda r: r["soak_started"] is not None and r["stage"] == 1,
        "stage 1 soaking",
    )
    first, ppm = stage_members(r), r["stage_ppms"][0]
    assert len(first) == 3
    for device in first:
        env.watch.wait_active(device, "m", 3)
    assert env.coordinator is not None
    env.coordinator.stop()
    during = report(env, "m@3")
    assert during["state"] == "running" and during["stage"] == 1
    env.start_coordinator()
    r = wait_rollout(env, "m@3", lambda r: r["state"] == "completed", "completed")
    assert r["stage_ppms"][0] == ppm and stage_members(r) == first
    for device in DEVICES:
        env.watch.wait_active(device, "m", 3)
    assert env.registry.deployment_entries(env.fleet)["m"].version == 3


class Traffic:
    """Inference requests to every edge's local endpoint, bounded in count and time."""

    def __init__(
        self, ports: list[int], *, batch: int = 1, limit: int = 20_000, seconds: float = 180.0
    ) -> None:
        self.ports, self.batch, self.limit, self.seconds = ports, batch, limit, seconds
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = json.dumps({"inputs": {"x": [[0.1] * 16] * self.batch}}).encode()
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and self.sent < self.limit and time.monotonic() < deadline:
            for port in self.ports:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/models/m/infer",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(request, timeout=10).read()
                self.sent += 1
            self.stop.wait(0.02)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def test_the_p95_gate_trips_on_a_slow_model_and_its_stage_rolls_back(fleet_env: Env) -> None:
    env = fleet_env
    release(env, make_slow_model(env.tmp / "m4.onnx"), 4)
    ports = [profiled(env)[d]["profile"]["http_port"] for d in DEVICES]
    with Traffic(ports):
        assert (
            cli(
                env,
                *("rollout", "start", "m@4", "--stages", "34,100", "--soak", "2"),
                *("--max-p95-ms", "5"),
            )
            == 0
        )
        r = wait_rollout(env, "m@4", lambda r: r["state"] == "halted", "halted")
    assert "p95 latency" in r["reason"], r["reason"]
    assert r["last_gates"]["new"]["latency_p95_ms"] > 5
    first = stage_members(r)
    assert len(first) == 3
    for device in first:
        env.watch.wait_event(device, lambda e: e.event == "rolled-back" and e.version == 3)
    for device in DEVICES:
        env.watch.wait_active(device, "m", 3)
        assert serving(env, device) == {"m": 3}, device
    for device in set(DEVICES) - first:
        assert not downloaded(env, device, 4), f"{device} outside stage 1 downloaded m@4"
    wait_for(
        lambda: all(report(env, "m@4")["devices"][d]["state"] == "rolled-back" for d in first),
        "stage 1 reported rolled back",
    )
    assert report(env, "m@4")["counts"]["waiting"] == len(DEVICES) - len(first)


def test_modelcast_rollback_sends_the_selected_devices_back_where_they_kept_it(
    fleet_env: Env,
) -> None:
    env = fleet_env
    slow_stage = stage_members(report(env, "m@4"))  # went 3 -> 4 -> 3: they kept m@4, not m@1
    assert cli(env, "rollback", "m@1", "--to", "class=camera") == 0
    cameras = {d for d in DEVICES if TAGS[d] == "class=camera"}
    for device in DEVICES:
        if device not in cameras:
            continue
        if device in slow_stage:
            env.watch.wait_event(device, lambda e: e.event == "rollback-failed" and e.version == 1)
        else:
            env.watch.wait_event(device, lambda e: e.event == "rolled-back" and e.version == 1)
            env.watch.wait_active(device, "m", 1)
    for device in DEVICES:
        want = 1 if device in cameras - slow_stage else 3
        wait_for(lambda d=device, w=want: serving(env, d) == {"m": w}, f"{device} on m@{want}")


def test_variants_reach_the_right_devices_and_each_downloads_only_its_own(
    fleet_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env = fleet_env
    builds = {
        "fp32": make_model(env.tmp / "m5-fp32.onnx", 20_000, seed=5, inputs=16),
        "int8": make_model(env.tmp / "m5-int8.onnx", 8_000, seed=6, inputs=16),
    }
    for variant, path in builds.items():
        assert cli(env, "release", str(path), "--name", "m", "--version", "5", "--variant",
                   variant, "--keys", str(env.keys.dir)) == 0  # fmt: skip
    rules = ("--rule", "int8:class=camera", "--default", "fp32")
    assert cli(env, "variants", "set", "m", *rules) == 0
    assert cli(env, "deploy", "m@5") == 0
    for device in DEVICES:
        variant = "int8" if TAGS[device] == "class=camera" else "fp32"
        env.watch.wait_event(
            device, lambda e, v=variant: e.event == "activated" and e.detail == f"variant {v}"
        )
        active = json.loads((env.tmp / device / "active.json").read_text())["m"]
        assert active["version"] == 5
        assert active["sha256"] == sha256_file(builds[variant]).hex(), (
            f"{device} runs the wrong build"
        )
        other = "fp32" if variant == "int8" else "int8"
        assert f"m@5 ({other})" not in env.edges[DEVICES.index(device)].log(), device
        wait_for(
            lambda d=device, v=variant: profiled(env)[d]["profile"].get("variants") == {"m": v},
            f"{device} reports its variant",
        )
    capsys.readouterr()
    assert cli(env, "status") == 0
    table = capsys.readouterr().out
    assert "e3" in table and "m@5 (int8)" in table and "m@5 (fp32)" in table


def pushed(env: Env, device: str) -> dict[str, Any] | None:
    config = profiled(env)[device]["profile"].get("config") or {}
    value: dict[str, Any] | None = config.get("pushed")
    return value


def test_a_pushed_config_reaches_the_selected_devices_and_is_reported(
    fleet_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env = fleet_env
    assert cli(env, "config", "set", "telemetry_interval=3", "--to", "class=camera") == 0
    cameras = [d for d in DEVICES if TAGS[d] == "class=camera"]
    for device in cameras:
        env.watch.wait_event(device, lambda e: e.event == "config-applied")
        wait_for(lambda d=device: pushed(env, d) == {"telemetry_interval": 3.0}, "reported")
        saved = json.loads((env.tmp / device / "config.json").read_text())
        assert saved == {"telemetry_interval": 3.0}
    for device in set(DEVICES) - set(cameras):
        assert pushed(env, device) == {}, device
    capsys.readouterr()
    assert cli(env, "status", "--json") == 0
    shown = {d["device_id"]: d for d in json.loads(capsys.readouterr().out)["devices"]}
    assert shown["e3"]["config"]["telemetry_interval"] == 3.0
    assert shown["e0"]["config"]["telemetry_interval"] == 1.0  # its --telemetry-interval
    assert cli(env, "status") == 0
    assert "tele=3s" in capsys.readouterr().out


def window_not_now() -> str:
    minute = int(time.time() // 60) % 1440
    start, end = (minute + 120) % 1440, (minute + 180) % 1440
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def test_a_pin_holds_a_version_and_a_maintenance_window_defers_activation(
    fleet_env: Env,
) -> None:
    env = fleet_env
    assert cli(env, "config", "set", "pin=m@5", "--to", "e0") == 0
    assert cli(env, "config", "set", f"maintenance_window={window_not_now()}", "--to", "e1") == 0
    for device in ("e0", "e1"):
        env.watch.wait_event(device, lambda e: e.event == "config-applied")
    release(env, make_model(env.tmp / "m6.onnx", 20_000, seed=7, inputs=16), 6)
    assert cli(env, "deploy", "m@6") == 0
    for device in DEVICES[2:]:
        env.watch.wait_active(device, "m", 6)
    env.watch.wait_event("e0", lambda e: e.event == "held-by-pin" and e.version == 6)
    env.watch.wait_event("e1", lambda e: e.event == "activation-deferred" and e.version == 6)
    assert serving(env, "e0") == {"m": 5} and serving(env, "e1") == {"m": 5}
    assert not downloaded(env, "e0", 6)
    assert cli(env, "config", "set", "maintenance_window=", "--to", "e1") == 0
    env.watch.wait_active("e1", "m", 6)
    assert cli(env, "config", "set", "pin=", "--to", "e0") == 0
    env.watch.wait_active("e0", "m", 6)


def test_acceptance_vectors_that_do_not_match_are_refused_on_every_device(
    fleet_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env = fleet_env
    keys = ("--keys", str(env.keys.dir))
    good = make_model(env.tmp / "m7.onnx", 20_000, seed=8, inputs=16)
    other = make_model(env.tmp / "other.onnx", 20_000, seed=9, inputs=16)
    assert main(["acceptance", "make", str(other), "--out", str(env.tmp / "wrong.npz")]) == 0
    assert main(["acceptance", "make", str(good), "--out", str(env.tmp / "right.npz")]) == 0
    wrong = ("--acceptance", str(env.tmp / "wrong.npz"), "--tolerance", "1e-4")
    capsys.readouterr()
    assert cli(env, "release", str(good), "--name", "m", "--version", "7", *wrong, *keys) == 1
    said = capsys.readouterr().err  # the coordinator ran them before signing: nothing released
    assert said.startswith("modelcast release: error: cannot release m@7 (") and "case 0" in said
    assert "max error" in said and "exceeds tolerance 0.0001" in said
    # vectors that miss only on the devices' runtime get past that check
    vectors = load_vectors([env.tmp / "wrong.npz"], 1e-4)
    env.registry.add_release(
        good,
        name="m",
        version=7,
        keys=env.keys.release,
        fleet=env.fleet,
        acceptance=vectors,
        check=devices_check_only,
    )
    assert cli(env, "deploy", "m@7") == 0
    for device in DEVICES:
        failed = env.watch.wait_event(
            device, lambda e: e.event == "activation-failed" and e.version == 7
        )
        assert failed.reason == "acceptance-failed" and "max error" in (failed.detail or "")
        assert serving(env, device) == {"m": 6}, device
    right = ("--acceptance", str(env.tmp / "right.npz"), "--tolerance", "1e-4")
    assert cli(env, "release", str(good), "--name", "m", "--version", "8", *right, *keys) == 0
    assert cli(env, "deploy", "m@8") == 0
    for device in DEVICES:
        activated = env.watch.wait_event(
            device, lambda e: e.event == "activated" and e.version == 8
        )
        assert "acceptance max error" in (activated.detail or ""), activated.detail
        env.watch.wait_active(device, "m", 8)


def test_a_rollout_to_a_tag_selector_reaches_devices_that_join_later(fleet_env: Env) -> None:
    env = fleet_env
    release(env, make_model(env.tmp / "m9.onnx", 20_000, seed=10, inputs=16), 9)
    start = ("rollout", "start", "m@9", "--to", "class=gateway", "--stages", "100")
    assert cli(env, *start, "--soak", "0") == 0
    r = wait_rollout(env, "m@9", lambda r: r["state"] == "completed", "completed")
    gateways = {d for d in DEVICES if TAGS[d] == "class=gateway"}
    assert {d for d, s in r["devices"].items() if s["state"] == "not-selected"} == (
        set(DEVICES) - gateways
    )
    for device in gateways:
        env.watch.wait_active(device, "m", 9)
    for device in set(DEVICES) - gateways:
        assert serving(env, device) == {"m": 8} and not downloaded(env, device, 9), device
    env.edge("late-gw", extra=("--tag", "class=gateway"))
    env.edge("late-cam", extra=("--tag", "class=camera"))
    env.watch.wait_active("late-gw", "m", 9)
    env.watch.wait_active("late-cam", "m", 8)
    assert not downloaded(env, "late-cam", 9)


def test_the_error_rate_gate_trips_on_a_release_that_fails_at_serving_time(fleet_env: Env) -> None:
    env = fleet_env
    devices = [*DEVICES, "late-gw", "late-cam"]
    assert cli(env, "deploy", "m@9") == 0  # one base for everyone
    for device in devices:
        env.watch.wait_active(device, "m", 9)
    # batch 1 only: passes the activation check, fails the batch-2 requests below
    release(env, make_model(env.tmp / "m10.onnx", 20_000, seed=11, inputs=16, batch=1), 10)
    ports = [profiled(env)[d]["profile"]["http_port"] for d in devices]
    with Traffic(ports, batch=2):
        start = ("rollout", "start", "m@10", "--stages", "34,100", "--soak", "2")
        assert cli(env, *start, "--max-error-rate", "0.05") == 0
        r = wait_rollout(env, "m@10", lambda r: r["state"] == "halted", "halted")
    assert "error rate" in r["reason"], r["reason"]
    assert r["last_gates"]["new"]["error_rate"] > 0.05
    assert not r["last_gates"]["base"]["error_rate"]
    first = stage_members(r)
    assert len(first) == 3  # ceil(34% of 8)
    for device in first:
        env.watch.wait_event(device, lambda e: e.event == "rolled-back" and e.version == 9)
    for device in devices:
        assert serving(env, device) == {"m": 9}, device


def test_a_rate_limited_rollout_admits_devices_a_few_at_a_time(fleet_env: Env) -> None:
    """``--rate 60`` (devices per minute): the stage's devices are admitted one after another,
    and one not admitted yet has not downloaded the release, so a large fleet does not fetch it
    all at once; the rollout still completes."""
    env = fleet_env
    devices = [*DEVICES, "late-gw", "late-cam"]
    release(env, make_model(env.tmp / "m11.onnx", 20_000, seed=12, inputs=16), 11)
    start = ("rollout", "start", "m@11", "--stages", "100", "--soak", "0", "--rate", "60")
    assert cli(env, *start) == 0
    admitted_counts: list[int] = []
    held_back_without_download = False

    def step() -> bool:
        nonlocal held_back_without_download
        r = report(env, "m@11")
        admitted = {d for d, s in r["devices"].items() if s["stage"] is not None}
        admitted_counts.append(len(admitted))
        waiting = set(devices) - admitted
        if admitted and waiting and not any(downloaded(env, d, 11) for d in waiting):
            held_back_without_download = True
        return bool(r["state"] == "completed")

    wait_for(step, "rollout m@11 completed")
    steps = sorted(set(admitted_counts))
    assert len([n for n in steps if 0 < n < len(devices)]) >= 3, admitted_counts
    assert held_back_without_download, admitted_counts
    for device in devices:
        env.watch.wait_active(device, "m", 11)


@pytest.mark.portable
def test_a_staged_rollout_halts_on_each_broker(env: Env) -> None:
    """The halt above, on three edges of their own, on each broker kind."""
    env.start_coordinator()
    base = make_model(env.tmp / "m1.onnx", 20_000, seed=1, inputs=16)
    release_and_deploy(env.registry, env.keys, base, "m", 1, env.fleet)
    devices = ["p0", "p1", "p2"]
    for device in devices:
        env.edge(device)
    for device in devices:
        env.watch.wait_active(device, "m", 1)
    wait_for(lambda: len(profiled(env)) == len(devices), "every device's profile recorded")
    release(env, make_failing_model(env.tmp / "m2.onnx"), 2, check=devices_check_only)
    assert cli(env, "rollout", "start", "m@2", "--stages", "34,100", "--soak", "1") == 0
    r = wait_rollout(env, "m@2", lambda r: r["state"] == "halted", "halted")
    first = stage_members(r)
    assert 1 <= len(first) < len(devices), r
    assert "activation failed" in r["reason"] and "stage 1" in r["reason"]
    for device in devices:
        env.watch.wait_active(device, "m", 1)
    for device in set(devices) - first:
        assert not downloaded(env, device, 2), f"{device} outside stage 1 downloaded m@2"
