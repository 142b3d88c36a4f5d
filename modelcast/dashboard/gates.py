"""Each gate of a rollout, its value against its threshold: pure, from a rollout report
(``modelcast rollout status --json``) and the health of the new and base versions.

The coordinator reads the gates once a stage's soak is over (``coordinator.rollout_plan``) and
keeps that reading (``last_gates``); while a stage soaks, the dashboard reads the same figures
since the soak began, so the operator sees where the numbers stand before the verdict. The
comparisons are the rollout plan's: activation failures over a stage's devices against
``max_failure_rate``; the error rate against the base's plus ``max_error_rate``; the p95 against
``max_p95_ms`` and against ``max_p95_ratio`` times the base's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PASS, FAIL, WAITING = "pass", "fail", "no data"


@dataclass(frozen=True)
class GateRow:
    gate: str
    threshold: str
    value: str
    verdict: str  # PASS, FAIL or WAITING


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def gate_rows(
    gates: Mapping[str, Any],
    reading: Mapping[str, Any] | None,
) -> list[GateRow]:
    """The gates set in ``gates`` (``max_failure_rate`` always is), read against ``reading``:
    ``{"devices", "activation_failures", "new": health, "base": health}`` (the report's
    ``last_gates`` or a live reading; any part may be missing)."""
    reading = reading or {}
    new = reading.get("new") or {}
    base = reading.get("base") or {}
    rows = [_failures(gates["max_failure_rate"], reading)]
    if gates.get("max_error_rate") is not None:
        rows.append(_error_rate(float(gates["max_error_rate"]), new, base))
    if gates.get("max_p95_ms") is not None:
        limit = float(gates["max_p95_ms"])
        p95 = new.get("latency_p95_ms")
        verdict = WAITING if p95 is None else (FAIL if p95 > limit else PASS)
        rows.append(GateRow("p95 latency", f"<= {limit:g} ms", _ms(p95), verdict))
    if gates.get("max_p95_ratio") is not None:
        rows.append(_p95_ratio(float(gates["max_p95_ratio"]), new, base))
    if gates.get("max_drift") is not None:
        rows.append(_drift(float(gates["max_drift"]), new, base))
    return rows


def _drift(limit: float, new: Mapping[str, Any], base: Mapping[str, Any]) -> GateRow:
    """The input drift gate (docs/DRIFT.md): read at the soak's end (a live reading has none)."""
    base_score = base.get("drift_score")
    allowed = (1.0 if base_score is None else float(base_score)) + limit
    shown = "none: 1" if base_score is None else f"{base_score:.2f}"
    threshold = f"<= {allowed:.2f} (base {shown} + {limit:g})"
    score = new.get("drift_score")
    if score is None:
        return GateRow("input drift", threshold, "-", WAITING)
    return GateRow("input drift", threshold, f"{score:.2f}", FAIL if score > allowed else PASS)


def _failures(limit: float, reading: Mapping[str, Any]) -> GateRow:
    devices, failed = reading.get("devices"), reading.get("activation_failures")
    if not devices or failed is None:
        return GateRow("activation failures", f"<= {limit:.0%}", "-", WAITING)
    rate = failed / devices
    verdict = FAIL if rate > limit else PASS
    return GateRow("activation failures", f"<= {limit:.0%}", f"{failed} of {devices}", verdict)


def _error_rate(limit: float, new: Mapping[str, Any], base: Mapping[str, Any]) -> GateRow:
    allowed = (
        base.get("error_rate") or 0.0
    ) + limit  # no base figure counts as 0, as the plan has it
    base_rate = base.get("error_rate")
    threshold = (
        f"<= {allowed:.2%} (base {'none' if base_rate is None else _pct(base_rate)} + {limit:.2%})"
    )
    rate = new.get("error_rate")
    if rate is None:
        return GateRow("error rate", threshold, "-", WAITING)
    inferences = new.get("inferences") or 0
    value = f"{rate:.2%} of {inferences} inferences"
    return GateRow("error rate", threshold, value, FAIL if rate > allowed else PASS)


def _p95_ratio(limit: float, new: Mapping[str, Any], base: Mapping[str, Any]) -> GateRow:
    p95, base_p95 = new.get("latency_p95_ms"), base.get("latency_p95_ms")
    threshold = f"<= {limit:g} x base {_ms(base_p95)}"
    if p95 is None or base_p95 is None:
        return GateRow("p95 vs base", threshold, _ms(p95), WAITING)
    ratio = p95 / base_p95 if base_p95 else float("inf")
    verdict = FAIL if p95 > limit * base_p95 else PASS
    return GateRow("p95 vs base", threshold, f"{_ms(p95)} ({ratio:.2f} x)", verdict)


def live_reading(report: Mapping[str, Any], health: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A reading of a soaking rollout's gates now: the health of its new and base versions
    since the soak began (``health`` read since then), with the stage's device counts."""
    if report.get("soak_started") is None or report["state"] not in ("running", "paused"):
        return None
    by_version = {(h["model"], h["version"]): h for h in health}
    stage = report["stage"]
    members = [d for d in report["devices"].values() if d["stage"] is not None]
    return {
        "stage": stage,
        "devices": len(members),
        "activation_failures": sum(1 for d in members if d["state"] == "failed"),
        "new": by_version.get((report["model"], report["version"])) or {},
        "base": by_version.get((report["model"], report["base"])) or {},
    }
