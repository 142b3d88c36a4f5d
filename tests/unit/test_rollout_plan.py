"""The staged-rollout state machine on plain data: stages, rate limit, gates, halts."""

from __future__ import annotations

from dataclasses import replace

from coordinator.rollout_plan import (
    COMPLETED,
    HALTED,
    PAUSED,
    RUNNING,
    DeviceView,
    Gates,
    Health,
    Observation,
    Rollout,
    members,
    step,
    validate_stages,
)
from protocol import PPM_ALL, Selector

FLEET = tuple(f"d{i}" for i in range(6))


def rollout(**kw: object) -> Rollout:
    defaults: dict[str, object] = {
        "fleet": "f",
        "name": "m",
        "version": 2,
        "base": 1,
        "select": Selector(),
        "stages": (34.0, 100.0),
        "soak": 2.0,
    }
    defaults.update(kw)
    return Rollout(**defaults)  # type: ignore[arg-type]


def view(device: str, *, active: int | None = 1, failed: bool = False, **kw: object) -> DeviceView:
    return DeviceView(device, kw.get("tags", {}), kw.get("online", True), active, failed)  # type: ignore[arg-type]


def obs(
    views: list[DeviceView], new: Health | None = None, base: Health | None = None
) -> Observation:
    return Observation(tuple(views), lambda since: (new or Health(), base or Health()))


def fleet_on(r: Rollout, version_for_members: int, **kw: object) -> list[DeviceView]:
    inside = {d.device for d in members(r, tuple(view(d) for d in FLEET))}
    return [view(d, active=version_for_members if d in inside else 1, **kw) for d in FLEET]


def drive_stage(r: Rollout, t: float, new: Health | None = None) -> tuple[Rollout, float]:
    """Enter the stage, let its members activate, soak, and read the gates."""
    r = step(r, t, obs([view(d) for d in FLEET]))
    views = fleet_on(r, r.version)
    r = step(r, t + 1, obs(views))
    assert r.soak_started == t + 1
    assert step(r, t + 2, obs(views)) == r  # soaking
    return step(r, t + 3.5, obs(views, new)), t + 4


def test_a_stage_admits_at_least_its_share_of_known_devices() -> None:
    r = step(rollout(stages=(5.0, 100.0)), 0.0, obs([view(d) for d in FLEET]))
    assert r.stage == 0 and len(members(r, tuple(view(d) for d in FLEET))) == 1
    assert r.ppm == r.stage_ppms[0] >= 50_000


def test_a_good_release_goes_through_every_stage_to_completed() -> None:
    r, t = drive_stage(rollout(), 0.0)
    assert r.state == RUNNING and r.stage == 1
    first = {
        d.device for d in members(replace(r, ppm=r.stage_ppms[0]), tuple(view(d) for d in FLEET))
    }
    r, t = drive_stage(r, t)
    assert r.state == COMPLETED and r.ppm == PPM_ALL
    assert len(first) == 3  # ceil(34% of 6)


def test_an_activation_failure_halts_at_once() -> None:
    r = step(rollout(), 0.0, obs([view(d) for d in FLEET]))
    inside = {d.device for d in members(r, tuple(view(d) for d in FLEET))}
    victim = sorted(inside)[0]
    views = [view(d, failed=d == victim) for d in FLEET]
    halted = step(r, 1.0, obs(views))
    assert halted.state == HALTED and halted.stage == 0
    assert halted.reason is not None and victim in halted.reason and "stage 1" in halted.reason


def test_a_failure_rate_below_the_gate_does_not_halt() -> None:
    r = step(rollout(gates=Gates(max_failure_rate=0.5)), 0.0, obs([view(d) for d in FLEET]))
    inside = sorted(d.device for d in members(r, tuple(view(d) for d in FLEET)))
    views = [view(d, failed=d == inside[0], active=2 if d in inside[1:] else 1) for d in FLEET]
    assert step(r, 1.0, obs(views)).state == RUNNING


def test_the_p95_gate_and_the_error_gate_trip_after_the_soak() -> None:
    slow = Health(inferences=100, latency_p95_ms=80.0)
    r, _ = drive_stage(rollout(gates=Gates(max_p95_ms=50.0)), 0.0, slow)
    assert r.state == HALTED and "p95 latency 80.0 ms" in (r.reason or "")
    assert r.gate_report is not None and r.gate_report["new"]["latency_p95_ms"] == 80.0
    errors = Health(inferences=100, errors=10, error_rate=0.1)
    r, _ = drive_stage(rollout(gates=Gates(max_error_rate=0.05)), 0.0, errors)
    assert r.state == HALTED and "error rate 10.00%" in (r.reason or "")
    fine = Health(inferences=100, errors=1, error_rate=0.01, latency_p95_ms=5.0)
    r, _ = drive_stage(rollout(gates=Gates(max_error_rate=0.05, max_p95_ms=50.0)), 0.0, fine)
    assert r.state == RUNNING and r.stage == 1


def test_the_stage_waits_for_online_members_to_settle_then_times_out() -> None:
    r = step(rollout(stage_timeout=100.0), 0.0, obs([view(d) for d in FLEET]))
    pending = [view(d) for d in FLEET]  # nobody activated yet
    assert step(r, 50.0, obs(pending)).soak_started is None
    assert step(r, 101.0, obs(pending)).soak_started == 101.0
    offline = [view(d, online=False) for d in FLEET]  # offline members are not waited for
    assert step(r, 1.0, obs(offline)).soak_started == 1.0


def test_the_rate_limit_admits_devices_gradually() -> None:
    r = step(rollout(stages=(100.0,), rate=2.0), 0.0, obs([view(d) for d in FLEET]))
    views = tuple(view(d) for d in FLEET)
    assert len(members(r, views)) == 1  # one at once
    r = step(r, 60.0, obs(list(views)))
    assert len(members(r, views)) == 2  # two per minute
    r = step(r, 180.0, obs(list(views)))
    assert len(members(r, views)) == 6 and r.ppm == PPM_ALL


def test_a_selector_limits_the_rollout_and_a_paused_one_does_not_move() -> None:
    tags = {"d0": {"site": "a"}, "d1": {"site": "a"}}
    views = [view(d, tags=tags.get(d, {"site": "b"})) for d in FLEET]
    r = step(rollout(select=Selector({"site": "a"}), stages=(50.0, 100.0)), 0.0, obs(views))
    assert {d.device for d in members(r, tuple(views))} <= {"d0", "d1"}
    assert len(members(r, tuple(views))) >= 1  # at least half of the two
    paused = replace(r, state=PAUSED)
    assert step(paused, 100.0, obs(views)) is paused


def test_stages_are_validated() -> None:
    assert validate_stages((5.0, 25.0)) == (5.0, 25.0, 100.0)
    for bad in ((), (0.0,), (50.0, 20.0), (120.0,)):
        try:
            validate_stages(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_latency_and_error_gates_wait_for_traffic_before_passing() -> None:
    r = rollout(gates=Gates(max_p95_ms=50.0), stage_timeout=100.0)
    r = step(r, 0.0, obs([view(d) for d in FLEET]))
    views = fleet_on(r, 2)
    r = step(r, 1.0, obs(views))
    idle = step(r, 5.0, obs(views))  # soak over, but no inference was reported
    assert idle.state == RUNNING and idle.stage == 0
    assert step(r, 101.0, obs(views)).stage == 1  # the stage timeout gates what there is
    busy = step(r, 5.0, obs(views, Health(inferences=10, latency_p95_ms=1.0)))
    assert busy.stage == 1


def test_the_p95_ratio_gate_compares_with_the_base_version() -> None:
    def run(new_p95: float) -> Rollout:
        r = rollout(gates=Gates(max_p95_ratio=2.0))
        r = step(r, 0.0, obs([view(d) for d in FLEET]))
        views = fleet_on(r, 2)
        r = step(r, 1.0, obs(views))
        new = Health(inferences=10, latency_p95_ms=new_p95)
        base = Health(inferences=10, latency_p95_ms=4.0)
        return step(r, 5.0, obs(views, new, base))

    slow = run(9.0)
    assert slow.state == HALTED and "2 x the base version's 4.0 ms" in (slow.reason or "")
    assert run(7.5).state == RUNNING
