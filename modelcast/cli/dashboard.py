"""``modelcast dashboard``: the operator's web page over the coordinator's database, and
``/metrics`` for Prometheus (``modelcast.dashboard`` serves it)."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from .common import EnvFlag, Subcommands, add_flags, load_creds, require_db

PORT = EnvFlag(
    "--port",
    "port to listen on (0: any free port)",
    "MODELCAST_DASHBOARD_PORT",
    type=int,
    fallback="8471",
)
BIND = EnvFlag(
    "--bind",
    "address to listen on; anything but loopback needs --token-file",
    "MODELCAST_DASHBOARD_BIND",
    fallback="127.0.0.1",
)


def add_commands(sub: Subcommands) -> None:
    dash = sub.add_parser(
        "dashboard",
        help="the fleet, releases, rollouts and health in a browser, live; /metrics",
        description=(
            "Serves the fleet, device, releases, rollouts and health pages (live, no reload), "
            "/api (JSON, the shapes of --json) and /metrics (Prometheus) from the coordinator "
            "database, read once per --interval whatever the number of open pages. Loopback "
            "only unless --token-file is given. See docs/DASHBOARD.md."
        ),
    )
    add_flags(dash, "db", "broker", "fleet", "creds")
    PORT.add_to(dash)
    BIND.add_to(dash)
    dash.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="a file (mode 600) holding the token every request must carry (?token= once, "
        "then a cookie; or Authorization: Bearer); required off loopback",
    )
    dash.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often the database is read (and open pages updated)",
    )
    dash.add_argument(
        "--window",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="health and per-device figures over the telemetry of the last SECONDS",
    )
    dash.set_defaults(func=cmd_dashboard)


def _creds_role(args: argparse.Namespace) -> str:
    """A dashboard reads as an integrator, or as the coordinator (whose identity may also read
    the chunk topics, so that chunk bytes are counted)."""
    from runtime.credentials import ClientCreds

    role = ClientCreds.load(args.creds).role if args.creds is not None else None
    return "coordinator" if role == "coordinator" else "integrator"


def cmd_dashboard(args: argparse.Namespace) -> int:
    from ..dashboard import Dashboard, DashboardConfig, load_token
    from .services import run_until_signal

    require_db(args.db)
    config = DashboardConfig(
        db=args.db,
        broker_url=args.broker,
        fleet=args.fleet,
        bind=args.bind,
        port=args.port,
        token=load_token(args.token_file) if args.token_file is not None else None,
        creds=load_creds(args, _creds_role(args)),
        interval=args.interval,
        window=args.window,
    )
    dashboard = Dashboard(config)

    def run(stop: threading.Event) -> None:
        with dashboard:
            auth = " (needs the token: add ?token=TOKEN once)" if config.token else ""
            print(f"dashboard of fleet {config.fleet} on {dashboard.url}{auth}", flush=True)
            stop.wait()

    return run_until_signal(run)
