"""Reading the telemetry tables: the per-version health figures a rollout gates on and
``modelcast status`` shows, the devices that reported an event, each device's latest sample.

Read by the coordinator's poller (rollouts) and by ``modelcast status`` from another process
(WAL mode: readers never block the writer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .db import TELEMETRY_TABLES, Store

ACTIVATION_FAILED = "activation-failed"

#: An activation failure that names a model version (the health figures count those).
_FAILURE_EVENTS = f"event = '{ACTIVATION_FAILED}' AND model IS NOT NULL AND version IS NOT NULL"


#: Each device's latest sample: the devices of the fleet one after the other by a seek each (a
#: loose index scan of ``metrics_latest``), then that device's row with the greatest ``ts``.
_LATEST_SQL = (
    "WITH RECURSIVE d(device) AS ("
    "SELECT min(device) FROM metrics WHERE fleet = :fleet UNION ALL "
    "SELECT (SELECT min(device) FROM metrics WHERE fleet = :fleet AND device > d.device) "
    "FROM d WHERE d.device IS NOT NULL) "
    "SELECT m.device, m.ts, m.cpu_pct, m.rss_mb, m.disk_free_mb, m.uptime_s "
    "FROM d JOIN metrics AS m ON m.rowid = (SELECT rowid FROM metrics "
    "WHERE fleet = :fleet AND device = d.device ORDER BY ts DESC LIMIT 1)"
)


#: The health figures' queries, each a row per model version and device over the window
#: (``{}``: the window's condition). Per-model statistics, one pass over the covering index
#: ``model_metrics_health``; a p95 summarizes the latencies of the successful calls only.
_STATS_SQL = (
    "SELECT model, version, device, sum(inferences), sum(errors), "
    "sum(CASE WHEN latency_p95_ms IS NOT NULL AND inferences > errors "
    "THEN latency_p95_ms * (inferences - errors) END), "
    "sum(CASE WHEN latency_p95_ms IS NOT NULL AND inferences > errors "
    "THEN inferences - errors END) "
    "FROM model_metrics WHERE fleet = ?{} GROUP BY model, version, device"
)
#: The versions each device's samples said were active: the distinct (device, active) pairs
#: first (over ``metrics_window``; a device's ``active`` rarely changes), then their JSON.
_ACTIVE_SQL = (
    "SELECT DISTINCT j.key, j.value, p.device FROM "
    "(SELECT DISTINCT device, active FROM metrics WHERE fleet = ?{}) AS p, "
    "json_each(p.active) AS j WHERE json_valid(p.active) AND j.type = 'integer'"
)
_FAILURES_SQL = (
    "SELECT model, version, device, count(*) FROM events "
    f"WHERE fleet = ? AND {_FAILURE_EVENTS}{{}} GROUP BY model, version, device"
)


class TelemetryReader(Store):
    def _query(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[dict[str, Any]]:
        with self._db.lock:
            return list(self._db.sql.query(sql, params))

    def health(self, fleet: str, since: float | None = None) -> list[dict[str, Any]]:
        """Health of every model version of ``fleet`` seen since ``since`` (device time, ``ts``;
        None: everything retained), sorted by model and version. One dict per version:

        * ``devices``: distinct devices that, in the window, ran it (it was in a metrics
          sample's ``active``), reported inference statistics for it, or failed to activate it;
        * ``inferences``, ``errors``: sums of the per-model statistics of every sample;
        * ``error_rate``: ``errors / inferences`` (an error is a failed inference, so it is
          also counted in ``inferences``); None when there were no inferences: no traffic is
          not the same as no errors;
        * ``latency_p95_ms``: the inference-weighted mean of the per-sample p95 latencies,
          ``sum(p95_i * n_i) / sum(n_i)`` over samples with a p95, where ``n_i`` is the number
          of successful inferences of the sample (``inferences - errors``: the edge measures
          latency on successful calls only, so those are what its p95 summarizes; without
          errors it is simply ``inferences``). None if no sample has a p95. This approximates
          the p95 of all inferences (the true figure needs the raw latencies, which are not
          sent): exact when every sample saw the same latency distribution, and a device with
          a bad tail moves it in proportion to its traffic rather than to its number of
          samples. It is not an upper bound: a short spike in one sample is diluted;
        * ``activation_failures``: ``activation-failed`` events naming that model and version.
        """
        window = "" if since is None else " AND ts >= ?"
        params: list[Any] = [fleet] if since is None else [fleet, since]
        tally = _HealthTally()
        for model, version, device, *sums in self._tuples(_STATS_SQL.format(window), params):
            tally.stats(model, version, device, *sums)
        for model, version, device in self._tuples(_ACTIVE_SQL.format(window), params):
            tally.ran(model, version, device)
        for model, version, device, n in self._tuples(_FAILURES_SQL.format(window), params):
            tally.failures(model, version, device, n)
        return tally.rows()

    def _tuples(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Plain tuples: the health queries return a row per device and version."""
        with self._db.lock:
            return self._db.sql.conn.execute(sql, params).fetchall()

    def event_devices(
        self, fleet: str, event: str, model: str, version: int | None, since: float
    ) -> set[str]:
        """Devices that reported ``event`` for ``model@version`` since ``since`` (device time):
        the state topic keeps only each device's latest state, events keep them all."""
        rows = self._query(
            "SELECT DISTINCT device FROM events WHERE fleet = ? AND event = ? AND model = ? "
            "AND version IS ? AND ts >= ?",
            [fleet, event, model, version, since],
        )
        return {r["device"] for r in rows}

    def last_updates(self, fleet: str) -> dict[str, dict[str, Any]]:
        """Per device, its latest ``verified`` event that says what the update cost: ``model``,
        ``version`` and ``cost`` (``0.3 MB of 86.6 MB (delta from m@1)``)."""
        rows = self._query(
            "SELECT device, max(ts) AS ts, model, version, detail FROM events "
            "WHERE fleet = ? AND event = 'verified' AND detail IS NOT NULL GROUP BY device",
            [fleet],
        )
        return {
            r["device"]: {"model": r["model"], "version": r["version"], "cost": r["detail"]}
            for r in rows
        }

    def latest_metrics(self, fleet: str) -> dict[str, dict[str, Any]]:
        """Per device, its sample with the latest ``ts``: ``ts``, ``cpu_pct``, ``rss_mb``,
        ``disk_free_mb``, ``uptime_s``. One index seek per device (the devices are walked in
        ``metrics_latest`` order, skipping from one to the next), not a pass over every sample:
        at 10,000 devices of 60 samples, 50 ms instead of 140."""
        rows = self._query(_LATEST_SQL, {"fleet": fleet})
        return {
            r["device"]: {k: r[k] for k in ("ts", "cpu_pct", "rss_mb", "disk_free_mb", "uptime_s")}
            for r in rows
        }

    def drift_samples(
        self, fleet: str, since: float | None = None, device: str | None = None
    ) -> list[dict[str, Any]]:
        """The drift samples of ``fleet`` since ``since`` (device time; None: all retained),
        of one device or all, in no particular order (``coordinator.drift`` scores them)."""
        where = "fleet = ?"
        params: list[Any] = [fleet]
        if since is not None:
            where, params = f"{where} AND ts >= ?", [*params, since]
        if device is not None:
            where, params = f"{where} AND device = ?", [*params, device]
        columns = (
            "device, ts, model, version, variant, count, cos_mean, cos_var, n_directions, "
            "n_bins, bins, proj_mean, epsilon"
        )
        return self._query(f"SELECT {columns} FROM drift WHERE {where}", params)

    def count(self, table: str, fleet: str | None = None) -> int:
        """Rows of one of the telemetry tables (of ``fleet``, or all)."""
        if table not in TELEMETRY_TABLES:
            raise ValueError(f"no telemetry table {table!r}")
        where = "" if fleet is None else " WHERE fleet = ?"
        params = [] if fleet is None else [fleet]
        rows = self._query(f"SELECT count(*) AS n FROM {table}{where}", params)
        return int(rows[0]["n"])


class _HealthTally:
    """The health figures of each model version, summed from per-device rows."""

    def __init__(self) -> None:
        self._out: dict[tuple[str, int], dict[str, Any]] = {}
        self._devices: dict[tuple[str, int], set[str]] = {}  # that ran each version
        self._p95: dict[tuple[str, int], list[float]] = {}  # sum of p95 * n, sum of n

    def _row(self, model: str, version: int, device: str) -> dict[str, Any]:
        """The health dict of ``model@version`` (made, all zero, if new), ``device`` counted."""
        key = (model, int(version))
        self._devices.setdefault(key, set()).add(device)
        if key not in self._out:
            self._out[key] = {
                "model": model,
                "version": int(version),
                "devices": 0,
                "inferences": 0,
                "errors": 0,
                "error_rate": None,
                "latency_p95_ms": None,
                "activation_failures": 0,
            }
        return self._out[key]

    def stats(self, model: str, version: int, device: str, *sums: Any) -> None:
        inferences, errors, p95_sum, p95_weight = sums
        h = self._row(model, version, device)
        h["inferences"] += int(inferences or 0)
        h["errors"] += int(errors or 0)
        if p95_weight:
            acc = self._p95.setdefault((model, int(version)), [0.0, 0.0])
            acc[0] += float(p95_sum)
            acc[1] += float(p95_weight)

    def ran(self, model: str, version: int, device: str) -> None:
        self._row(model, version, device)

    def failures(self, model: str, version: int, device: str, n: int) -> None:
        self._row(model, version, device)["activation_failures"] += int(n)

    def rows(self) -> list[dict[str, Any]]:
        for key, h in self._out.items():
            h["devices"] = len(self._devices[key])
            if h["inferences"]:
                h["error_rate"] = h["errors"] / h["inferences"]
            if key in self._p95:
                total, weight = self._p95[key]
                h["latency_p95_ms"] = total / weight
        return [self._out[key] for key in sorted(self._out)]
