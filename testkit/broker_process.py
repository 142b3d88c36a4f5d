"""One broker child process (NATS, RabbitMQ): spawned in its own session with its output in a log
file, ready once its MQTT port answers a CONNECT, stopped by signalling its whole process group.

``testkit.local_broker`` keeps its own Mosquitto lifecycle; this is the same job for brokers whose
start script forks helpers (RabbitMQ's shell wrapper runs the Erlang VM as a child), so every
signal goes to the group rather than one pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from runtime.urls import format_broker_url

from .errors import BrokerStartError

_POLL_S = 0.05


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of ``proc`` (its own session) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class BrokerChild:
    """The process of one broker. ``what`` names it in errors; ``log_path`` receives its output.

    A process still running when the interpreter exits (a test crashed) is killed then, through a
    ``weakref.finalize`` per process: no module-level registry.
    """

    def __init__(self, what: str, log_path: Path) -> None:
        self.what = what
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., BrokerChild] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def spawn(
        self,
        argv: Sequence[str],
        *,
        ready: Callable[[], bool],
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        wait: bool = True,
    ) -> None:
        """Start ``argv`` and (``wait``) return once ``ready()``; BrokerStartError (with the
        log's tail) if it exits first or is not ready within ``timeout`` seconds."""
        if self.running:
            raise RuntimeError(f"{self.what} already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,  # its own group: a Ctrl-C of the tests is not its
            )
        self._proc = proc
        self._finalizer = weakref.finalize(self, _kill_group, proc)
        if wait:
            self.wait_ready(ready, timeout)

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        """Return once ``ready()``; BrokerStartError if the process exits or is not ready
        within ``timeout`` seconds (it is killed then)."""
        proc = self._proc
        if proc is None:
            raise RuntimeError(f"{self.what} is not started")
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                self._forget()
                tail = self.log_text()[-3000:]
                raise BrokerStartError(
                    f"{self.what} exited with {proc.returncode}; log:\n{tail}",
                    port_in_use="address already in use" in tail.lower()
                    or "eaddrinuse" in tail.lower(),
                )
            if time.monotonic() >= deadline:
                self.kill()
                raise BrokerStartError(
                    f"{self.what} was not ready within {timeout}s; log:\n" + self.log_text()[-3000:]
                )
            time.sleep(_POLL_S)  # a port has no event to wait on: this is the poll interval

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL if it has not exited within ``timeout`` s."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
            # helpers of the group (RabbitMQ's VM under its shell script) go with it
            _kill_group(proc)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._forget()

    def kill(self) -> None:
        """SIGKILL to the group: the broker vanishes without closing connections (faults)."""
        if self._proc is not None:
            _kill_group(self._proc)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._forget()

    def _forget(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = None
        self._proc = None


class ChildBroker:
    """What the NATS and RabbitMQ launchers share: a work directory (a temp one removed by
    ``close()`` unless given), the MQTT address, the context manager. A subclass sets ``port``
    and implements ``start()`` and ``stop()``; its main process is ``self._child``."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path | str | None, prefix: str) -> None:
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=prefix))
        )
        self._child: BrokerChild  # set by the subclass

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return format_broker_url(self.host, self.port)

    @property
    def running(self) -> bool:
        return self._child.running

    @property
    def pid(self) -> int | None:
        return self._child.pid

    def log_text(self) -> str:
        return self._child.log_text()

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop, and remove the work directory if this object made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"{type(self).__name__}({self._child.what}, {self.url}, {state})"
