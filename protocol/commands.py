"""Signed commands from the coordinator to devices: rollback, re-request, config.

A command is signed by the release key (like a manifest) and carries a ``seq`` that only grows
per fleet; a device refuses a command whose ``seq`` is not above the last it accepted, so a
recorded command cannot be replayed. ``device`` is one device id, or ``*`` for the whole fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from .codec import SCHEMA_VERSION, check_schema_version, field, non_negative, pack, unpack_map
from .envelope import TrustedRoot, seal
from .errors import ExpiredError, MalformedMessage, StaleError
from .limits import DEFAULT_LIMITS, Limits
from .names import check_name
from .signing import SigningKey

KIND_COMMAND = "command"
ALL_DEVICES = "*"
ACTIONS = frozenset({"rollback", "re-request", "config"})


@dataclass(frozen=True)
class Command:
    fleet: str
    device: str
    seq: int
    issued: float
    expires: float
    action: str
    args: dict[str, Any] = dc_field(default_factory=dict)

    def encode(self) -> bytes:
        return pack(
            {
                "v": SCHEMA_VERSION,
                "fleet": self.fleet,
                "device": self.device,
                "seq": self.seq,
                "issued": self.issued,
                "expires": self.expires,
                "action": self.action,
                "args": self.args,
            }
        )

    def sign(self, key: SigningKey, cert: bytes) -> bytes:
        return seal(KIND_COMMAND, self.encode(), key, cert)

    @classmethod
    def decode(cls, body: bytes, limits: Limits = DEFAULT_LIMITS) -> Command:
        what = "command"
        obj = unpack_map(body, limits.max_command_bytes, what)
        check_schema_version(obj, what)
        device = field(obj, "device", str, what)
        if device != ALL_DEVICES:
            check_name(device, "device id")
        action = field(obj, "action", str, what)
        if action not in ACTIONS:
            raise MalformedMessage(f"{what}: unknown action {action!r}")
        args = field(obj, "args", dict, what)
        if action == "rollback":
            check_name(args.get("model"), "model name")
            if type(args.get("version")) is not int or args["version"] < 0:
                raise MalformedMessage(f"{what}: rollback needs an integer 'version'")
        return cls(
            fleet=check_name(field(obj, "fleet", str, what), "fleet"),
            device=device,
            seq=non_negative(field(obj, "seq", int, what), "seq", what),
            issued=field(obj, "issued", float, what),
            expires=field(obj, "expires", float, what),
            action=action,
            args=args,
        )


def open_command(
    trust: TrustedRoot, data: bytes, *, now: float, fleet: str, device: str, last_seq: int
) -> Command:
    """Verify a command for ``device``; refuse another fleet's or device's, expired, replayed."""
    body, _cert = trust.open(data, KIND_COMMAND, now)
    command = Command.decode(body, trust.limits)
    if command.fleet != fleet:
        raise MalformedMessage(f"command for fleet {command.fleet!r}, not {fleet!r}")
    if command.device not in (device, ALL_DEVICES):
        raise MalformedMessage(f"command for device {command.device!r}, not {device!r}")
    if now >= command.expires:
        raise ExpiredError(f"command seq {command.seq} expired at {command.expires}")
    if command.seq <= last_seq:
        raise StaleError(f"command seq {command.seq} replayed (last accepted {last_seq})")
    return command
