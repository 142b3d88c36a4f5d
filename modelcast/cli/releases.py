"""``modelcast release`` (register and sign a model file) and ``modelcast deploy`` (make a
release the whole fleet's target). Both write the coordinator database; a running coordinator
publishes within a second."""

from __future__ import annotations

import argparse
from pathlib import Path

from protocol.limits import DEFAULT_CHUNK_SIZE
from protocol.textmodel import KIND_FILE, MODEL_KINDS

from ..errors import CommandError
from .common import Subcommands, add_flags
from .exits import EXIT_OK
from .parsing import parse_release


def add_commands(sub: Subcommands) -> None:
    rel = sub.add_parser("release", help="register and sign a model release")
    rel.add_argument("model", type=Path, help="the ONNX file (any file with --kind file)")
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
    _add_acceptance_flags(rel)
    _add_reference_flag(rel)
    rel.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help="chunk size in bytes, 4096..998976 (smaller for slow links that are often cut)",
    )
    rel.add_argument(
        "--kind",
        choices=list(MODEL_KINDS),
        default=None,
        help="what kind of model this is (recorded in the signed manifest, so edges know how "
        "to serve it); default: what the file declares (a file built by 'modelcast models "
        "build' declares text-embedding, any other ONNX file is tensors). Must agree with the "
        "file. Every model must load, run once and meet its acceptance vectors here before it "
        f"is signed; '{KIND_FILE}' ships any file as it is: delivered, verified and activated "
        "like a model, never loaded or run (edges before this kind refuse the release)",
    )
    rel.add_argument(
        "--delta-bases",
        type=int,
        default=2,
        metavar="N",
        help="offer deltas from the N newest earlier releases of this model and variant (edges "
        "holding one download only what changed; 0: none; docs/PROTOCOL.md 'Deltas')",
    )
    add_flags(rel, "db", "keys", "fleet")
    rel.set_defaults(func=cmd_release)

    dep = sub.add_parser("deploy", help="make NAME@VERSION the target of every device of the fleet")
    dep.add_argument("release", help="NAME@VERSION")
    add_flags(dep, "db", "fleet")
    dep.set_defaults(func=cmd_deploy)


def _add_reference_flag(rel: argparse.ArgumentParser) -> None:
    rel.add_argument(
        "--reference",
        type=Path,
        default=None,
        metavar="FILE",
        help="reference texts, one a line (60 or more), of what the model is built for: "
        "embedded here with this model into a drift profile signed into the manifest (under "
        "64 KB; the texts are not shipped); edges then report how far their inputs drift "
        "('modelcast drift'). Text-embedding models only",
    )


def _add_acceptance_flags(rel: argparse.ArgumentParser) -> None:
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


def cmd_release(args: argparse.Namespace) -> int:
    from coordinator.keystore import load_release_keys
    from coordinator.registry import Registry

    from ..acceptance import load_vectors
    from ..drift_reference import ReferenceProfile, describe, read_reference

    profile = None
    if args.reference is not None:
        profile = ReferenceProfile(read_reference(args.reference), args.reference)
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
        profile=profile,
        delta_bases=max(0, args.delta_bases),
    )
    kind = record.model_kind
    deltas = [f"{d.size} bytes from v{d.base_version}" for d in record.signed.deltas]
    print(
        f"released {record.release} ({kind if kind == KIND_FILE else f'{kind} model'}, "
        f"{record.size} bytes, {record.n_chunks} "
        f"chunks, sha256 {record.sha256[:16]}...) in fleet {args.fleet}"
        + (f", with deltas of {', '.join(deltas)}" if deltas else "")
        + f"; 'modelcast deploy {record.name}@{record.version}' to roll it out"
    )
    if profile is not None and profile.built is not None:
        print(describe(profile.built))
    return EXIT_OK


def cmd_deploy(args: argparse.Namespace) -> int:
    from coordinator.registry import Registry

    name, version = parse_release(args.release)
    refuse_deploy_during_rollout(args.db, args.fleet, name)
    Registry(args.db).deploy(name, version, fleet=args.fleet)
    print(
        f"deployed {name}@{version} to fleet {args.fleet}; a running coordinator publishes it "
        "within a second"
    )
    return EXIT_OK


def refuse_deploy_during_rollout(db: Path, fleet: str, name: str) -> None:
    """``modelcast deploy`` would be overwritten by a rollout's next step: say so instead."""
    from coordinator.rollout_plan import ACTIVE_STATES
    from coordinator.rollouts import RolloutStore

    store = RolloutStore(db)
    try:
        for stored in store.all(fleet):
            r = stored.rollout
            if r.name == name and r.state in ACTIVE_STATES:
                raise CommandError(
                    f"rollout of {r.release} is {r.state}: abort it first "
                    f"('modelcast rollout abort {r.release}')"
                )
    finally:
        store.close()
