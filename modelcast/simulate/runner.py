"""The parent of a simulation: ``SimulatedFleet`` starts the worker processes (``worker``),
gathers their reports into ``FleetSnapshot``s, and stops them.

Workers are *spawned*, not forked: the parent may be a process with threads (a benchmark runs
a coordinator in it), which a fork would copy in whatever state their locks were. The parent
raises its descriptor limit first (children inherit it) and refuses a split that would not fit.

A broker that refuses the fleet stops the simulation: once a device failed ``REFUSED_AFTER``
connects in a row without ever connecting, ``poll`` raises ``SimulationError`` naming the limit
that was hit, as far as a client can tell it (see ``refusal_message``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType

from .config import REFUSED_AFTER, SimConfig
from .errors import SimulationError
from .fdlimit import check_per_process, raise_soft_limit
from .report import FleetSnapshot, WorkerReport
from .worker import STOP, STOP_S, run_worker

#: seconds a worker may take to start (spawned: a fresh interpreter imports the project)
START_S = 60.0


class SimulatedFleet:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        limit = raise_soft_limit()
        check_per_process(config.devices, config.worker_count, disk=bool(config.disk), limit=limit)
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[BaseProcess, Connection]] = []
        self._reports: dict[int, WorkerReport] = {}
        self._started = time.monotonic()
        self._stopped = False

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> SimulatedFleet:
        self._started = time.monotonic()
        for plan in self.config.plans():
            parent, child = self._context.Pipe()
            process = self._context.Process(
                target=run_worker,
                args=(plan, child),
                name=f"modelcast-simulate-{plan.worker}",
                daemon=True,
            )
            process.start()
            child.close()
            self._workers.append((process, parent))
        return self

    def __enter__(self) -> SimulatedFleet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p, _ in self._workers if p.pid is not None]

    # --- reports -------------------------------------------------------------------------
    def snapshot(self) -> FleetSnapshot:
        return FleetSnapshot.of(self.config.devices, self._started, self._reports.values())

    def poll(self, timeout: float) -> FleetSnapshot:
        """Take the reports that arrive within ``timeout``; ``SimulationError`` if a worker
        died, or if the broker refuses devices."""
        deadline = time.monotonic() + timeout
        while True:
            self._receive(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                break
        self._check()
        return self.snapshot()

    def wait_for(
        self,
        predicate: Callable[[FleetSnapshot], bool],
        timeout: float,
        *,
        every: Callable[[FleetSnapshot], None] | None = None,
        interval: float = 1.0,
    ) -> FleetSnapshot | None:
        """Poll until ``predicate`` holds (that snapshot) or ``timeout`` passes (None);
        ``every`` sees a snapshot once per ``interval``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.poll(min(interval, max(0.0, deadline - time.monotonic())))
            if every is not None:
                every(snap)
            if predicate(snap):
                return snap
        return None

    def _receive(self, timeout: float) -> None:
        conns = [c for p, c in self._workers if not c.closed]
        for conn in wait(conns, timeout):
            assert isinstance(conn, Connection)
            try:
                while conn.poll():
                    report = conn.recv()
                    self._reports[report.worker] = report
            except (EOFError, OSError):
                conn.close()

    def _check(self) -> None:
        for process, _ in self._workers:
            if process.exitcode is not None and not self._stopped:
                raise SimulationError(
                    f"worker process {process.name} exited with code {process.exitcode} "
                    "(its messages are above)"
                )
        snap = self.snapshot()
        refused = sum(r.refused_devices for r in snap.workers)
        if refused:
            raise SimulationError(refusal_message(snap, refused, self.config.broker_url))

    # --- stopping ------------------------------------------------------------------------
    def stop(self) -> FleetSnapshot:
        """Stop every worker (each device says ``online: false`` and disconnects) and return
        the final snapshot."""
        if self._stopped:
            return self.snapshot()
        self._stopped = True
        for process, conn in self._workers:
            if process.is_alive():
                with contextlib.suppress(OSError):  # a worker gone already
                    conn.send(STOP)
        deadline = time.monotonic() + STOP_S + 5.0
        while time.monotonic() < deadline and any(p.is_alive() for p, _ in self._workers):
            self._receive(0.1)
        self._receive(0.0)
        for process, conn in self._workers:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        return self.snapshot()


def refusal_message(snap: FleetSnapshot, refused: int, url: str) -> str:
    """Why ``refused`` devices could not connect, with the limit a client can tell was hit."""
    reasons = snap.refused
    main = max(reasons, key=lambda r: reasons[r])
    head = (
        f"{refused} of {snap.devices} devices could not connect to {url} "
        f"({REFUSED_AFTER} attempts each; {snap.ever_online} did): "
    )
    if main == "refused":
        why = "nothing accepts connections there (connection refused): is the broker running?"
    elif main == "closed-before-connack":
        why = (
            "the broker accepted the connections and closed them before answering: it is at "
            "a connection limit. Mosquitto's max_connections (a listener option; -1 is "
            "unlimited, as in broker_config/large.conf), or its own open-file limit (each "
            "client takes a descriptor: raise `ulimit -n` for the mosquitto process). Its log "
            "says 'max_connections exceeded' for the first; the second may leave no line: "
            "compare the devices that did connect with `Max open files` in "
            "/proc/BROKER_PID/limits"
        )
    elif main == "no-connack":
        why = (
            "the broker did not answer in time: overloaded, or its accept queue is full "
            "(lower --connect-rate)"
        )
    elif main == "file-descriptors":
        why = "this machine ran out of file descriptors (RLIMIT_NOFILE; use more --processes)"
    elif main.startswith("connack: "):
        why = f"the broker refused them: {main.removeprefix('connack: ')}"
    else:
        why = f"connecting failed: {main}"
    detail = ", ".join(f"{k}: {v}" for k, v in reasons.items())
    return f"{head}{why} (failed attempts by reason: {detail})"
