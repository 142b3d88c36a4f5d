"""``modelcast broker`` (Mosquitto in the foreground, development or production profile) and
``modelcast creds add|rotate|revoke|list`` (the secure broker's identities); the work is
``broker_admin``, imported only when one of these runs."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CommandError
from .common import Subcommands, add_flags, add_group, add_json_flag
from .exits import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from broker_admin.tlsca import TlsOptions

log = logging.getLogger("modelcast")


def add_commands(sub: Subcommands) -> None:
    brk = sub.add_parser(
        "broker",
        help="run Mosquitto in the foreground (development, or --secure production profile)",
        description="Without --secure: broker_config/dev.conf (anonymous, plain MQTT, for "
        "development). With --secure: broker_config/production.conf filled with the files of "
        "--state DIR (TLS only, no anonymous access, the password file and ACL of 'modelcast "
        "creds', persistence in DIR). The config goes to DIR/mosquitto.conf and the pid to "
        "DIR/broker.pid; SIGHUP reloads the password and ACL files (which 'modelcast creds' "
        "does by itself). See docs/SECURITY.md.",
    )
    brk.add_argument("--secure", action="store_true", help="the production profile")
    brk.add_argument(
        "--kind",
        choices=("mosquitto", "nats", "rabbitmq"),
        default="mosquitto",
        help="nats or rabbitmq (with --secure --state DIR): write that broker's production "
        "profile into DIR from the same credentials, print how to start it, and exit "
        "(docs/BROKERS.md)",
    )
    add_flags(brk, "state", optional=True)
    brk.add_argument(
        "--port",
        type=int,
        default=None,
        help="listener port (default 8883 with --secure, else 1883)",
    )
    brk.add_argument("--bind", default="127.0.0.1", help="listener address (0.0.0.0: all)")
    brk.add_argument(
        "--extra-conf",
        type=Path,
        default=None,
        metavar="FILE",
        help="Mosquitto settings appended to the generated config (e.g. log_type debug)",
    )
    _add_tls_setup(brk)
    brk.set_defaults(func=cmd_broker)
    _add_creds_commands(sub)


def _add_tls_setup(parser: argparse.ArgumentParser) -> None:
    """The "TLS set-up" group: what ``tls_options`` reads back."""
    g = parser.add_argument_group(
        "TLS set-up",
        "By default a CA is made in DIR on first use, and a server certificate for "
        "127.0.0.1, localhost and every --host. Bring your own with --ca-cert/--ca-key (first "
        "use only), or --ca-cert/--server-cert/--server-key (then DIR never holds a CA key).",
    )
    g.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name or IP address clients use to reach the broker; repeatable",
    )
    for option in ("--ca-cert", "--ca-key", "--server-cert", "--server-key"):
        g.add_argument(option, type=Path, default=None, metavar="PEM")


def tls_options(args: argparse.Namespace) -> TlsOptions:
    """The flags of the "TLS set-up" group."""
    from broker_admin.tlsca import TlsOptions

    return TlsOptions(
        hosts=tuple(args.host),
        ca_cert=args.ca_cert,
        ca_key=args.ca_key,
        server_cert=args.server_cert,
        server_key=args.server_key,
    )


def _add_creds_commands(sub: Subcommands) -> None:
    actions = add_group(
        sub, "creds", help="manage the secure broker's identities (coordinator, device, integrator)"
    )
    cadd = actions.add_parser(
        "add",
        help="a new identity: prints its credentials JSON (also written to DIR/creds/NAME.json)",
        description="ROLE coordinator: reads and writes everything of its fleet. ROLE device: "
        "publishes only under devices/NAME/, reads releases, chunks, fleet commands and its own "
        "commands. ROLE integrator: reads devices/+/status and devices/+/telemetry/#, publishes "
        "nothing. The username and the client id are NAME. A running broker reloads at once.",
    )
    cadd.add_argument("role", choices=["coordinator", "device", "integrator"])
    cadd.add_argument("name", help="identity name; a device's is its device id")
    add_flags(cadd, "state", "fleet")
    _add_tls_setup(cadd)
    cadd.set_defaults(func=cmd_creds_add)
    for action, text, func in (
        (
            "rotate",
            "a new password for NAME: prints the new credentials JSON; the old one stops working",
            cmd_creds_rotate,
        ),
        (
            "revoke",
            "remove NAME: it can no longer connect, and a running broker drops its connection",
            cmd_creds_revoke,
        ),
    ):
        change = actions.add_parser(action, help=text)
        change.add_argument("name")
        add_flags(change, "state")
        change.set_defaults(func=func)
    clist = actions.add_parser("list", help="the identities (no secrets)")
    add_flags(clist, "state")
    add_json_flag(clist)
    clist.set_defaults(func=cmd_creds_list)


def cmd_broker(args: argparse.Namespace) -> int:
    from broker_admin.profiles import run_broker

    if args.kind != "mosquitto":
        return _write_other_profile(args)
    port = args.port if args.port is not None else (8883 if args.secure else 1883)
    code = run_broker(
        args.state,
        port=port,
        bind=args.bind,
        secure=args.secure,
        extra_conf=args.extra_conf.read_text() if args.extra_conf else "",
        tls=tls_options(args),
    )
    return EXIT_OK if code == 0 else EXIT_FAILED


def _write_other_profile(args: argparse.Namespace) -> int:
    from broker_admin.other_brokers import start_command, write_profile

    if not args.secure or args.state is None:
        raise CommandError(
            f"--kind {args.kind} writes the production profile: it needs --secure --state DIR "
            "(for development see docs/BROKERS.md)"
        )
    port = args.port if args.port is not None else 8883
    files = write_profile(args.state, args.kind, port=port, bind=args.bind, tls=tls_options(args))
    for path in files:
        print(f"wrote {path}")
    print(f"start it with: {start_command(args.state, args.kind)}")
    return EXIT_OK


def cmd_creds_add(args: argparse.Namespace) -> int:
    from broker_admin.credstore import CredStore
    from broker_admin.tlsca import ensure_tls

    ensure_tls(args.state, tls_options(args))
    store = CredStore(args.state)
    creds = store.add(args.role, args.name, fleet=args.fleet)
    print(json.dumps(creds, indent=2))
    log.info("credentials of %s written to %s", args.name, store.creds_path(args.name))
    return EXIT_OK


def cmd_creds_rotate(args: argparse.Namespace) -> int:
    from broker_admin.credstore import CredStore

    store = CredStore(args.state)
    print(json.dumps(store.rotate(args.name), indent=2))
    log.info("new credentials of %s written to %s", args.name, store.creds_path(args.name))
    return EXIT_OK


def cmd_creds_revoke(args: argparse.Namespace) -> int:
    from broker_admin.credstore import CredStore

    reloaded = CredStore(args.state).revoke(args.name)
    print(
        f"revoked {args.name}; "
        + ("the running broker reloaded" if reloaded else "no broker running: applies at start")
    )
    return EXIT_OK


def cmd_creds_list(args: argparse.Namespace) -> int:
    from broker_admin.credstore import CredStore

    users = CredStore(args.state).users()
    if args.json:
        print(json.dumps(users, indent=2, sort_keys=True))
    else:
        for name in sorted(users, key=lambda n: (users[n]["fleet"], users[n]["role"], n)):
            print(f"{users[name]['fleet']:<20} {users[name]['role']:<12} {name}")
    return EXIT_OK
