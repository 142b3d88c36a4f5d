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


class TelemetryReader(Store):
    def _query(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
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
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for r in self._version_stats(window, params):
            h = _health_row(out, r["model"], r["version"])
            h["inferences"] = int(r["inferences"] or 0)
            h["errors"] = int(r["errors"] or 0)
            if h["inferences"]:
                h["error_rate"] = h["errors"] / h["inferences"]
            if r["p95_weight"]:
                h["latency_p95_ms"] = float(r["p95_sum"]) / float(r["p95_weight"])
        for r in self._activation_failures(window, params):
            _health_row(out, r["model"], r["version"])["activation_failures"] = int(r["n"])
        for r in self._version_devices(window, params):
            _health_row(out, r["model"], r["version"])["devices"] = int(r["n"])
        return [out[key] for key in sorted(out)]

    def _version_stats(self, window: str, params: list[Any]) -> list[dict[str, Any]]:
        return self._query(
            "SELECT model, version, sum(inferences) AS inferences, sum(errors) AS errors, "
            # a p95 summarizes the latencies of the successful calls only
            "sum(CASE WHEN latency_p95_ms IS NOT NULL AND inferences > errors "
            "THEN latency_p95_ms * (inferences - errors) END) AS p95_sum, "
            "sum(CASE WHEN latency_p95_ms IS NOT NULL AND inferences > errors "
            "THEN inferences - errors END) AS p95_weight "
            f"FROM model_metrics WHERE fleet = ?{window} GROUP BY model, version",
            params,
        )

    def _activation_failures(self, window: str, params: list[Any]) -> list[dict[str, Any]]:
        return self._query(
            "SELECT model, version, count(*) AS n FROM events "
            f"WHERE fleet = ? AND {_FAILURE_EVENTS}{window} GROUP BY model, version",
            params,
        )

    def _version_devices(self, window: str, params: list[Any]) -> list[dict[str, Any]]:
        return self._query(
            "SELECT model, version, count(DISTINCT device) AS n FROM ("
            f"SELECT model, version, device FROM model_metrics WHERE fleet = ?{window} "
            "UNION SELECT j.key, j.value, m.device FROM metrics AS m, json_each(m.active) AS j "
            f"WHERE m.fleet = ?{window.replace('ts', 'm.ts')} "
            "AND json_valid(m.active) AND j.type = 'integer' "
            f"UNION SELECT model, version, device FROM events WHERE fleet = ?{window} "
            f"AND {_FAILURE_EVENTS}"
            ") GROUP BY model, version",
            params * 3,
        )

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
        ``disk_free_mb``, ``uptime_s``."""
        rows = self._query(
            # SQLite: with max(), the bare columns come from the row holding the maximum.
            "SELECT device, max(ts) AS ts, cpu_pct, rss_mb, disk_free_mb, uptime_s "
            "FROM metrics WHERE fleet = ? GROUP BY device",
            [fleet],
        )
        return {
            r["device"]: {k: r[k] for k in ("ts", "cpu_pct", "rss_mb", "disk_free_mb", "uptime_s")}
            for r in rows
        }

    def count(self, table: str, fleet: str | None = None) -> int:
        """Rows of one of the telemetry tables (of ``fleet``, or all)."""
        if table not in TELEMETRY_TABLES:
            raise ValueError(f"no telemetry table {table!r}")
        where = "" if fleet is None else " WHERE fleet = ?"
        params = [] if fleet is None else [fleet]
        rows = self._query(f"SELECT count(*) AS n FROM {table}{where}", params)
        return int(rows[0]["n"])


def _health_row(
    out: dict[tuple[str, int], dict[str, Any]], model: str, version: int
) -> dict[str, Any]:
    """The health dict of ``model@version`` in ``out``, made (all zero) if new."""
    key = (model, int(version))
    if key not in out:
        out[key] = {
            "model": model,
            "version": int(version),
            "devices": 0,
            "inferences": 0,
            "errors": 0,
            "error_rate": None,
            "latency_p95_ms": None,
            "activation_failures": 0,
        }
    return out[key]
