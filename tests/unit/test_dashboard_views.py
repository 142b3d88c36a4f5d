"""The pure logic of the pages: a device's health, the fleet's filters, counts and pages, each
gate's value against its threshold, a rollout's stages with their device counts."""

from __future__ import annotations

from modelcast.dashboard.fleet_view import BAD, OFF, OK, WARN, FleetQuery, fleet_view, health
from modelcast.dashboard.gates import FAIL, PASS, WAITING, gate_rows, live_reading
from modelcast.dashboard.releases_page import release_rows
from modelcast.dashboard.rollouts_page import stage_counts
from tests.unit.dashboard_fakes import device, rollout


def test_health_names_the_worst_thing_first() -> None:
    assert health(device("a", state="failed", reason="bad sha"), None) == (BAD, "failed: bad sha")
    assert health(device("a", online=False), None) == (OFF, "offline")
    level, said = health(device("a"), {"inferences": 100, "errors": 9})
    assert level == WARN and said == "errors 9.0%"
    level, said = health(
        device("a", clock_skew=-4000.0, clock_checked=1.8e9, metrics={"disk_free_mb": 100.0}),
        {"inferences": 100, "errors": 1},
    )
    assert level == WARN and said.startswith("clock -1h") and "disk 100 MB free" in said
    assert health(device("a"), {"inferences": 100, "errors": 1}) == (OK, "100 inferences")
    assert health(device("a", online=None), None) == (OK, "no status yet")
    drift = [
        {"model": "m", "version": 2, "drifted": True},
        {"model": "n", "version": 1, "drifted": False},
    ]
    assert health(device("a", drift=drift), None) == (WARN, "input drift m@2")


def test_the_drift_gate_reads_the_scores_of_the_soak() -> None:
    gates = {"max_failure_rate": 0.0, "max_drift": 0.5}
    reading = {"devices": 2, "activation_failures": 0, "new": {"drift_score": 1.8}, "base": {}}
    row = gate_rows(gates, reading)[-1]
    assert (row.gate, row.verdict, row.value) == ("input drift", FAIL, "1.80")
    assert "base none: 1" in row.threshold
    passing = {**reading, "new": {"drift_score": 1.1}, "base": {"drift_score": 0.9}}
    assert gate_rows(gates, passing)[-1].verdict == PASS
    assert gate_rows(gates, {})[-1].verdict == WAITING


def test_filters_counts_and_pages() -> None:
    devices = [
        device(
            f"d{i:02d}",
            active={"m": 1 + i % 2},
            online=i % 3 != 0,
            tags={"site": "a" if i < 5 else "b"},
            state="downloading" if i == 7 else "active",
        )
        for i in range(12)
    ]
    everything = fleet_view(devices, {}, FleetQuery(per=5))
    assert everything.total == 12 and everything.matching == 12 and everything.pages == 3
    assert [r.device["device_id"] for r in everything.rows] == ["d00", "d01", "d02", "d03", "d04"]
    assert everything.by_state == {"active": 11, "downloading": 1}
    assert everything.by_version == {"m@1": 6, "m@2": 6} and everything.online == 8
    third = fleet_view(devices, {}, FleetQuery(page=3, per=5))
    assert [r.device["device_id"] for r in third.rows] == ["d10", "d11"]
    beyond = fleet_view(devices, {}, FleetQuery(page=9, per=5))
    assert [r.device["device_id"] for r in beyond.rows] == ["d10", "d11"]
    query = FleetQuery.from_params({"version": "m@2", "online": "yes", "tag": "site=b"})
    assert [r.device["device_id"] for r in fleet_view(devices, {}, query).rows] == [
        "d05",
        "d07",
        "d11",
    ]
    assert fleet_view(devices, {}, FleetQuery(text="D1")).matching == 2
    assert fleet_view(devices, {}, FleetQuery(state="downloading")).matching == 1
    assert fleet_view(devices, {}, FleetQuery(problems=True)).matching == 4  # offline ones


def test_queries_read_from_parameters_ignore_what_they_do_not_know() -> None:
    query = FleetQuery.from_params(
        {"page": "x", "sort": "drop table", "online": "maybe", "per": "7"}
    )
    assert query == FleetQuery()
    query = FleetQuery.from_params({"q": " d1 ", "problems": "1", "sort": "health", "page": "2"})
    assert query.params(page=None) == {"q": "d1", "problems": "1", "sort": "health"}


def test_sorting_by_last_seen_and_health() -> None:
    devices = [
        device("a", last_seen=10.0),
        device("b", last_seen=30.0, online=False),
        device("c", last_seen=None, state="failed"),
    ]
    seen = fleet_view(devices, {}, FleetQuery(sort="last-seen"))
    assert [r.device["device_id"] for r in seen.rows] == ["b", "a", "c"]
    worst = fleet_view(devices, {}, FleetQuery(sort="health"))
    assert [r.device["device_id"] for r in worst.rows] == ["c", "b", "a"]


def test_gates_against_their_thresholds() -> None:
    gates = {
        "max_failure_rate": 0.1,
        "max_error_rate": 0.01,
        "max_p95_ms": 50.0,
        "max_p95_ratio": 1.5,
    }
    reading = {
        "devices": 10,
        "activation_failures": 2,
        "new": {"error_rate": 0.03, "inferences": 400, "latency_p95_ms": 40.0},
        "base": {"error_rate": 0.01, "latency_p95_ms": 20.0},
    }
    rows = {r.gate: r for r in gate_rows(gates, reading)}
    assert (
        rows["activation failures"].value == "2 of 10"
        and rows["activation failures"].verdict == FAIL
    )
    assert rows["error rate"].threshold == "<= 2.00% (base 1.00% + 1.00%)"
    assert rows["error rate"].verdict == FAIL and "3.00% of 400" in rows["error rate"].value
    assert rows["p95 latency"].verdict == PASS
    assert rows["p95 vs base"].verdict == FAIL and "(2.00 x)" in rows["p95 vs base"].value
    waiting = gate_rows({"max_failure_rate": 0.0, "max_error_rate": 0.01}, None)
    assert [r.verdict for r in waiting] == [WAITING, WAITING]


def test_a_live_reading_only_while_a_stage_soaks() -> None:
    health = [
        {"model": "m", "version": 2, "error_rate": 0.5},
        {"model": "m", "version": 1, "error_rate": 0.0},
    ]
    assert live_reading(rollout(), health) is None
    soaking = rollout(soak_started=950.0)
    reading = live_reading(soaking, health)
    assert reading is not None and reading["devices"] == 1
    assert reading["new"]["error_rate"] == 0.5 and reading["base"]["error_rate"] == 0.0
    assert live_reading(rollout("halted", soak_started=950.0), health) is None


def test_stage_counts_and_who_runs_each_release() -> None:
    per_stage = stage_counts(rollout())
    assert per_stage[0] == {"updated": 1} and per_stage[1] == {} and per_stage[2] == {"waiting": 1}
    releases = [
        {"model": "m", "version": 2, "variant": "int8", "release_id": "aa", "size": 10},
        {"model": "m", "version": 2, "variant": "fp32", "release_id": "bb", "size": 10},
        {"model": "m", "version": 1, "variant": "", "release_id": "cc", "size": 10},
    ]
    devices = [
        device("a", active={"m": 2}, variants={"m": "int8"}),
        device("b", active={"m": 2}, variants={"m": "int8"}),
        device("c", active={"m": 1}),
    ]
    rows = release_rows(releases, devices, {"aa": 25})
    assert [(r["devices"], r["published"]) for r in rows] == [(2, 25), (0, 0), (1, 0)]
    assert [r["updates"] for r in rows] == [[], [], []]  # no device said what it cost


def test_what_each_update_cost_is_listed_under_the_release_it_made() -> None:
    releases = [
        {"model": "m", "version": 2, "variant": "", "release_id": "aa", "size": 10},
        {"model": "m", "version": 1, "variant": "", "release_id": "bb", "size": 10},
    ]
    delta, whole = "5.0 KB of 86.6 MB (delta from m@1)", "86.6 MB (the whole release)"
    devices = [
        {
            **device("a", active={"m": 2}),
            "last_update": {"model": "m", "version": 2, "cost": delta},
        },
        {
            **device("b", active={"m": 2}),
            "last_update": {"model": "m", "version": 2, "cost": delta},
        },
        {
            **device("c", active={"m": 2}),
            "last_update": {"model": "m", "version": 2, "cost": whole},
        },
        {**device("d", active={"m": 1}), "last_update": None},
    ]
    rows = release_rows(releases, devices, {})
    assert rows[0]["updates"] == [{"cost": delta, "devices": 2}, {"cost": whole, "devices": 1}]
    assert rows[1]["updates"] == []
