"""Run a throwaway RabbitMQ node with its MQTT plugin on free loopback ports.

The node is private: its own node name, Erlang cookie (``HOME``), Mnesia and log directories, an
``enabled_plugins`` file naming ``rabbitmq_mqtt``, a ``rabbitmq.conf`` binding AMQP and MQTT to
127.0.0.1, its own distribution port and its own ``epmd`` (the Erlang port mapper, started here as
a child on a private port rather than the system-wide daemon Erlang would fork). Nothing under
/etc/rabbitmq or /var/lib/rabbitmq is read or written, and no root is needed.

Starting takes seconds (the Erlang VM boots, then the plugin); ``start()`` waits on the MQTT port.
The configuration is ``broker_admin.rabbitmq_profile``'s development one (anonymous MQTT clients
are ``guest``; offline sessions keep at most 1,000 messages), or any other given as ``conf``
(e.g. the production profile, with a TLS ``ready`` check).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

from broker_admin.rabbitmq_profile import dev_conf, dev_definitions

from .broker_process import BrokerChild, ChildBroker
from .errors import BrokerStartError
from .local_broker import answers_mqtt, free_loopback_port

HOST = "127.0.0.1"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "epmd"


def find_rabbitmq_server() -> str | None:
    """The node's start script (not /usr/sbin's wrapper, which switches to the rabbitmq user
    when run as root), or None when RabbitMQ and Erlang's epmd are not installed."""
    if Path(RABBITMQ_SERVER).exists() and shutil.which(EPMD) is not None:
        return RABBITMQ_SERVER
    return None


class RabbitMQBroker(ChildBroker):
    """A private RabbitMQ node with the MQTT plugin, on 127.0.0.1.

    ``url`` is the MQTT URL. Ports are kept, so ``restart()`` brings the node back where clients
    expect it, with its Mnesia directory (durable queues of persistent sessions, retained
    messages) intact. ``extra_conf`` lines are appended to rabbitmq.conf.
    """

    def __init__(
        self,
        *,
        workdir: Path | str | None = None,
        mqtt_port: int | None = None,
        extra_conf: str = "",
        conf: Callable[[RabbitMQBroker], str] | None = None,
        ready: Callable[[str, int], bool] | None = None,
        start_timeout: float = 90.0,
    ) -> None:
        super().__init__(workdir, "modelcast-rabbitmq-")
        self.extra_conf = extra_conf
        self._conf = conf
        self._ready = ready or answers_mqtt
        self.start_timeout = start_timeout
        self.nodename = f"modelcast-{uuid.uuid4().hex[:8]}@localhost"
        self.mqtt_port = mqtt_port or free_loopback_port()
        self.amqp_port = free_loopback_port()
        self.dist_port = free_loopback_port()
        self.epmd_port = free_loopback_port()
        self._child = BrokerChild(f"rabbitmq {self.nodename}", self.workdir / "rabbitmq.log")
        self._epmd = BrokerChild(f"epmd of {self.nodename}", self.workdir / "epmd.log")

    @property
    def port(self) -> int:
        return self.mqtt_port

    def node_env(self) -> dict[str, str]:
        """The environment that names this node: for the server, and for ``rabbitmqctl`` or
        ``rabbitmq-plugins`` run against it."""
        d = self.workdir
        return {
            **os.environ,
            "HOME": str(d),  # the Erlang cookie lives in $HOME/.erlang.cookie
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_ALLOW_INPUT": "",
        }

    def start(self) -> RabbitMQBroker:
        server = find_rabbitmq_server()
        if server is None:
            raise FileNotFoundError(
                "rabbitmq-server not found; install it with `apt-get install rabbitmq-server` "
                "or run `make setup`"
            )
        self._write_files()
        env = self.node_env()
        if not self._epmd.running:
            self._epmd.spawn(
                [EPMD, "-port", str(self.epmd_port)],
                ready=lambda: answers_tcp(self.epmd_port),
                timeout=10.0,
                env=env,
            )
        try:
            self._child.spawn(
                [server],
                ready=lambda: self._ready(self.host, self.port),
                timeout=self.start_timeout,
                env=env,
                cwd=self.workdir,
            )
        except BrokerStartError:
            self._epmd.stop()
            raise
        return self

    def restart(self) -> RabbitMQBroker:
        self._child.stop(30.0)
        return self.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node (SIGTERM: a clean shutdown takes a few seconds), then its epmd."""
        self._child.stop(timeout)
        self._epmd.stop()

    def kill(self) -> None:
        """SIGKILL the node (its epmd stays, for a restart)."""
        self._child.kill()

    def _write_files(self) -> None:
        d = self.workdir
        d.mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq-env.conf").write_text("")
        (d / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        definitions = d / "definitions.json"
        definitions.write_text(json.dumps(dev_definitions(), indent=1))
        if self._conf is not None:
            text = self._conf(self)
        else:
            text = dev_conf(
                amqp_port=self.amqp_port,
                mqtt_port=self.mqtt_port,
                definitions=definitions,
                host=self.host,
            )
        if self.extra_conf:
            text += self.extra_conf + "\n"
        (d / "rabbitmq.conf").write_text(text)


def answers_tcp(port: int) -> bool:
    """True if something accepts a TCP connection on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False
