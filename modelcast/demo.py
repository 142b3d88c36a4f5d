"""``modelcast demo``: a broker, a coordinator and several edges in one terminal.

The story: three edges receive a signed model; a second release follows, and a device that
joins late goes straight to it. With the ``models`` extra the model is the real
all-MiniLM-L6-v2 (release 1 fp32, release 2 int8) and after each roll-out every edge answers a
similarity query on its local endpoint; without it, a synthetic 12 MB model (demo_models.py).
Every process is real (Mosquitto, ``modelcast coordinator``, ``modelcast edge``); their logs
are in the work directory.

With ``--flaky`` each edge reaches the broker through its own ``FaultProxy``: a slow link that is
cut every few seconds. The bars stall and pick up where they stopped; each line says how often
its link was cut.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol import DeviceState, DeviceStatus, ProtocolError, Topics, UpdateState, VariantRule
from runtime.mqtt import MqttSession
from testkit.faultproxy import FaultProxy
from testkit.local_broker import LocalBroker

from .demo_models import (
    DemoModels,
    DemoRelease,
    ask_similarity,
    prepare_models,
    similarity_question,
)
from .progress import ProgressBoard

if TYPE_CHECKING:
    from coordinator.registry import Registry

FLEET = "demo"
#: ``--flaky``: every edge's own link is cut every 1-4 s, carries 256 KB/s, and adds 50 ms.
FLAKY_CUT_AFTER_S = (1.0, 4.0)
FLAKY_RATE_BYTES_PER_S = 256 * 1024
FLAKY_LATENCY_S = 0.05
#: ...and the edges retry quickly, so a cut costs a moment, not the default backoff.
FLAKY_EDGE_ARGS = ("--reconnect-min", "0.2", "--reconnect-max", "2")


class _Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, label: str, *args: str) -> None:
        log = (self.workdir / f"{label}.log").open("ab")
        self.procs[label] = subprocess.Popen(
            [sys.executable, "-m", "modelcast.cli", *args],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )

    def check_alive(self) -> str | None:
        for label, proc in self.procs.items():
            if proc.poll() is not None:
                return f"{label} exited with {proc.returncode}; see {self.workdir / label}.log"
        return None

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


class _Links:
    """With ``--flaky``, one fault proxy per edge (so each has its own bad link); else none."""

    def __init__(self, broker: LocalBroker, flaky: bool) -> None:
        self.broker = broker
        self.flaky = flaky
        self.proxies: dict[str, FaultProxy] = {}

    def edge_args(self, device: str) -> list[str]:
        """The edge's ``--broker`` (its own proxy when flaky) and ``--fleet``."""
        if not self.flaky:
            return ["--broker", self.broker.url, "--fleet", FLEET]
        proxy = FaultProxy(
            self.broker.host,
            self.broker.port,
            seed=len(self.proxies) + 1,
            rate_bytes_per_s=FLAKY_RATE_BYTES_PER_S,
            latency_s=FLAKY_LATENCY_S,
            cut_after=FLAKY_CUT_AFTER_S,
        ).start()
        self.proxies[device] = proxy
        return ["--broker", proxy.url, "--fleet", FLEET, *FLAKY_EDGE_ARGS]

    def annotate(self, board: ProgressBoard) -> None:
        for device, proxy in self.proxies.items():
            board.annotate(device, f"link cut {proxy.cuts}x")

    def summary(self) -> list[str]:
        return [
            f"{device}: its link was cut {p.cuts} times and carried "
            f"{(p.bytes_to_client + p.bytes_to_server) / (1 << 20):.1f} MB"
            for device, p in sorted(self.proxies.items())
        ]

    def stop(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()


def _wait(
    cond: threading.Condition,
    pred: Callable[[], bool],
    deadline: float,
    procs: _Processes,
    tick: Callable[[], None] = lambda: None,
) -> None:
    with cond:
        while not pred():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the demo did not finish in time")
            cond.wait(min(remaining, 1.0))
            tick()
            problem = procs.check_alive()
            if problem:
                raise RuntimeError(problem)


def _release(registry: Registry, keys: Path, models: DemoModels, name: str, version: int) -> str:
    """Release ``name@version``: a text model as two variants (fp32 and int8), the synthetic
    model as one build (the first file, then the second). Says what it released."""
    builds: list[tuple[DemoRelease, str | None]]
    if models.text:
        builds = [(models.first, "fp32"), (models.second, "int8")]
    else:
        builds = [(models.first if version == 1 else models.second, None)]
    from coordinator.keystore import load_release_keys

    said = []
    for build, variant in builds:
        rec = registry.add_release(
            build.path,
            name=name,
            version=version,
            keys=load_release_keys(keys),
            fleet=FLEET,
            variant=variant,
        )
        said.append(f"{build.label}: {rec.model_kind} model, {rec.size} bytes")
    return "; ".join(said)


def _edge_class(index: int) -> str:
    """The demo's device classes: the first edge is big, the others small."""
    return "big" if index == 0 else "small"


def _ask_edges(
    board: ProgressBoard,
    models: DemoModels,
    ports: dict[str, int],
    variants: dict[str, str],
    devices: list[str],
) -> None:
    """Every edge answers the similarity query on its own local endpoint."""
    query, candidates = similarity_question()
    board.note(f"  which of {len(candidates)} sentences is closest to {query!r}?")
    for device in devices:
        if device not in ports:
            raise RuntimeError(f"{device} did not report its local endpoint")
        try:
            a = ask_similarity(ports[device], models.name)
        except OSError as exc:
            raise RuntimeError(f"{device} did not answer the similarity query: {exc}") from None
        others = ", ".join(f"{s:.2f}" for s in a.other_scores)
        variant = f" {variants[device]}" if variants.get(device) else ""
        board.note(
            f"  {device} ({models.name}@{a.version}{variant}, {a.latency_ms:.0f} ms on the "
            "device): "
            f"{a.best!r} {a.best_score:.2f} (others {others})"
        )


def run_demo(
    *,
    edges: int,
    size_mb: float,
    workdir: Path | None,
    timeout: float,
    flaky: bool = False,
    model: str = "auto",
) -> int:
    from coordinator.keystore import init_keys
    from coordinator.registry import Registry
    from coordinator.status import fleet_status, format_status

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="modelcast-demo-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    board = ProgressBoard()
    keys, db = workdir / "keys", workdir / "coord.db"
    deadline = time.monotonic() + timeout
    topics = Topics(FLEET)
    cond = threading.Condition()
    procs = _Processes(workdir)

    ports: dict[str, int] = {}  # each edge's local endpoint, from its retained status
    variants: dict[str, str] = {}  # the variant each edge runs, from the same status
    name = "demo-model"

    def on_message(topic: str, payload: bytes, retain: bool) -> None:
        try:
            if topics.device_of(topic) is not None and topic.endswith("/status"):
                status = DeviceStatus.decode(payload)
                if "http_port" in status.profile:
                    ports[status.device] = int(status.profile["http_port"])
                runs = status.profile.get("variants")
                if isinstance(runs, dict):
                    variants[status.device] = str(runs.get(models.name, ""))
            else:
                board.update(DeviceState.decode(payload))
        except (ProtocolError, TypeError, ValueError):
            return
        with cond:
            cond.notify_all()

    def all_active(devices: list[str], version: int) -> bool:
        states = board.states()
        return all(
            d in states
            and states[d].state is UpdateState.ACTIVE
            and states[d].active.get(name) == version
            and d in ports
            for d in devices
        )

    with LocalBroker(workdir=workdir / "broker") as broker:
        board.note(f"modelcast demo: Mosquitto on {broker.url}, work directory {workdir}")
        links = _Links(broker, flaky)
        if flaky:
            low, high = FLAKY_CUT_AFTER_S
            board.note(
                f"flaky links: each edge's connection is cut every {low:g}-{high:g} s, carries "
                f"{FLAKY_RATE_BYTES_PER_S // 1024} KB/s and adds {FLAKY_LATENCY_S * 1000:.0f} ms"
            )
        if not (keys / "root.key").exists():
            init_keys(keys)
        registry = Registry(db)
        if flaky and model == "auto":  # 90 MB through 256 KB/s links would take minutes
            model = "synthetic"
        models = prepare_models(model, workdir, int(size_mb * (1 << 20)), board.note)
        name = models.name
        if models.text:
            # Per-device variants: the big edge runs fp32, the small ones int8 (edges carry
            # --tag class=..., see _edge_class); each downloads only its own variant.
            small = VariantRule("int8", {"class": "small"})
            registry.set_variant_rules(FLEET, name, [small], "fp32")
        first = _release(registry, keys, models, name, 1)
        registry.deploy(name, 1, fleet=FLEET)
        board.note(
            f"released and deployed {name}@1 ({first}); "
            + ("fp32 to big edges, int8 to small ones" if models.text else "to every edge")
        )
        watcher = MqttSession(
            broker.url,
            f"modelcast-demo-watch-{int(time.time())}",
            on_message=on_message,
            clean_session=True,
            on_connect=lambda _s: watcher.subscribe([topics.all_state(), topics.all_status()]),
        )
        watcher.start()
        try:
            common = ["--broker", broker.url, "--fleet", FLEET]
            procs.start("coordinator", "coordinator", *common, "--db", str(db), "--keys", str(keys))
            devices = [f"edge-{i + 1}" for i in range(edges)]

            def tick() -> None:
                links.annotate(board)

            for i, d in enumerate(devices):
                procs.start(
                    d,
                    "edge",
                    *links.edge_args(d),
                    "--tag",
                    f"class={_edge_class(i)}",
                    "--id",
                    d,
                    "--data",
                    str(workdir / d),
                    "--trust",
                    str(keys / "root.pub"),
                    "--http",
                    "127.0.0.1:0",
                )
            _wait(cond, lambda: all_active(devices, 1), deadline, procs, tick)
            if models.text:
                board.note(f"all edges run {name}@1; each answers a similarity query locally")
                _ask_edges(board, models, ports, variants, devices)
            board.note(f"all edges run {name}@1; releasing {name}@2 and starting a late joiner")
            board.note(f"released {name}@2 ({_release(registry, keys, models, name, 2)})")
            registry.deploy(name, 2, fleet=FLEET)
            late = "edge-late"
            procs.start(
                late,
                "edge",
                *links.edge_args(late),
                "--tag",
                f"class={_edge_class(len(devices))}",
                "--id",
                late,
                "--data",
                str(workdir / late),
                "--trust",
                str(keys / "root.pub"),
                "--http",
                "127.0.0.1:0",
            )
            _wait(cond, lambda: all_active([*devices, late], 2), deadline, procs, tick)
            # The coordinator records device reports in batches: the table below is read from
            # its database, so wait until that has caught up with what the edges said.
            status: dict[str, Any] = {}

            def recorded() -> bool:
                status.update(fleet_status(db, FLEET))
                rows = {r["device_id"]: r for r in status["devices"]}
                return all(
                    rows.get(d, {}).get("state") == "active"
                    and rows[d].get("active", {}).get(name) == 2
                    for d in [*devices, late]
                )

            _wait(cond, recorded, deadline, procs, tick)
            board.note(f"every edge, the late joiner included, runs {name}@2:")
            board.note(format_status(status))
            if models.text:
                board.note(f"each edge answers the similarity query with {name}@2")
                _ask_edges(board, models, ports, variants, [*devices, late])
            for line in links.summary():
                board.note(line)
            return 0
        except (TimeoutError, RuntimeError) as exc:
            board.note(f"demo failed: {exc}")
            return 1
        finally:
            procs.stop_all()
            links.stop()
            watcher.stop()
            if tmp is not None:
                tmp.cleanup()
