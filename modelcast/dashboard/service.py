"""``Dashboard``: the configuration, and the parts wired together (the snapshot reader over the
database, the broker watch, the access rules, the routes and the HTTP server).

Threads: ``dashboard-reader`` (the only one that reads the database, once per interval),
the broker watch's MQTT network thread (counts chunk frames), ``dashboard-http`` (accepts) and
one thread per request (renders from the snapshot; a rollout button writes the rollouts table).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from runtime.credentials import ClientCreds
from runtime.listen import show_address

from ..errors import CommandError
from .access import Access, is_loopback
from .app import DashboardApp
from .broker_watch import BrokerWatch
from .snapshot import SnapshotReader
from .source import DatabaseSource
from .web import DashboardServer, Request, Response

DEFAULT_PORT = 8471
#: shorter tokens are refused: a token on a network is what stands between it and the fleet
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class DashboardConfig:
    db: Path
    broker_url: str
    fleet: str = "default"
    bind: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None  # required off loopback
    creds: ClientCreds | None = None
    interval: float = 2.0  # seconds between reads of the database
    window: float = 3600.0  # health and per-device figures over this many seconds

    def __post_init__(self) -> None:
        if not is_loopback(self.bind) and self.token is None:
            raise CommandError(
                f"refusing to serve the dashboard on {self.bind}, which is not a loopback "
                "address, without a token: give --token-file FILE (every request will need "
                "it), or keep the default --bind 127.0.0.1"
            )
        if self.interval <= 0 or self.window <= 0:
            raise CommandError("--interval and --window must be positive")


def load_token(path: Path) -> str:
    """The token in ``path`` (its first line), refused when short or readable by others."""
    try:
        mode = path.stat().st_mode
        lines = path.read_text().strip().splitlines()
    except OSError as exc:
        raise CommandError(f"--token-file {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CommandError(
            f"--token-file {path} can be read by other users (mode {stat.S_IMODE(mode):o}): "
            f"chmod 600 {path}"
        )
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_CHARS:
        raise CommandError(
            f"--token-file {path}: the token must have at least {MIN_TOKEN_CHARS} characters "
            "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


class Dashboard:
    """Binds at construction (a taken port is a clear error then); serves from ``start``."""

    def __init__(self, config: DashboardConfig) -> None:
        if not Path(config.db).exists():
            raise FileNotFoundError(f"no coordinator database at {config.db}")
        self.config = config
        self.reader = SnapshotReader(
            DatabaseSource(config.db, config.fleet, config.window), config.interval
        )
        self.broker = BrokerWatch(config.broker_url, config.fleet, config.creds)
        self._app: DashboardApp | None = None
        self._server = DashboardServer(config.bind, config.port, self._handle)
        access = Access.make(config.token, config.bind, self._server.port)
        self._app = DashboardApp(
            db=config.db,
            fleet=config.fleet,
            access=access,
            reader=self.reader,
            broker=self.broker.state,
        )

    def _handle(self, request: Request) -> Response:
        """The app's answer (the server exists before the app: the port it got keys the
        access rules)."""
        if self._app is None:
            return Response(503, b"starting", "text/plain")
        return self._app.handle(request)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """Where to point a browser (the wildcard address reached through loopback)."""
        host = "127.0.0.1" if self.config.bind in ("0.0.0.0", "::", "") else self.config.bind
        return f"http://{show_address(host, self.port)}/"

    def start(self) -> Dashboard:
        self.reader.start()
        self.broker.start()
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        self.broker.stop()
        self.reader.stop()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
