"""What the command groups share: the parser class every (sub)command uses, the table of the
flags several commands take (each with its environment variable), and the helpers that read
those flags back (``--creds``, ``--db``).

A flag's default comes from its environment variable when the parser is built, so ``--help``
shows the value a command would use; a flag marked required is required only while its
variable is unset.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeAlias

from .exits import UsageError

if TYPE_CHECKING:
    from coordinator.registry import Registry
    from coordinator.rollout_store import RolloutStore
    from runtime.credentials import ClientCreds

#: what ``add_subparsers`` returns; each command module's ``add_commands`` adds to it
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DEFAULT_FLEET = "default"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows every default and keeps the descriptions' line breaks."""


class CommandParser(argparse.ArgumentParser):
    """The parser of ``modelcast`` and, through ``add_subparsers``, of every subcommand: its help
    shows defaults, and bad usage raises ``UsageError`` (mapped to exit 2 in ``exits``) instead
    of exiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, usage=self.format_usage(), prog=self.prog)


@dataclass(frozen=True)
class EnvFlag:
    """A flag whose default is read from an environment variable (or is ``fallback``).

    ``eager``: the variable's text is converted with ``type`` when the parser is built, and an
    empty one counts as unset (paths: None). Otherwise the text itself is the default and
    argparse converts it only when the flag is not given, so a bad value is a usage error."""

    option: str
    help: str
    env: str | None = None
    type: Callable[[str], Any] | None = None
    fallback: str | None = None
    required: bool = False  # ...while ``env`` is unset
    eager: bool = False
    metavar: str | None = None
    choices: tuple[str, ...] | None = None

    def default(self, environ: Mapping[str, str]) -> Any:
        text = environ.get(self.env, self.fallback) if self.env else self.fallback
        if not self.eager:
            return text
        text = text or self.fallback
        return None if text is None or self.type is None else self.type(text)

    def is_set(self, environ: Mapping[str, str]) -> bool:
        """Its variable is set (even to nothing)."""
        return self.env is not None and self.env in environ

    def is_required(self, environ: Mapping[str, str]) -> bool:
        return self.required and not self.is_set(environ)

    def add_to(self, parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
        """Add the flag, its default read from the environment now; ``optional`` drops its
        required-ness for this command."""
        environ = os.environ
        extra: dict[str, Any] = {
            key: value
            for key, value in (
                ("type", self.type),
                ("metavar", self.metavar),
                ("choices", list(self.choices) if self.choices else None),
            )
            if value is not None
        }
        if self.is_required(environ) and not optional:
            extra["required"] = True
        parser.add_argument(
            self.option,
            default=self.default(environ),
            help=f"{self.help} [env {self.env}]" if self.env else self.help,
            **extra,
        )


def path_flag(option: str, help: str, env: str, *, required: bool = False, **kw: Any) -> EnvFlag:
    """A path flag: its variable, when set and not empty, is the default path."""
    return EnvFlag(option, help, env, type=Path, required=required, eager=True, **kw)


#: The flags several commands take, by name (``add_flags`` adds them in the order given).
COMMON_FLAGS: Final[Mapping[str, EnvFlag]] = MappingProxyType(
    {
        "broker": EnvFlag(
            "--broker",
            "broker URL mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS; or a comma-separated "
            "list of them (the nodes of one cluster): on failure the client moves to the next",
            "MODELCAST_BROKER",
            fallback="mqtt://127.0.0.1:1883",
        ),
        "creds": path_flag(
            "--creds",
            "broker credentials JSON from 'modelcast creds add': connect over TLS with that "
            "identity (needs an mqtts:// --broker)",
            "MODELCAST_CREDS",
            metavar="FILE",
        ),
        "state": path_flag(
            "--state",
            "the broker's state directory: CA, certificates, password file, ACL, credentials",
            "MODELCAST_BROKER_STATE",
            required=True,
            metavar="DIR",
        ),
        "fleet": EnvFlag(
            "--fleet",
            "fleet name; topics live under modelcast/FLEET/",
            "MODELCAST_FLEET",
            fallback=DEFAULT_FLEET,
        ),
        "db": path_flag("--db", "coordinator SQLite database", "MODELCAST_DB", required=True),
        "keys": path_flag(
            "--keys", "key directory made by 'modelcast keys init'", "MODELCAST_KEYS", required=True
        ),
    }
)


def add_flags(parser: argparse.ArgumentParser, *names: str, optional: bool = False) -> None:
    """Add the common flags ``names`` (keys of ``COMMON_FLAGS``), in that order; ``optional``:
    none of them is required, even with its variable unset."""
    for name in names:
        COMMON_FLAGS[name].add_to(parser, optional=optional)


def add_group(sub: Subcommands, name: str, **kwargs: Any) -> Subcommands:
    """A command made of actions (``modelcast NAME ACTION``): its parser (``kwargs``: help,
    description), and where its actions go; the action taken lands in ``args.NAME_command``."""
    group = sub.add_parser(name, **kwargs)
    return group.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_selector_flag(parser: argparse.ArgumentParser) -> None:
    """``--to``: which devices a rollout, rollback or setting is for."""
    parser.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="SELECTOR",
        help="which devices: KEY=VALUE tags (all must match) and/or device ids, "
        "comma-separated or repeated; default all devices (the set is dynamic: a device that "
        "joins later and matches is included)",
    )


def load_creds(args: argparse.Namespace, role: str) -> ClientCreds | None:
    """The ``--creds`` of a client command, checked against its role, fleet and broker URL.
    A fleet left at its default (no --fleet, no MODELCAST_FLEET) becomes the credentials'."""
    if args.creds is None:
        return None
    from runtime.credentials import ClientCreds

    creds = ClientCreds.load(args.creds)
    fleet_unset = args.fleet == DEFAULT_FLEET and not COMMON_FLAGS["fleet"].is_set(os.environ)
    if creds.fleet is not None and fleet_unset:
        args.fleet = creds.fleet
    creds.check_role(role, args.fleet)
    creds.session_auth(args.broker)  # an mqtt:// URL with TLS credentials fails here, not later
    return creds


def require_db(db: Path) -> Path:
    """``db``, if the coordinator database is there (commands that read it never create it)."""
    if not db.exists():
        raise FileNotFoundError(f"no coordinator database at {db}")
    return db


def open_db(db: Path) -> tuple[Registry, RolloutStore]:
    """The registry and the rollout store of an existing coordinator database."""
    from coordinator.registry import Registry
    from coordinator.rollout_store import RolloutStore

    require_db(db)
    return Registry(db), RolloutStore(db)
