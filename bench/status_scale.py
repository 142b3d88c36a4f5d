"""``modelcast status`` at fleet scale: a coordinator database with N devices and a telemetry
history, and the time the command takes on it (issue 14; the numbers are in docs/BENCHMARKS.md).

    python -m bench.status_scale fill DB --devices 10000 --samples 60
    python -m bench.status_scale time DB [--runs 5] [-- STATUS-FLAGS...]

``fill`` writes through the coordinator's own stores (``DeviceStore.record_devices``,
``TelemetryStore``), as a running coordinator would: every device's status (a profile with tags,
RAM, arch) and state (mostly active, some downloading, failed or idle), one model deployed, and
``--samples`` metrics samples a device one minute apart up to now, each with a per-model
statistics row. ``time`` runs ``python -m modelcast.cli status`` on it (table, then ``--json``),
each ``--runs`` times in a fresh process, and prints the median and best wall times and the
median CPU time. Run it
with another checkout's interpreter (and ``cwd``) to compare before and after on one database.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coordinator.device_rows import DeviceUpdate
from coordinator.keystore import init_keys, load_release_keys
from coordinator.registry import Registry
from coordinator.telemetry_store import TelemetryStore
from protocol import DeviceState, DeviceStatus, MetricsSample, ModelStats, UpdateState
from protocol.textmodel import KIND_FILE

FLEET = "scale"
#: how the states of the filled fleet are spread: (state, share)
STATES = ((UpdateState.ACTIVE, 0.90), (UpdateState.DOWNLOADING, 0.05), (UpdateState.FAILED, 0.03))


def fill(db: Path, devices: int, samples: int, *, seed: int = 1) -> None:
    rng = random.Random(seed)
    registry = Registry(db)
    try:
        _release(registry, db.parent)
        now = time.time()
        updates = [u for i in range(devices) for u in _device(f"dev-{i:05d}", i, rng, now)]
        for start in range(0, len(updates), 2000):
            registry.record_devices(FLEET, updates[start : start + 2000])
    finally:
        registry.close()
    store = TelemetryStore(db, max_buffer_rows=10_000_000)
    try:
        for i in range(devices):
            for seq in range(samples):
                ts = now - (samples - seq) * 60.0
                store.add_metrics(FLEET, _sample(f"dev-{i:05d}", seq, ts, rng), ts)
            if store.pending >= 50_000:
                store.flush()
        store.flush()
    finally:
        store.close()


def _release(registry: Registry, where: Path) -> None:
    keydir = Path(tempfile.mkdtemp(prefix="keys-", dir=where))
    init_keys(keydir)
    keys = load_release_keys(keydir)
    for version in (1, 2):
        blob = where / f"m{version}.bin"
        blob.write_bytes(bytes([version]) * 8192)
        registry.add_release(
            blob, name="m", version=version, keys=keys, fleet=FLEET, model_kind=KIND_FILE
        )
    registry.deploy("m", 2, fleet=FLEET)


def _device(device: str, i: int, rng: random.Random, now: float) -> list[DeviceUpdate]:
    pick = rng.random()
    state, version = UpdateState.IDLE, None
    for candidate, share in STATES:
        if pick < share:
            state, version = candidate, 2
            break
        pick -= share
    active = {"m": 2 if state is UpdateState.ACTIVE else 1}
    profile = {
        "arch": "aarch64" if i % 3 else "x86_64",
        "ram_mb": 2048 if i % 2 else 8192,
        "tags": {"site": f"s{i % 40}", "class": "camera" if i % 4 else "gateway"},
    }
    online = rng.random() < 0.95
    status = DeviceStatus(
        device, online, now - 5, boot="b", agent="0.x", active=active, profile=profile
    )
    held = rng.randrange(1, 48) if state is UpdateState.DOWNLOADING else 48
    reason = "hash-mismatch" if state is UpdateState.FAILED else None
    report = DeviceState(
        device, state, now - 5, "b", "m", version, held, 48, reason=reason, active=active
    )
    seen = now - rng.random() * 60
    return [DeviceUpdate(status, seen), DeviceUpdate(report, seen)]


def _sample(device: str, seq: int, ts: float, rng: random.Random) -> MetricsSample:
    inferences = rng.randrange(0, 200)
    errors = 1 if inferences and rng.random() < 0.01 else 0
    p95 = 5 + rng.random() * 20
    return MetricsSample(
        device,
        "b",
        seq,
        ts,
        interval_s=60.0,
        uptime_s=seq * 60.0,
        cpu_pct=rng.random() * 40,
        rss_mb=80 + rng.random() * 20,
        disk_free_mb=10_000.0,
        inferences=inferences,
        errors=errors,
        latency_p50_ms=p95 / 2,
        latency_p95_ms=p95,
        active={"m": 2},
        models=(ModelStats("m", 2, inferences, errors, p95 / 2, p95),),
    )


def time_status(db: Path, runs: int, flags: list[str]) -> dict[str, float]:
    """Median and best wall seconds of ``modelcast status`` (a fresh process each run), and the
    median CPU seconds (user + system) of the process: on a shared machine the wall time
    includes waiting for a core, the CPU time does not."""
    cmd = [sys.executable, "-m", "modelcast.cli", "status", "--db", str(db), "--fleet", FLEET]
    times, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        subprocess.run([*cmd, *flags], check=True, stdout=subprocess.DEVNULL)
        times.append(time.monotonic() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {
        "median_s": round(statistics.median(times), 3),
        "best_s": round(min(times), 3),
        "cpu_median_s": round(statistics.median(cpu), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.status_scale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fill", help="make a database of N devices and their telemetry")
    f.add_argument("db", type=Path)
    f.add_argument("--devices", type=int, default=10_000)
    f.add_argument("--samples", type=int, default=60, help="metrics samples per device")
    t = sub.add_parser("time", help="time modelcast status on a database")
    t.add_argument("db", type=Path)
    t.add_argument("--runs", type=int, default=5)
    # more status flags after "--" (argparse's nargs cannot take them behind a subcommand)
    args, flags = parser.parse_known_args(argv)
    if args.command == "time" and flags[:1] == ["--"]:
        flags = flags[1:]
    elif flags:
        parser.error(f"unrecognized arguments: {' '.join(flags)} (status flags go after --)")
    if args.command == "fill":
        started = time.monotonic()
        fill(args.db, args.devices, args.samples)
        print(f"filled {args.db} in {time.monotonic() - started:.1f} s")
        return 0
    for extra in ([], ["--json"]):
        result = time_status(args.db, args.runs, [*extra, *flags])
        print(f"status {' '.join([*extra, *flags])}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
