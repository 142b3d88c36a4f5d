"""``modelcast demo``: a broker, a coordinator and several edges in one terminal.

The story: three edges receive a signed model; a second release follows, and a device that
joins late goes straight to it. With the ``models`` extra the model is the real
all-MiniLM-L6-v2 (release 1 fp32, release 2 int8) and after each roll-out every edge answers a
similarity query on its local endpoint; without it, a synthetic 12 MB model (demo_models.py).
Every process is real (Mosquitto, ``modelcast coordinator``, ``modelcast edge``); their logs
are in the work directory.

With ``--flaky`` each edge reaches the broker through its own ``FaultProxy``: a slow link that is
cut every few seconds. The bars stall and pick up where they stopped; each line says how often
its link was cut. The processes, links and the watch on the fleet are in ``demo_fleet.py``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol import DEFAULT_CHUNK_SIZE, VariantRule
from runtime.display import printable
from testkit.local_broker import LocalBroker

from .demo_dashboard import demo_dashboard
from .demo_fleet import DemoProcesses, DemoWatch, EdgeLinks
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


@dataclass(frozen=True)
class _Demo:
    """What the demo's story runs on, once the broker is up and release 1 is deployed."""

    workdir: Path
    broker_url: str
    board: ProgressBoard
    registry: Registry
    keys: Path
    db: Path
    models: DemoModels
    links: EdgeLinks
    procs: DemoProcesses
    watch: DemoWatch
    deadline: float

    def wait(self, pred: Callable[[], bool]) -> None:
        """Until ``pred``; the bars show how each link is doing, and a child that exited fails
        the demo (RuntimeError), as does the deadline (TimeoutError)."""

        def every_wake() -> None:
            self.links.annotate(self.board)
            problem = self.procs.check_alive()
            if problem:
                raise RuntimeError(problem)

        self.watch.wait_until(pred, self.deadline, every_wake)

    def start_edge(self, device: str, index: int) -> None:
        self.procs.start(
            device,
            "edge",
            *self.links.edge_args(device),
            "--tag",
            f"class={_edge_class(index)}",
            "--id",
            device,
            "--data",
            str(self.workdir / device),
            "--trust",
            str(self.keys / "root.pub"),
            "--http",
            "127.0.0.1:0",
        )


def _release(
    registry: Registry,
    keys: Path,
    models: DemoModels,
    name: str,
    version: int,
    chunk_size: int | None = None,
) -> str:
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
            chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
        )
        said.append(f"{build.label}: {rec.model_kind} model, {rec.size} bytes")
    return "; ".join(said)


def _edge_class(index: int) -> str:
    """The demo's device classes: the first edge is big, the others small."""
    return "big" if index == 0 else "small"


def _ask_edges(demo: _Demo, devices: list[str]) -> None:
    """Every edge answers the similarity query on its own local endpoint."""
    board, models, watch = demo.board, demo.models, demo.watch
    query, candidates = similarity_question()
    board.note(f"  which of {len(candidates)} sentences is closest to {query!r}?")
    for device in devices:
        if device not in watch.ports:
            raise RuntimeError(f"{device} did not report its local endpoint")
        try:
            a = ask_similarity(watch.ports[device], models.name)
        except OSError as exc:
            raise RuntimeError(f"{device} did not answer the similarity query: {exc}") from None
        others = ", ".join(f"{s:.2f}" for s in a.other_scores)
        variant = f" {watch.variants[device]}" if watch.variants.get(device) else ""
        said = f"{device} ({models.name}@{a.version}{variant}, {a.latency_ms:.0f} ms on the device)"
        board.note(f"  {printable(said)}: {a.best!r} {a.best_score:.2f} (others {others})")


@contextmanager
def _work_directory(workdir: Path | None) -> Iterator[Path]:
    """``workdir`` (created), or a temporary directory removed afterwards."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix="modelcast-demo-") as tmp:
        yield Path(tmp)


def run_demo(
    *,
    edges: int,
    size_mb: float,
    workdir: Path | None,
    timeout: float,
    flaky: bool = False,
    model: str = "auto",
    dashboard_port: int | None = None,
) -> int:
    """The story; with ``dashboard_port`` (0: any free port), the dashboard too (demo_dashboard)."""
    with _work_directory(workdir) as work:
        board = ProgressBoard()
        deadline = time.monotonic() + timeout
        with LocalBroker(workdir=work / "broker") as broker:
            board.note(f"modelcast demo: Mosquitto on {broker.url}, work directory {work}")
            links = EdgeLinks(broker, FLEET, flaky)
            if flaky:
                board.note(links.describe())
            if flaky and model == "auto":  # 90 MB through 256 KB/s links would take minutes
                model = "synthetic"
            registry, models = _release_first(work, board, model, int(size_mb * (1 << 20)), links)
            watch = DemoWatch(broker.url, FLEET, board, models.name)
            watch.start()
            procs = DemoProcesses(work)
            demo = _Demo(
                workdir=work,
                broker_url=broker.url,
                board=board,
                registry=registry,
                keys=work / "keys",
                db=work / "coord.db",
                models=models,
                links=links,
                procs=procs,
                watch=watch,
                deadline=deadline,
            )
            try:
                with demo_dashboard(dashboard_port, demo.db, broker.url, FLEET, board) as hold:
                    _play(demo, [f"edge-{i + 1}" for i in range(edges)])
                    hold()
                return 0
            except (TimeoutError, RuntimeError) as exc:
                board.note(f"demo failed: {exc}")
                return 1
            finally:
                procs.stop_all()
                links.stop()
                watch.stop()


def _release_first(
    workdir: Path, board: ProgressBoard, model: str, size_bytes: int, links: EdgeLinks
) -> tuple[Registry, DemoModels]:
    """Keys, the coordinator's database and the demo's models; release 1 deployed (in the
    chunk size the links want)."""
    from coordinator.keystore import init_keys
    from coordinator.registry import Registry

    keys, db = workdir / "keys", workdir / "coord.db"
    if not (keys / "root.key").exists():
        init_keys(keys)
    registry = Registry(db)
    models = prepare_models(model, workdir, size_bytes, board.note)
    name = models.name
    if models.text:
        # Per-device variants: the big edge runs fp32, the small ones int8 (edges carry
        # --tag class=..., see _edge_class); each downloads only its own variant.
        small = VariantRule("int8", {"class": "small"})
        registry.set_variant_rules(FLEET, name, [small], "fp32")
    first = _release(registry, keys, models, name, 1, links.chunk_size)
    registry.deploy(name, 1, fleet=FLEET)
    board.note(
        f"released and deployed {name}@1 ({first}); "
        + ("fp32 to big edges, int8 to small ones" if models.text else "to every edge")
    )
    return registry, models


def _play(demo: _Demo, devices: list[str]) -> None:
    """The story: every edge takes release 1; release 2 follows and a late joiner goes straight
    to it; the coordinator's table shows them all on 2."""
    from coordinator.status import format_status

    board, name, text = demo.board, demo.models.name, demo.models.text
    coordinator_args = ["--broker", demo.broker_url, "--fleet", FLEET, "--db", str(demo.db)]
    demo.procs.start("coordinator", "coordinator", *coordinator_args, "--keys", str(demo.keys))
    for i, device in enumerate(devices):
        demo.start_edge(device, i)
    demo.wait(lambda: demo.watch.all_active(devices, 1))
    if text:
        board.note(f"all edges run {name}@1; each answers a similarity query locally")
        _ask_edges(demo, devices)
    board.note(f"all edges run {name}@1; releasing {name}@2 and starting a late joiner")
    second = _release(demo.registry, demo.keys, demo.models, name, 2, demo.links.chunk_size)
    board.note(f"released {name}@2 ({second})")
    demo.registry.deploy(name, 2, fleet=FLEET)
    everyone = [*devices, "edge-late"]
    demo.start_edge("edge-late", len(devices))
    demo.wait(lambda: demo.watch.all_active(everyone, 2))
    status = _wait_recorded(demo, everyone)
    board.note(f"every edge, the late joiner included, runs {name}@2:")
    board.note(format_status(status))
    if text:
        board.note(f"each edge answers the similarity query with {name}@2")
        _ask_edges(demo, everyone)
    for line in demo.links.summary():
        board.note(line)


def _wait_recorded(demo: _Demo, devices: list[str]) -> dict[str, Any]:
    """The coordinator records device reports in batches: the table the demo shows is read
    from its database, so wait until that has caught up with what the edges said."""
    from coordinator.status import fleet_status

    status: dict[str, Any] = {}

    def recorded() -> bool:
        status.update(fleet_status(demo.db, FLEET))
        rows = {r["device_id"]: r for r in status["devices"]}
        return all(
            rows.get(d, {}).get("state") == "active"
            and rows[d].get("active", {}).get(demo.models.name) == 2
            and (rows[d].get("last_update") or {}).get("version") == 2  # what it cost
            for d in devices
        )

    demo.wait(recorded)
    return status
