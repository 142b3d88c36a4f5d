"""``modelcast simulate``: N virtual devices against a broker and a coordinator, spread over
worker processes (``modelcast.simulate``), until Ctrl-C, SIGTERM, ``--duration``, or every
device running ``--until-active``. A progress line on stderr while it runs, a summary on stdout
at the end, ``--json`` for scripts."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CommandError
from .common import EnvFlag, Subcommands, add_flags
from .exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from .parsing import parse_release
from .services import TELEMETRY_INTERVAL, TRUST

if TYPE_CHECKING:
    from ..simulate.report import FleetSnapshot
    from ..simulate.runner import SimulatedFleet
    from ..simulate.spec import DeviceProfile

DESCRIPTION = """\
Each virtual device has its own MQTT session (client id, will, retained status, persistent
session), follows the signed index and manifests (rollouts, variant rules), downloads and
verifies every chunk and the whole file like an edge, reports the same states and sends the
same telemetry. It runs no model: a verified release is marked active. Devices are spread over
--processes worker processes, each driving its share from one event loop. See docs/SCALE.md.
"""


def add_commands(sub: Subcommands) -> None:
    sim = sub.add_parser(
        "simulate",
        help="run N virtual devices (load and scale tests)",
        description=DESCRIPTION,
    )
    add_flags(sim, "broker")
    sim.add_argument("--devices", type=int, required=True, metavar="N", help="how many devices")
    TRUST.add_to(sim)
    add_flags(sim, "fleet")
    sim.add_argument("--prefix", default="sim-", help="device ids are PREFIX0 .. PREFIX(N-1)")
    sim.add_argument(
        "--processes",
        type=int,
        default=_cores(),
        metavar="P",
        help="worker processes (the default is the number of cores)",
    )
    TELEMETRY_INTERVAL.add_to(sim)
    sim.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="KEY=VALUE[,...]",
        help="a kind of device: tags, and ram_mb=N, arch=ARCH, provider=NAME (repeatable) for "
        "variant rules; repeat --profile for several kinds, dealt to the devices in turn",
    )
    sim.add_argument(
        "--disk",
        type=Path,
        metavar="DIR",
        help="write chunks as the edge does, under DIR/DEVICE (none: verify them in memory)",
    )
    sim.add_argument("--json", type=Path, metavar="FILE", help="write the summary here (JSON)")
    _add_verify_flags(sim)
    _add_run_flags(sim)
    sim.set_defaults(func=cmd_simulate)


VERIFY_CACHE_MB = EnvFlag(
    "--verify-cache-mb",
    "MB of verified chunks a worker process keeps to compare with (beyond it: hashed)",
    "MODELCAST_SIM_VERIFY_CACHE_MB",
    type=int,
    fallback="512",  # verified.DEFAULT_CAP_MB (not imported: --help loads no simulator)
    metavar="MB",
)


def _add_verify_flags(sim: argparse.ArgumentParser) -> None:
    """How devices check what they receive: every device checks every chunk and the whole file;
    by default, bytes equal to bytes already verified in the same process are accepted by
    comparison instead of being hashed again (see docs/SCALE.md)."""
    sim.add_argument(
        "--verify-each",
        action="store_true",
        default=os.environ.get("MODELCAST_SIM_VERIFY_EACH", "") not in ("", "0"),
        help="hash every device's chunks and whole file, as real edges do each on its own CPU "
        "(env MODELCAST_SIM_VERIFY_EACH=1). Default: each worker process hashes a release's "
        "bytes once and accepts later devices' chunks when byte-for-byte equal to them (a "
        "memcmp; any other bytes are hashed, a tampered chunk is refused as before)",
    )
    VERIFY_CACHE_MB.add_to(sim)


def _add_run_flags(sim: argparse.ArgumentParser) -> None:
    """How devices connect, and when the simulation ends."""
    sim.add_argument(
        "--connect-rate",
        type=float,
        default=300.0,
        metavar="PER_S",
        help="connects a second, all processes together (jittered waves)",
    )
    sim.add_argument(
        "--duration", type=float, default=0.0, metavar="SECONDS", help="stop after (0: never)"
    )
    sim.add_argument(
        "--until-active",
        metavar="NAME@VERSION",
        help="stop once every device runs it (exit 1 if --duration ends first)",
    )
    sim.add_argument("--quiet", action="store_true", help="no progress line")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_profile(text: str) -> DeviceProfile:
    """``class=small,ram_mb=512,arch=aarch64,provider=CUDAExecutionProvider``."""
    from ..simulate.spec import DeviceProfile

    tags: dict[str, str] = {}
    facts: dict[str, Any] = {}
    providers: list[str] = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise CommandError(f"--profile {text!r}: {item!r} is not KEY=VALUE")
        if key == "ram_mb":
            if not value.isdigit():
                raise CommandError(f"--profile {text!r}: ram_mb must be a number of MB")
            facts["ram_mb"] = int(value)
        elif key == "arch":
            facts["arch"] = value
        elif key == "provider":
            providers.append(value)
        else:
            tags[key] = value
    if providers:
        facts["providers"] = tuple(providers)
    return DeviceProfile(tags=tags, **facts)


def cmd_simulate(args: argparse.Namespace) -> int:
    from ..simulate.config import SimConfig
    from ..simulate.errors import SimulationError
    from ..simulate.runner import SimulatedFleet
    from ..simulate.spec import DeviceProfile

    until = None
    if args.until_active:
        name, version = parse_release(args.until_active)
        until = f"{name}@{version}"
    if args.duration < 0:
        raise CommandError("--duration must be >= 0")
    config = SimConfig(
        broker_url=args.broker,
        devices=args.devices,
        trust_path=args.trust,
        fleet=args.fleet,
        prefix=args.prefix,
        processes=args.processes,
        telemetry_interval=args.telemetry_interval,
        profiles=tuple(parse_profile(p) for p in args.profile) or (DeviceProfile(),),
        disk=args.disk,
        connect_rate=args.connect_rate,
        verify_each=args.verify_each,
        verify_cache_mb=args.verify_cache_mb,
    )
    stop = threading.Event()
    interrupted: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        interrupted.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with SimulatedFleet(config) as fleet:
        try:
            reached = _run(fleet, args, until, stop)
        except SimulationError as exc:  # the summary and --json still say how far it got
            _finish(fleet.stop(), args, until=until, reached=False, error=str(exc))
            raise
        final = fleet.stop()
    _finish(final, args, until=until, reached=reached)
    if interrupted and interrupted[0] == signal.SIGINT:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if until is not None and not reached else EXIT_OK


def _run(
    fleet: SimulatedFleet, args: argparse.Namespace, until: str | None, stop: threading.Event
) -> bool:
    """Run until a stop condition; whether ``until`` was reached."""
    progress = _Progress(quiet=args.quiet)
    ends = time.monotonic() + args.duration if args.duration else None
    while not stop.is_set() and (ends is None or time.monotonic() < ends):
        snap = fleet.poll(1.0)
        progress.show(snap)
        if until is not None and snap.all_active(until):
            progress.done()
            return True
    progress.done()
    return False


class _Progress:
    """One line on stderr: rewritten in place on a terminal, every 5 s otherwise."""

    def __init__(self, *, quiet: bool) -> None:
        self._quiet = quiet
        self._tty = sys.stderr.isatty()
        self._shown_at = 0.0

    def show(self, snap: FleetSnapshot) -> None:
        if self._quiet:
            return
        if self._tty:
            sys.stderr.write("\r\x1b[K" + snap.progress_line())
            sys.stderr.flush()
        elif time.monotonic() - self._shown_at >= 5.0:
            self._shown_at = time.monotonic()
            print(snap.progress_line(), file=sys.stderr, flush=True)

    def done(self) -> None:
        if self._tty and not self._quiet:
            sys.stderr.write("\n")


def _finish(
    snap: FleetSnapshot,
    args: argparse.Namespace,
    *,
    until: str | None,
    reached: bool,
    error: str | None = None,
) -> None:
    """The summary on stdout, and the ``--json`` file."""
    print(snap.summary())
    if args.json is not None:
        _write_json(args.json, snap, until=until, reached=reached, error=error)


def _write_json(
    path: Path, snap: FleetSnapshot, *, until: str | None, reached: bool, error: str | None
) -> None:
    from runtime.files import write_atomic

    doc = snap.to_dict()
    if until is not None:
        doc["until_active"] = {"release": until, "reached": reached}
    if error is not None:
        doc["error"] = error
    write_atomic(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
