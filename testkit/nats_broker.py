"""Run a throwaway NATS server with its MQTT listener (JetStream on, a private store directory) on
free loopback ports: one node, or several clustered.

NATS speaks MQTT 3.1.1 through JetStream: sessions and retained messages are JetStream streams, so
a node needs ``server_name``, a ``jetstream`` block and an ``mqtt`` listener. A cluster adds a
``cluster { name, listen, routes }`` block per node; JetStream then replicates the MQTT streams
(up to three replicas). ``nats_cluster(3, workdir)`` gives the confs of three nodes that route to
each other; start each with ``NatsBroker(conf=...)``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from .broker_process import BrokerChild, ChildBroker
from .errors import BrokerStartError
from .local_broker import answers_mqtt, free_loopback_port

HOST = "127.0.0.1"
NATS_BINARIES = ("/usr/sbin/nats-server", "/usr/bin/nats-server")


def find_nats_server() -> str | None:
    """The nats-server binary (Debian installs it in /usr/sbin), or None."""
    found = shutil.which("nats-server")
    if found:
        return found
    return next((path for path in NATS_BINARIES if Path(path).exists()), None)


@dataclass(frozen=True)
class NatsNodeConf:
    """One node's settings. Ports left None are picked free when the node is configured
    (``NatsBroker`` does it); a cluster needs them fixed up front so routes can name them.

    routes: the cluster ports of the OTHER nodes (empty: a single node, no cluster block).
    max_payload: bytes (NATS' default is 1 MB); None leaves the default.
    """

    server_name: str = "n1"
    mqtt_port: int | None = None
    client_port: int | None = None
    cluster_port: int | None = None
    cluster_name: str = "modelcast"
    routes: tuple[int, ...] = ()
    max_payload: int | None = None
    #: replicas of the MQTT streams (sessions, retained, QoS 1 messages); None leaves NATS'
    #: choice, which counts the nodes up when the first MQTT client comes: 2 if one was late,
    #: and an R2 stream stops with either node
    mqtt_replicas: int | None = None
    extra: str = field(default="", repr=False)

    def with_ports(self) -> NatsNodeConf:
        """This conf with every unset port picked free now."""
        return replace(
            self,
            mqtt_port=self.mqtt_port or free_loopback_port(),
            client_port=self.client_port or free_loopback_port(),
            cluster_port=self.cluster_port or (free_loopback_port() if self.routes else None),
        )

    def render(self, store_dir: Path) -> str:
        """The nats-server config text (ports must be set: see ``with_ports``)."""
        if self.mqtt_port is None or self.client_port is None:
            raise ValueError("NatsNodeConf.render needs its ports: call with_ports() first")
        q = json.dumps  # NATS config strings accept JSON quoting
        replicas = "" if self.mqtt_replicas is None else f", stream_replicas: {self.mqtt_replicas}"
        lines = [
            f"server_name: {q(self.server_name)}",
            f"listen: {q(f'{HOST}:{self.client_port}')}",
            f"jetstream {{ store_dir: {q(str(store_dir))} }}",
            f"mqtt {{ listen: {q(f'{HOST}:{self.mqtt_port}')}{replicas} }}",
        ]
        if self.max_payload is not None:
            lines.append(f"max_payload: {int(self.max_payload)}")
        if self.cluster_port is not None:
            routes = ", ".join(q(f"nats-route://{HOST}:{port}") for port in self.routes)
            lines.append(
                f"cluster {{ name: {q(self.cluster_name)}, "
                f"listen: {q(f'{HOST}:{self.cluster_port}')}, routes: [{routes}] }}"
            )
        if self.extra:
            lines.append(self.extra)
        return "\n".join(lines) + "\n"


def nats_cluster(size: int = 3, *, name: str = "modelcast") -> list[NatsNodeConf]:
    """The confs of ``size`` nodes clustered on loopback (n1, n2, ...), every port picked free,
    each node routing to all the others, the MQTT streams on up to three of them (so that a
    three-node cluster keeps its quorum with one node down)."""
    cluster_ports = [free_loopback_port() for _ in range(size)]
    return [
        NatsNodeConf(
            server_name=f"n{i + 1}",
            cluster_name=name,
            cluster_port=port,
            routes=tuple(p for p in cluster_ports if p != port),
            mqtt_replicas=min(size, 3),
        ).with_ports()
        for i, port in enumerate(cluster_ports)
    ]


class NatsBroker(ChildBroker):
    """A nats-server child process with an MQTT listener on 127.0.0.1.

    ``start()`` returns once the MQTT port answers; ``url`` is the MQTT URL. The ports are kept, so
    ``restart()`` (after ``kill()`` or ``stop()``) brings the node back where clients expect it,
    with its JetStream store (sessions, retained messages) intact.
    """

    def __init__(
        self,
        conf: NatsNodeConf | None = None,
        *,
        workdir: Path | str | None = None,
        binary: str | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        super().__init__(workdir, "modelcast-nats-")
        self._pick_ports = conf is None or conf.mqtt_port is None
        self.conf = (conf or NatsNodeConf()).with_ports()
        self.start_timeout = start_timeout
        self._binary = binary
        self._child = BrokerChild(f"nats-server {self.conf.server_name}", self.workdir / "nats.log")

    @property
    def port(self) -> int:
        assert self.conf.mqtt_port is not None  # with_ports() set it
        return self.conf.mqtt_port

    @property
    def conf_file(self) -> Path:
        return self.workdir / "nats.conf"

    @property
    def store_dir(self) -> Path:
        return self.workdir / "jetstream"

    def start(self, *, wait: bool = True) -> NatsBroker:
        """Start the node; ``wait``: return once its MQTT port answers. A clustered node answers
        only once its JetStream has a quorum: start every node with ``wait=False``, then
        ``wait_ready()`` on each (``NatsCluster`` does it)."""
        binary = self._binary or find_nats_server()
        if binary is None:
            raise FileNotFoundError(
                "nats-server not found; install it with `apt-get install nats-server` "
                "or run `make setup`"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        # a port picked free can be taken before the server binds it: then pick again
        attempts = 3 if self._pick_ports else 1
        for attempt in range(attempts):
            self.conf_file.write_text(self.conf.render(self.store_dir))
            try:
                self._child.spawn(
                    [binary, "-c", str(self.conf_file)],
                    ready=self._answers,
                    timeout=self.start_timeout,
                    wait=wait,
                )
                return self
            except BrokerStartError as exc:
                if not exc.port_in_use or attempt == attempts - 1:
                    raise
                self.conf = replace(self.conf, mqtt_port=None, client_port=None).with_ports()
        raise AssertionError("unreachable")

    def wait_ready(self) -> NatsBroker:
        self._child.wait_ready(self._answers, self.start_timeout)
        return self

    def _answers(self) -> bool:
        return answers_mqtt(self.host, self.port)

    def restart(self) -> NatsBroker:
        self.stop()
        return self.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._child.stop(timeout)

    def kill(self) -> None:
        self._child.kill()


class NatsCluster:
    """``size`` NATS nodes clustered on loopback, JetStream clustered; ``nodes[i].url`` is node
    i's MQTT URL. ``start()`` starts them all, then waits until each answers MQTT."""

    def __init__(
        self, size: int = 3, *, workdir: Path | str | None = None, start_timeout: float = 60.0
    ) -> None:
        base = Path(workdir) if workdir is not None else None
        self.nodes = [
            NatsBroker(
                conf,
                workdir=base / conf.server_name if base is not None else None,
                start_timeout=start_timeout,
            )
            for conf in nats_cluster(size)
        ]

    def start(self) -> NatsCluster:
        try:
            for node in self.nodes:
                node.start(wait=False)
            for node in self.nodes:
                node.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
