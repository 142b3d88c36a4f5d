"""``modelcast edge`` as a child process, for the tests and the benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cli_process import CliProcess


@dataclass(frozen=True)
class EdgeFlags:
    """How the harness runs an edge. The defaults suit tests: every log line, a free port for
    the local inference endpoint (several edges share a machine), a metrics sample every
    second. A benchmark asks for INFO logs, no endpoint and the agent's own interval (None)."""

    log_level: str = "DEBUG"
    http: str = "127.0.0.1:0"
    telemetry_interval: float | None = 1.0

    def args(self) -> list[str]:
        interval = self.telemetry_interval
        every = [] if interval is None else ["--telemetry-interval", f"{interval:g}"]
        return ["--http", self.http, *every]


TEST_FLAGS = EdgeFlags()


class EdgeProcess(CliProcess):
    """``python -m modelcast.cli edge`` for one device, logging to ``log_dir/DEVICE.log``;
    ``extra`` flags go last. Not running until ``start()``."""

    def __init__(
        self,
        device: str,
        *,
        broker_url: str,
        data: Path,
        trust: Path,
        fleet: str,
        log_dir: Path,
        extra: tuple[str, ...] = (),
        flags: EdgeFlags = TEST_FLAGS,
        preexec_fn: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        identity = ["--broker", broker_url, "--id", device, "--data", str(data)]
        super().__init__(
            ["edge", *identity, "--trust", str(trust), "--fleet", fleet, *flags.args(), *extra],
            log_path=log_dir / f"{device}.log",
            log_level=flags.log_level,
            name=f"edge {device}",
            preexec_fn=preexec_fn,
            env=env,
        )
        self.device = device
        self.data = data

    def model_path(self, name: str, version: int) -> Path:
        """Where the edge keeps version ``version`` of model ``name`` once it has it."""
        return self.data / "models" / name / str(version) / "model.onnx"
