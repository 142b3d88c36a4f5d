"""``modelcast keys init|rotate-root|certify|revoke|show``: the offline root key and the online
release key it certifies (the work is ``coordinator.keystore`` and ``coordinator.trustkeys``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .common import Subcommands, add_flags, add_group, add_json_flag
from .exits import EXIT_OK


def add_commands(sub: Subcommands) -> None:
    actions = add_group(sub, "keys", help="manage signing keys")
    init = actions.add_parser(
        "init",
        help="create an offline root key and a root-certified online release key",
        description="Creates KEYDIR/root.key (keep offline), KEYDIR/root.pub (what edges "
        "trust), KEYDIR/release.key and KEYDIR/release.cert.",
    )
    init.add_argument("keydir", type=Path)
    _add_validity_days(init, "how long the release key certificate is valid")
    init.set_defaults(func=cmd_keys_init)
    rotate = actions.add_parser(
        "rotate-root",
        help="replace the root key: the new root is signed by the old one and by itself",
        description="Needs KEYDIR/root.key (run it where the root key is kept). Writes the new "
        "root.key and root.pub, appends the rotation to KEYDIR/root-chain, re-certifies the "
        "release key and re-signs the revocation list with the new root, and moves the old root "
        "key to KEYDIR/retired/ (destroy it). A coordinator using KEYDIR publishes the chain "
        "(retained, releases/root) within a second; edges follow it from whatever root they were "
        "installed with. Give new edges the new root.pub.",
    )
    add_flags(rotate, "keys")
    _add_validity_days(rotate, "validity of the release key certificate re-issued by the new root")
    rotate.set_defaults(func=cmd_keys_rotate_root)
    _add_certify(actions)
    _add_revoke(actions)
    show = actions.add_parser("show", help="the root, release key and revocations of KEYDIR")
    add_flags(show, "keys")
    add_json_flag(show)
    show.set_defaults(func=cmd_keys_show)


def _add_validity_days(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--validity-days", type=float, default=365.0, help=help)


def _add_certify(actions: Subcommands) -> None:
    cert = actions.add_parser(
        "certify",
        help="re-certify the release key with the root (renew its expiry), or --new: a new one",
        description="Needs KEYDIR/root.key. Without --new: a new certificate for the current "
        "release key (renewal before it expires). With --new: a new release key, certified; the "
        "old one goes to KEYDIR/retired/; revoke it with 'modelcast keys revoke ID' once the "
        "coordinator signs with the new one. A running coordinator using KEYDIR switches keys "
        "within a second and re-signs the deployed manifests and the index.",
    )
    add_flags(cert, "keys")
    cert.add_argument("--new", action="store_true", help="make a new release key")
    _add_validity_days(cert, "how long the certificate is valid")
    cert.set_defaults(func=cmd_keys_certify)


def _add_revoke(actions: Subcommands) -> None:
    revoke = actions.add_parser(
        "revoke",
        help="revoke release keys: edges refuse anything they sign from then on",
        description="Needs KEYDIR/root.key. Adds KEY_IDs (16 hex characters, as 'modelcast keys "
        "show' prints them) to the root-signed KEYDIR/revocations, with a higher sequence "
        "number; without KEY_ID it only re-signs the list with a new expiry. A coordinator using "
        "KEYDIR publishes it (retained, releases/revocations) within a second. The current "
        "release key cannot be revoked: 'modelcast keys certify --new' first.",
    )
    revoke.add_argument("key_ids", nargs="*", metavar="KEY_ID")
    add_flags(revoke, "keys")
    _add_validity_days(
        revoke, "expiry of the list (edges refuse an expired list; re-sign it before then)"
    )
    revoke.set_defaults(func=cmd_keys_revoke)


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
        print(f"release key    {rel['key']} (certificate expires {_utc(rel['expires'])})")
    if "revocations" in info:
        rev = info["revocations"]
        print(
            f"revoked        {', '.join(rev['revoked']) or 'nothing'} "
            f"(list seq {rev['seq']}, expires {_utc(rev['expires'])})"
        )
    return EXIT_OK


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))
