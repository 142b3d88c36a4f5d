"""``python -m bench``: modelcast's headline figures, each against a baseline measured in the same
run (the machine may be shared and noisy; a ratio survives that, a bare time does not).

Every run starts its own broker on a free loopback port: Mosquitto (``testkit.local_broker``), or
with ``--broker nats|rabbitmq`` a NATS or RabbitMQ node (``testkit.brokers``), where the default
figures are delivery and fan-out. It makes its own keys, fleets and model files in a temporary
directory, and removes them after (``--keep`` keeps them, with every process's log). Progress
goes to stderr, the table to stdout.
See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from runtime.broker_kinds import BROKER_KINDS

from .common import Bench, Progress

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_MISSED = 3


@dataclass(frozen=True)
class Figure:
    name: str
    module: str
    quick: bool  # part of --quick
    help: str


FIGURES = (
    Figure("delivery", "bench.delivery", True, "delivery_ratio: modelcast vs plain paho"),
    Figure("fanout", "bench.fanout", True, "fanout_publish_ratio: bytes published for N edges"),
    Figure("flaky", "bench.flaky", True, "flaky_wire_ratio: bytes on a link cut every 0.5-3 s"),
    Figure("rss", "bench.rss", True, "edge_rss_growth_mb: edge memory while receiving"),
    Figure("telemetry", "bench.telemetry", True, "telemetry_samples_per_s, telemetry_raw_ratio"),
    Figure("idle", "bench.idle", True, "edge_idle_rss_mb, edge_idle_cpu_pct"),
    Figure("halfopen", "bench.halfopen", True, "half_open_detect_s (reported)"),
    Figure("verify", "bench.verify", True, "verify_ms_per_mb, verify_sha256_ratio (reported)"),
    Figure("fleet", "bench.fleet", False, "fleet_*: 1000 simulated devices (docs/SCALE.md)"),
    Figure("drift", "bench.drift", True, "drift_overhead_pct: the drift sketch per inference"),
    Figure("updates", "bench.updates", True, "update_bytes_*: what an update of MiniLM costs"),
    Figure("chunk_sweep", "bench.chunk_sweep", False, "throughput vs chunk size (chart data)"),
    Figure("cut_sweep", "bench.cut_sweep", False, "bytes on link vs cut frequency (chart data)"),
)
BY_NAME = {f.name: f for f in FIGURES}
#: what ``--broker nats|rabbitmq`` measures unless ``--only`` says otherwise
OTHER_BROKER_FIGURES = ("delivery", "fanout")


@dataclass(frozen=True)
class Target:
    op: str  # ">=" or "<="
    value: float
    unit: str = ""

    def met(self, x: float) -> bool:
        return x >= self.value if self.op == ">=" else x <= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}{self.unit}"


#: (key, label, target or None, unit) in table order
ROWS: tuple[tuple[str, str, Target | None, str], ...] = (
    ("delivery_ratio", "delivery throughput / plain paho", Target(">=", 0.6), ""),
    ("delivery_first_chunk_ms", "deploy to the first chunk on the wire", None, " ms"),
    ("fanout_publish_ratio", "bytes published for N edges / size", Target("<=", 1.5), ""),
    ("flaky_wire_ratio", "bytes on a cut link / size", Target("<=", 1.3), ""),
    ("edge_rss_growth_mb", "edge RSS growth while receiving", Target("<=", 64, " MB"), " MB"),
    ("telemetry_samples_per_s", "telemetry samples stored per s", None, "/s"),
    ("telemetry_raw_ratio", "telemetry stored / plain paho received", Target(">=", 0.5), ""),
    ("edge_idle_rss_mb", "idle edge RSS", None, " MB"),
    ("edge_idle_cpu_pct", "idle edge CPU", None, " %"),
    ("half_open_detect_s", "half-open link detected after", None, " s"),
    ("verify_ms_per_mb", "chunk verification per MB", None, " ms"),
    ("verify_sha256_ratio", "chunk verification / sha256 alone", None, ""),
    ("fleet_devices", "simulated devices", Target(">=", 1000), ""),
    ("fleet_delivery_ratio", "fleet delivery / plain paho fan-out", Target(">=", 0.5), ""),
    ("fleet_publish_ratio", "bytes published for the fleet / size", Target("<=", 1.1), ""),
    ("fleet_telemetry_loss", "telemetry lost: 1 - stored / sent", Target("<=", 0), ""),
    ("fleet_status_ms", "modelcast status at the fleet's size", Target("<=", 1000, " ms"), " ms"),
    ("fleet_dashboard_ms", "dashboard fleet page, all devices", Target("<=", 1000, " ms"), " ms"),
    ("fleet_rollout_stage_error", "5 % stage: |selected - 5 %| / devices", Target("<=", 0.02), ""),
    ("fleet_coordinator_rss_mb", "coordinator (bench) process RSS", None, " MB"),
    ("fleet_broker_rss_mb", "broker peak RSS, delivering to the fleet", None, " MB"),
    *(
        (f"fleet_idle_10k_{who}_{what}", f"10k idle devices: {who} {label}", None, unit)
        for who in ("coordinator", "simulator", "broker")
        for what, label, unit in (("rss_mb", "RSS", " MB"), ("cpu_pct", "CPU", " %"))
    ),
    ("fleet_idle_10k_status_ms", "10k idle devices: modelcast status", None, " ms"),
    ("drift_overhead_pct", "drift sketch / MiniLM inference", Target("<=", 2, " %"), " %"),
    ("drift_overhead_paired_pct", "(with - without) / without, per text", None, " %"),
    ("drift_update_us", "drift sketch counting one vector", None, " us"),
    ("drift_sample_bytes", "largest drift sample", Target("<=", 2048, " B"), " B"),
    ("update_bytes_first", "MiniLM first install: bytes / size", Target("<=", 1.0), ""),
    ("update_bytes_same", "same weights, new release: bytes / size", Target("<=", 0.02), ""),
    ("update_bytes_head", "last layer changed: bytes / size", Target("<=", 0.05), ""),
    ("update_bytes_full", "every weight changed: bytes / size", Target("<=", 0.65), ""),
    ("update_apply_ratio", "delta apply / writing the same bytes", Target("<=", 2.0), ""),
    ("update_apply_rss_growth_mb", "RSS growth applying a delta", Target("<=", 64, " MB"), " MB"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="modelcast benchmarks: each figure is a ratio to a baseline measured in the "
        "same run, on a broker this run starts (--broker). Figures: "
        + "; ".join(f"{f.name} ({f.help})" for f in FIGURES),
        epilog="exit codes: 0 all measured (and, with --strict, every target met), 1 a figure "
        "could not be measured, 2 bad usage, 3 --strict and a target missed",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes, no sweeps; finishes within 150 s on 2 cores",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="run only these figures (names above); sweeps run only when named or in a full run",
    )
    parser.add_argument(
        "--size-mb",
        type=float,
        default=None,
        metavar="MB",
        help="override the model size of every figure that has one (e.g. 4 for a smoke test)",
    )
    parser.add_argument(
        "--broker",
        choices=BROKER_KINDS,
        default="mosquitto",
        help="the broker this run starts (every baseline runs on the same one); on nats and "
        "rabbitmq the default figures are delivery and fanout",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    args.figures = _choose_figures(parser, args)
    if args.size_mb is not None and args.size_mb <= 0:
        parser.error("--size-mb must be positive")
    return args


def _choose_figures(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Figure]:
    """``--only``'s figures; else the quick ones (all with the sweeps in a full run), or on
    another broker than Mosquitto delivery and fan-out."""
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            parser.error(
                f"unknown figure(s) {', '.join(unknown)}; choose from " + ", ".join(BY_NAME)
            )
        return [BY_NAME[n] for n in names]
    if args.broker != "mosquitto":
        return [BY_NAME[n] for n in OTHER_BROKER_FIGURES]
    return [f for f in FIGURES if f.quick or not args.quick]


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    from broker_admin.mosquitto import find_mosquitto

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    mosquitto = find_mosquitto()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gb": round(mem_gb, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paho_mqtt": version("paho-mqtt"),
        "mosquitto": _first_line([mosquitto, "-h"]) if mosquitto else "?",
        "loadavg_start": list(os.getloadavg()),
    }


def _format(value: Any, unit: str) -> str:
    if isinstance(value, float) and abs(value) < 100:
        return f"{value:.3g}{unit}" if abs(value) < 10 else f"{value:.1f}{unit}"
    return f"{value}{unit}"


def table(results: dict[str, Any], errors: dict[str, str]) -> tuple[str, bool]:
    lines = [f"{'figure':<26} {'what':<40} {'value':>10}  {'target':<10} result"]
    lines.append("-" * len(lines[0]))
    all_met = True
    for key, label, target, unit in ROWS:
        if key not in results:
            continue
        value = results[key]
        verdict = "(reported)"
        if target is not None:
            ok = target.met(value)
            all_met &= ok
            verdict = "PASS" if ok else "MISS"
        lines.append(
            f"{key:<26} {label:<40} {_format(value, unit):>10}  "
            f"{str(target) if target else '-':<10} {verdict}"
        )
    for name, message in errors.items():
        all_met = False
        lines.append(f"{name:<26} ERROR: {message}")
    return "\n".join(lines), all_met


@dataclass
class Outcome:
    """What a run measured: figures (numbers), their details (dicts), and the figures that
    failed (their error message)."""

    results: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def run_figures(b: Bench, figures: list[Figure], progress: Progress) -> Outcome:
    outcome = Outcome()
    for figure in figures:
        run: Callable[[Bench], dict[str, Any]] = import_module(figure.module).run
        t0 = time.monotonic()
        try:
            out = run(b)
        except Exception as exc:  # one figure failing must not lose the others
            logging.exception("figure %s failed", figure.name)
            outcome.errors[figure.name] = f"{type(exc).__name__}: {exc}"[:300]
            progress(f"{figure.name}: FAILED: {outcome.errors[figure.name]}")
            traceback.print_exc(file=sys.stderr)
            continue
        took = time.monotonic() - t0
        for key, value in out.items():
            (outcome.details if isinstance(value, dict) else outcome.results)[key] = value
        outcome.details.setdefault("seconds", {})[figure.name] = round(took, 1)
        progress(f"{figure.name}: done in {took:.1f} s")
    return outcome


def json_document(
    args: argparse.Namespace,
    outcome: Outcome,
    info: dict[str, Any],
    started: float,
    duration: float,
) -> dict[str, Any]:
    results = outcome.results
    return {
        **results,
        "targets": {
            key: {"target": str(t), "met": t.met(results[key])}
            for key, _, t, _ in ROWS
            if t is not None and key in results
        },
        "details": outcome.details,
        "errors": outcome.errors,
        "mode": "quick" if args.quick else "full",
        "size_mb_override": args.size_mb,
        "broker": args.broker,
        "figures": [f.name for f in args.figures],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(duration, 1),
        "machine": info,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = Progress(quiet=args.quiet)
    started = time.time()
    info = machine()
    with Bench(
        quick=args.quick,
        size_mb=args.size_mb,
        progress=progress,
        keep=args.keep,
        broker_kind=args.broker,
    ) as b:
        logging.basicConfig(
            filename=str(b.dir("logs") / "bench.log"),
            level=logging.INFO,
            format="%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s",
        )
        progress(
            f"{'quick' if args.quick else 'full'} run of {', '.join(f.name for f in args.figures)}"
            f" on {args.broker} {b.url}; work dir {b.workdir}"
        )
        outcome = run_figures(b, args.figures, progress)
        if args.keep:
            progress(f"work dir kept: {b.workdir}")
    info["loadavg_end"] = list(os.getloadavg())
    text, all_met = table(outcome.results, outcome.errors)
    print(text)
    duration = time.time() - started
    print(
        f"\n{'quick' if args.quick else 'full'} run: {duration:.0f} s; "
        f"load average {info['loadavg_start'][0]:.1f} -> {info['loadavg_end'][0]:.1f} "
        f"on {info['nproc']} cores"
    )
    if args.json is not None:
        doc = json_document(args, outcome, info, started, duration)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
        progress(f"wrote {args.json}")
    if outcome.errors:
        return EXIT_ERROR
    if args.strict and not all_met:
        return EXIT_MISSED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
