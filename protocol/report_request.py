"""A signed request that every device of a fleet publish its status and state again.

Why: a broker that does not deliver retained messages through wildcard subscriptions (RabbitMQ's
MQTT plugin) gives a coordinator that (re)connects none of the devices' retained status and state
on ``devices/+/...``. So the coordinator publishes this request on every connect (on any broker:
it costs two small messages a device), and each device answers by publishing both again, live.

Signed by the release key like a command, so nobody else can make a fleet talk. A replay is
harmless (one more status and state) but still refused: a device answers only a request issued
after the last it answered. ``expires`` is generous (a day) because a late answer does no harm
and a device clock may be off.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codec import SCHEMA_VERSION, check_schema_version, field, pack, unpack_map
from .envelope import TrustedRoot, seal
from .errors import ExpiredError, MalformedMessage, StaleError
from .limits import DEFAULT_LIMITS, Limits
from .names import check_name
from .signing import SigningKey

KIND_REPORT_REQUEST = "report-request"
#: how long a request stays valid
REPORT_REQUEST_TTL_S = 24 * 3600.0


@dataclass(frozen=True)
class ReportRequest:
    fleet: str
    issued: float
    expires: float

    @classmethod
    def new(cls, fleet: str, now: float) -> ReportRequest:
        return cls(fleet, issued=now, expires=now + REPORT_REQUEST_TTL_S)

    def encode(self) -> bytes:
        return pack(
            {
                "v": SCHEMA_VERSION,
                "fleet": self.fleet,
                "issued": self.issued,
                "expires": self.expires,
            }
        )

    def sign(self, key: SigningKey, cert: bytes) -> bytes:
        return seal(KIND_REPORT_REQUEST, self.encode(), key, cert)

    @classmethod
    def decode(cls, body: bytes, limits: Limits = DEFAULT_LIMITS) -> ReportRequest:
        what = "report request"
        obj = unpack_map(body, limits.max_command_bytes, what)
        check_schema_version(obj, what)
        issued = field(obj, "issued", float, what)
        expires = field(obj, "expires", float, what)
        if expires < issued:
            raise MalformedMessage(f"{what}: expires before it was issued")
        return cls(check_name(field(obj, "fleet", str, what), "fleet"), issued, expires)


def open_report_request(
    trust: TrustedRoot, data: bytes, *, now: float, fleet: str, answered: float
) -> ReportRequest:
    """Verify a report request; refuse another fleet's, an expired one, or one issued no later
    than ``answered`` (the last one answered: a replay)."""
    body, _cert = trust.open(data, KIND_REPORT_REQUEST, now)
    request = ReportRequest.decode(body, trust.limits)
    if request.fleet != fleet:
        raise MalformedMessage(f"report request for fleet {request.fleet!r}, not {fleet!r}")
    if now >= request.expires:
        raise ExpiredError(f"report request expired at {request.expires}")
    if request.issued <= answered:
        raise StaleError(f"report request of {request.issued} already answered")
    return request
