"""The ``modelcast`` command. Every setting is a flag, and most have an environment variable.

Exit codes: 0 success; 1 the operation failed (a check, a file, the registry said no);
2 bad usage (argparse); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from protocol import ProtocolError

from . import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("modelcast")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_broker(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        default=_env("MODELCAST_BROKER", "mqtt://127.0.0.1:1883"),
        help="broker URL mqtt://HOST:PORT [env MODELCAST_BROKER]",
    )


def _add_fleet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fleet",
        default=_env("MODELCAST_FLEET", "default"),
        help="fleet name; topics live under modelcast/FLEET/ [env MODELCAST_FLEET]",
    )


def _add_db(p: argparse.ArgumentParser, required: bool = True) -> None:
    default = _env("MODELCAST_DB")
    p.add_argument(
        "--db",
        type=Path,
        default=Path(default) if default else None,
        required=required and default is None,
        help="coordinator SQLite database [env MODELCAST_DB]",
    )


def _add_keys(p: argparse.ArgumentParser) -> None:
    default = _env("MODELCAST_KEYS")
    p.add_argument(
        "--keys",
        type=Path,
        default=Path(default) if default else None,
        required=default is None,
        help="key directory made by 'modelcast keys init' [env MODELCAST_KEYS]",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelcast",
        formatter_class=_Help,
        description="Ship signed ONNX models to edge fleets over MQTT, resumably.",
        epilog="exit codes: 0 ok, 1 failed, 2 bad usage, 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"modelcast {__version__}")
    parser.add_argument(
        "--log-level",
        default=_env("MODELCAST_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity [env MODELCAST_LOG_LEVEL]",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys = sub.add_parser("keys", help="manage signing keys", formatter_class=_Help)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = keys_sub.add_parser(
        "init",
        formatter_class=_Help,
        help="create an offline root key and a root-certified online release key",
        description="Creates KEYDIR/root.key (keep offline), KEYDIR/root.pub (what edges "
        "trust), KEYDIR/release.key and KEYDIR/release.cert.",
    )
    init.add_argument("keydir", type=Path)
    init.add_argument(
        "--validity-days",
        type=float,
        default=365.0,
        help="how long the release key certificate is valid",
    )
    init.set_defaults(func=cmd_keys_init)

    coord = sub.add_parser(
        "coordinator",
        formatter_class=_Help,
        help="run the coordinator service (publishes releases, serves chunks)",
    )
    _add_broker(coord)
    _add_db(coord)
    _add_keys(coord)
    _add_fleet(coord)
    coord.set_defaults(func=cmd_coordinator)

    edge = sub.add_parser(
        "edge",
        formatter_class=_Help,
        help="run an edge agent (downloads, verifies, activates models)",
    )
    _add_broker(edge)
    edge.add_argument(
        "--id",
        default=_env("MODELCAST_DEVICE_ID"),
        required=_env("MODELCAST_DEVICE_ID") is None,
        help="device id, [A-Za-z0-9_-]{1,64} [env MODELCAST_DEVICE_ID]",
    )
    data_default = _env("MODELCAST_DATA")
    edge.add_argument(
        "--data",
        type=Path,
        required=data_default is None,
        default=Path(data_default) if data_default else None,
        help="the device's data directory [env MODELCAST_DATA]",
    )
    trust_default = _env("MODELCAST_TRUST")
    edge.add_argument(
        "--trust",
        type=Path,
        required=trust_default is None,
        default=Path(trust_default) if trust_default else None,
        help="root public key (KEYDIR/root.pub) [env MODELCAST_TRUST]",
    )
    _add_fleet(edge)
    edge.add_argument(
        "--window", type=int, default=16, help="chunks in flight at most (flow control)"
    )
    edge.add_argument(
        "--stall-timeout",
        type=float,
        default=10.0,
        help="seconds without progress before asking again",
    )
    edge.add_argument("--keepalive", type=int, default=30, help="MQTT keepalive in seconds")
    edge.add_argument(
        "--reconnect-min",
        type=float,
        default=0.5,
        help="first reconnect delay in seconds; doubles per failed attempt (jittered)",
    )
    edge.add_argument(
        "--reconnect-max", type=float, default=30.0, help="reconnect delay cap in seconds"
    )
    edge.add_argument(
        "--telemetry-interval",
        type=float,
        default=float(_env("MODELCAST_TELEMETRY_INTERVAL", "60") or 60),
        help="seconds between metrics samples [env MODELCAST_TELEMETRY_INTERVAL]",
    )
    edge.add_argument(
        "--telemetry-queue",
        type=int,
        default=10_000,
        help="telemetry messages kept on disk while offline; the oldest go beyond it",
    )
    edge.add_argument(
        "--http",
        default=_env("MODELCAST_HTTP", "127.0.0.1:8470"),
        help="local inference endpoint HOST:PORT (port 0: any free port), or 'off' "
        "[env MODELCAST_HTTP]",
    )
    edge.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label reported in the device profile; repeatable",
    )
    edge.set_defaults(func=cmd_edge)

    rel = sub.add_parser("release", formatter_class=_Help, help="register and sign a model release")
    rel.add_argument("model", type=Path, help="the ONNX file")
    rel.add_argument("--name", required=True, help="model name, [A-Za-z0-9_-]{1,64}")
    rel.add_argument(
        "--version",
        type=int,
        required=True,
        dest="model_version",
        help="release version; must be greater than every earlier one",
    )
    rel.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="chunk size in bytes (default 262144; 4096..998976)",
    )
    _add_db(rel)
    _add_keys(rel)
    _add_fleet(rel)
    rel.set_defaults(func=cmd_release)

    dep = sub.add_parser(
        "deploy",
        formatter_class=_Help,
        help="make NAME@VERSION the target of every device of the fleet",
    )
    dep.add_argument("release", help="NAME@VERSION")
    _add_db(dep)
    _add_fleet(dep)
    dep.set_defaults(func=cmd_deploy)

    st = sub.add_parser("status", formatter_class=_Help, help="show the fleet")
    _add_db(st)
    _add_fleet(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    demo = sub.add_parser(
        "demo",
        formatter_class=_Help,
        help="broker + coordinator + edges in one terminal, with progress",
    )
    demo.add_argument("--edges", type=int, default=3, help="edges started at once")
    demo.add_argument("--size-mb", type=float, default=12.0, help="size of the demo model")
    demo.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep keys, db and device data here (default: a temp dir)",
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="give up (exit 1) if the demo has not finished by then",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


# --- commands ------------------------------------------------------------------------------
def cmd_keys_init(args: argparse.Namespace) -> int:
    from coordinator.keystore import init_keys

    init_keys(args.keydir, validity_days=args.validity_days)
    print(
        f"keys written to {args.keydir}; give edges {args.keydir / 'root.pub'} "
        f"and keep {args.keydir / 'root.key'} offline"
    )
    return EXIT_OK


def _run_until_signal(run: Callable[[threading.Event], None]) -> int:
    stop = threading.Event()
    interrupted: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        interrupted.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run(stop)
    return EXIT_INTERRUPTED if interrupted and interrupted[0] == signal.SIGINT else EXIT_OK


def cmd_coordinator(args: argparse.Namespace) -> int:
    from coordinator.service import Coordinator

    service = Coordinator(
        broker_url=args.broker, db_path=args.db, keydir=args.keys, fleet=args.fleet
    )
    return _run_until_signal(service.run_forever)


def cmd_edge(args: argparse.Namespace) -> int:
    from edge_node import EdgeAgent, EdgeConfig

    if not 0 < args.reconnect_min <= args.reconnect_max:
        raise ValueError("need 0 < --reconnect-min <= --reconnect-max")
    if args.telemetry_interval <= 0:
        raise ValueError("--telemetry-interval must be positive")
    config = EdgeConfig(
        broker_url=args.broker,
        device_id=args.id,
        data_dir=args.data,
        trust_path=args.trust,
        fleet=args.fleet,
        window=args.window,
        stall_timeout=args.stall_timeout,
        keepalive=args.keepalive,
        reconnect_min=args.reconnect_min,
        reconnect_max=args.reconnect_max,
        telemetry_interval=args.telemetry_interval,
        telemetry_queue=args.telemetry_queue,
        http=_parse_http(args.http),
        tags=_parse_tags(args.tag),
    )
    agent = EdgeAgent(config)
    return _run_until_signal(agent.run_forever)


def _parse_http(text: str) -> tuple[str, int] | None:
    if text.lower() == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--http expects HOST:PORT or 'off', got {text!r}")
    return host, int(port)


def _parse_tags(items: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag expects KEY=VALUE, got {item!r}")
        tags[key] = value
    return tags


def _parse_release(text: str) -> tuple[str, int]:
    name, sep, version = text.partition("@")
    if not sep or not version.isdigit():
        raise ValueError(f"expected NAME@VERSION, got {text!r}")
    return name, int(version)


def cmd_release(args: argparse.Namespace) -> int:
    from coordinator.keystore import load_release_keys
    from coordinator.registry import Registry
    from protocol import DEFAULT_CHUNK_SIZE

    registry = Registry(args.db)
    record = registry.add_release(
        args.model,
        name=args.name,
        version=args.model_version,
        keys=load_release_keys(args.keys),
        fleet=args.fleet,
        chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
    )
    print(
        f"released {record.name}@{record.version} ({record.size} bytes, {record.n_chunks} "
        f"chunks, sha256 {record.sha256[:16]}...) in fleet {args.fleet}; "
        f"'modelcast deploy {record.name}@{record.version}' to roll it out"
    )
    return EXIT_OK


def cmd_deploy(args: argparse.Namespace) -> int:
    from coordinator.registry import Registry

    name, version = _parse_release(args.release)
    Registry(args.db).deploy(name, version, fleet=args.fleet)
    print(
        f"deployed {name}@{version} to fleet {args.fleet}; a running coordinator publishes it "
        "within a second"
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from coordinator.status import fleet_status, format_status

    if not args.db.exists():
        raise FileNotFoundError(f"no coordinator database at {args.db}")
    status = fleet_status(args.db, args.fleet)
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else format_status(status))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        edges=args.edges, size_mb=args.size_mb, workdir=args.workdir, timeout=args.timeout
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (ValueError, ProtocolError, OSError) as exc:
        print(f"modelcast {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
