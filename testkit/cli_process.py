"""``python -m modelcast.cli ...`` as a child process: what the tests and the benchmarks run
as real processes (edges, a coordinator), with the log, the signals and the /proc readings they
need."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

from .errors import ProcessExited, TestkitError
from .procfs import proc_cpu_s, proc_status_kb

#: the checkout: children run from here, so ``python -m modelcast.cli`` finds the packages
REPO = Path(__file__).resolve().parents[1]
#: how much of the log a ``ProcessExited`` shows
LOG_TAIL = 1500


class CliProcess:
    """One ``python -m modelcast.cli --log-level LEVEL ARGS...`` child, its stdout and stderr
    appended to ``log_path``.

    ``preexec_fn`` runs in the child before ``exec`` (e.g. ``resource.setrlimit``); ``env``
    adds to (or overrides) the inherited environment. ``name`` says which process it is in
    error messages.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        log_path: Path,
        log_level: str = "DEBUG",
        name: str = "modelcast",
        preexec_fn: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = [sys.executable, "-m", "modelcast.cli", "--log-level", log_level, *args]
        self.log_path = log_path
        self.name = name
        self.preexec_fn = preexec_fn
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                preexec_fn=self.preexec_fn,
            )
        return self

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise ``ProcessExited`` (with the end of the log) unless the process is running."""
        proc = self._started()
        if proc.poll() is not None:
            tail = self.log()[-LOG_TAIL:]
            raise ProcessExited(f"{self.name} exited with {proc.returncode}:\n{tail}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- signals ------------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL, and reap it."""
        proc = self._started()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM, without waiting (``stop`` waits): several processes stop side by side."""
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, SIGKILL after ``grace`` seconds; the exit code (None: never started)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)

    # -- /proc --------------------------------------------------------------------------------
    def rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmRSS")

    def hwm_kb(self) -> int:
        return proc_status_kb(self.pid, "VmHWM")

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def _started(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise TestkitError(f"{self.name} was never started")
        return self.proc
