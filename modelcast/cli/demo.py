"""``modelcast demo``: a broker, a coordinator and edges in one terminal (``modelcast.demo``
runs it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Subcommands


def add_commands(sub: Subcommands) -> None:
    demo = sub.add_parser(
        "demo", help="broker + coordinator + edges in one terminal, with progress"
    )
    demo.add_argument("--edges", type=int, default=3, help="edges started at once")
    demo.add_argument(
        "--model",
        choices=["auto", "minilm", "synthetic"],
        default="auto",
        help="minilm: the real all-MiniLM-L6-v2 (fp32, then int8), each edge answering a "
        "similarity query; synthetic: dense models of --size-mb; auto: minilm when the "
        "'models' extra and its weights are installed",
    )
    demo.add_argument(
        "--size-mb", type=float, default=12.0, help="size of the synthetic demo model"
    )
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
    demo.add_argument(
        "--flaky",
        action="store_true",
        help="give every edge its own bad link (cut every 1-4 s, 256 KB/s, 50 ms) to watch "
        "transfers resume",
    )
    demo.add_argument(
        "--dashboard",
        action="store_true",
        help="also serve the dashboard (modelcast dashboard) and print its URL; it stays up "
        "with the fleet once the story is told, until Ctrl-C",
    )
    demo.add_argument(
        "--dashboard-port",
        type=int,
        default=8471,
        metavar="PORT",
        help="the dashboard's port on 127.0.0.1 (0: any free port)",
    )
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(
        edges=args.edges,
        size_mb=args.size_mb,
        workdir=args.workdir,
        timeout=args.timeout,
        flaky=args.flaky,
        model=args.model,
        dashboard_port=args.dashboard_port if args.dashboard else None,
    )
