"""The edge's activator with a stand-in model check: the maintenance window defers an
activation, a failed activation is remembered and cleaned up, a signed rollback holds back the
version it left."""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass, field
from pathlib import Path

from edge_node.activator import Activator
from edge_node.active import AgentRecord
from edge_node.config import EdgeConfig
from edge_node.downloader import Downloader
from edge_node.errors import AcceptanceError, ActivationError
from edge_node.integrity import ModelIntegrity
from edge_node.policy import Policy
from edge_node.storage import FINAL, release_dir
from protocol import Acceptance, MaintenanceWindow, UpdateState, VerifiedManifest
from tests.support.edge_fakes import DEVICE, TOPICS, Room, pieces, release, room

#: 2025-06-15 15:06:40 UTC, outside the window; 03:00 that day, inside it
NOW = 1_750_000_000.0
IN_WINDOW = float(calendar.timegm((2025, 6, 15, 3, 0, 0, 0, 0, 0)))
WINDOW = MaintenanceWindow.parse("02:00-04:00")


@dataclass
class Check:
    """Stands in for activation.check_model: records the paths, fails on request."""

    checked: list[Path] = field(default_factory=list)
    fail: Exception | None = None
    max_error: float | None = None

    def __call__(
        self, path: Path, kind: str | None = None, acceptance: Acceptance | None = None
    ) -> float | None:
        self.checked.append(path)
        if self.fail is not None:
            raise self.fail
        return self.max_error


@dataclass
class Setup:
    room: Room
    record: AgentRecord
    check: Check
    policy: Policy
    downloader: Downloader
    integrity: ModelIntegrity
    activator: Activator

    def verified(self, version: int) -> tuple[VerifiedManifest, Path]:
        """A release of ``m`` verified on disk (its file is not a model: the check is a
        stand-in; it is the release's bytes, which a rollback checks)."""
        chunks = pieces(3, seed=b"model %d" % version)
        rel = release(version=version, chunks=chunks)
        m = rel.manifest
        path = release_dir(self.room.data, m.name, m.version, m.variant) / FINAL
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(chunks))
        return rel, path

    def active(self) -> dict[str, int]:
        return self.room.actives.versions()


def setup(tmp_path: Path, *, window: MaintenanceWindow | None = None) -> Setup:
    r = room(tmp_path / "data")
    r.clock.now = NOW
    record, check = AgentRecord(), Check()
    edge = EdgeConfig("mqtt://unused", DEVICE, r.data, Path("unused"))
    downloader = Downloader(
        edge, topics=TOPICS, clock=r.clock, wire=r.wire, slots=r.slots, reporter=r.reporter
    )
    integrity = ModelIntegrity(r.actives, DEVICE)
    s = Setup(r, record, check, Policy(60.0, window), downloader, integrity, None)  # type: ignore[arg-type]
    s.activator = Activator(
        device=DEVICE,
        data=r.data,
        clock=r.clock,
        actives=r.actives,
        record=record,
        policy=lambda: s.policy,
        slots=r.slots,
        reporter=r.reporter,
        downloader=downloader,
        integrity=s.integrity,
        check=check,
    )
    return s


def test_without_a_window_a_release_is_checked_and_activated(tmp_path: Path) -> None:
    s = setup(tmp_path)
    rel, path = s.verified(2)
    s.check.max_error = 0.25
    assert s.activator.activate(rel, path)
    assert s.check.checked == [path] and s.active() == {"m": 2}
    (activated,) = s.room.events.named("activated")
    assert activated.detail == "acceptance max error 0.25"
    states = [st.state for st in s.room.wire.states()]
    assert states[0] == UpdateState.ACTIVATING and states[-1] == UpdateState.ACTIVE
    assert s.room.wire.on(TOPICS.status(DEVICE))  # the status names the new version


def test_outside_the_maintenance_window_activation_waits_for_it(tmp_path: Path) -> None:
    s = setup(tmp_path, window=WINDOW)
    rel, path = s.verified(2)
    assert not s.activator.activate(rel, path)
    assert s.room.slots.deferred == (rel, path)
    assert s.check.checked == [] and s.active() == {}
    state = s.room.wire.states()[-1]
    assert state.state == UpdateState.VERIFIED
    assert state.reason == "waiting for the maintenance window 02:00-04:00 UTC"
    assert not s.activator.activate(rel, path)  # said once
    assert len(s.room.events.named("activation-deferred")) == 1

    said = len(s.room.wire.published)
    assert not s.activator.activate_deferred(NOW + 60)  # still closed: nothing to do
    assert s.room.slots.deferred is not None and len(s.room.wire.published) == said
    s.room.clock.now = IN_WINDOW
    assert s.activator.activate_deferred(IN_WINDOW)
    assert s.active() == {"m": 2} and s.room.slots.deferred is None
    assert not s.activator.activate_deferred(IN_WINDOW + 1)  # nothing left to do


def test_a_window_pushed_away_lets_a_deferred_release_in(tmp_path: Path) -> None:
    s = setup(tmp_path, window=WINDOW)
    rel, path = s.verified(2)
    s.activator.activate(rel, path)
    s.policy = Policy(60.0, None)
    assert s.activator.activate_deferred(NOW)
    assert s.active() == {"m": 2}


def test_a_failed_activation_is_remembered_and_its_files_removed(tmp_path: Path) -> None:
    s = setup(tmp_path)
    old, old_path = s.verified(1)
    s.activator.activate(old, old_path)
    rel, path = s.verified(2)
    s.check.fail = ActivationError("onnxruntime cannot load model.onnx: bad graph")
    assert s.activator.activate(rel, path)  # settled: choose again
    assert s.active() == {"m": 1}
    assert s.record.failed == (rel.id.hex(),)
    saved = json.loads((s.room.data / "agent.json").read_text())
    assert saved["failed"] == [rel.id.hex()]
    assert not path.parent.exists() and old_path.exists()
    (failed,) = s.room.events.named("activation-failed")
    assert (failed.reason, failed.version) == ("load-failed", 2)
    state = s.room.wire.states()[-1]
    assert state.state == UpdateState.FAILED and state.reason is not None
    assert state.reason.startswith("load-failed: ")


def test_missed_acceptance_vectors_fail_with_their_own_reason(tmp_path: Path) -> None:
    s = setup(tmp_path)
    rel, path = s.verified(2)
    s.check.fail = AcceptanceError("acceptance vectors missed", max_error=0.5)
    s.activator.activate(rel, path)
    assert [e.reason for e in s.room.events.named("activation-failed")] == ["acceptance-failed"]


def test_a_rollback_goes_to_the_previous_version_and_holds_back_the_one_it_left(
    tmp_path: Path,
) -> None:
    s = setup(tmp_path)
    for version in (2, 3):
        s.activator.activate(*s.verified(version))
    _, v2_path = s.verified(2)
    s.check.checked.clear()
    s.activator.rollback("m", 2)
    assert s.active() == {"m": 2} and s.check.checked == [v2_path]
    assert s.record.held_back == {"m": 3}
    assert json.loads((s.room.data / "agent.json").read_text())["held_back"] == {"m": 3}
    (event,) = s.room.events.named("rolled-back")
    assert (event.version, event.detail) == (2, "from m@3")
    state = s.room.wire.states()[-1]
    assert (state.state, state.version, state.reason) == (
        UpdateState.ACTIVE,
        2,
        "rolled back from m@3",
    )


def test_a_rollback_drops_a_download_of_the_same_model(tmp_path: Path) -> None:
    s = setup(tmp_path)
    for version in (2, 3):
        s.activator.activate(*s.verified(version))
    s.downloader.begin(release(version=4))
    assert s.room.slots.download is not None
    s.activator.rollback("m", 2)
    assert s.room.slots.download is None
    part = release_dir(s.room.data, "m", 4) / "manifest.env"
    assert part.exists()  # kept: not discarded


def test_a_rollback_to_anything_but_the_previous_version_fails(tmp_path: Path) -> None:
    s = setup(tmp_path)
    for version in (1, 2, 3):
        s.activator.activate(*s.verified(version))
    s.activator.rollback("m", 1)
    assert s.active() == {"m": 3} and s.record.held_back == {}
    (failed,) = s.room.events.named("rollback-failed")
    assert failed.detail == "m@1 is not the previous version on this device"
    s.activator.rollback("m", 3)  # already there: nothing to do, nothing said
    assert len(s.room.events.named("rollback-failed")) == 1


def test_a_previous_version_that_no_longer_runs_is_not_rolled_back_to(tmp_path: Path) -> None:
    s = setup(tmp_path)
    for version in (2, 3):
        s.activator.activate(*s.verified(version))
    s.check.fail = ActivationError("test inference failed")
    s.activator.rollback("m", 2)
    assert s.active() == {"m": 3} and s.record.held_back == {}
    assert [e.event for e in s.room.events.named("rollback-failed")] == ["rollback-failed"]


# --- the repair of a corrupt active file ----------------------------------------------------
def test_the_repaired_active_release_is_reactivated_at_once_keeping_its_previous_version(
    tmp_path: Path,
) -> None:
    s = setup(tmp_path, window=WINDOW)  # outside the window: a new version would wait
    s.room.clock.now = IN_WINDOW
    for version in (1, 2):
        s.activator.activate(*s.verified(version))
    s.room.clock.now = NOW
    rel, path = s.verified(2)  # its file fetched again
    path.write_bytes(path.read_bytes()[:-1] + b"!")  # as found: corrupt
    assert s.integrity.check("m") is not None and s.integrity.repairs() == {"m": 2}
    _, path = s.verified(2)  # and repaired
    s.check.checked.clear()
    assert s.activator.activate(rel, path)
    assert s.check.checked == [path] and s.room.slots.deferred is None
    active = s.room.actives.get("m")
    assert active is not None and (active.version, active.previous_version) == (2, 1)
    assert s.integrity.repairs() == {}
    (repaired,) = s.room.events.named("model-repaired")
    assert repaired.version == 2
    assert len(s.room.events.named("activated")) == 2  # v1 and v2, not the repair


def test_a_repair_that_fails_its_check_keeps_the_file_and_is_not_tried_again(
    tmp_path: Path,
) -> None:
    s = setup(tmp_path)
    rel, path = s.verified(2)
    s.activator.activate(rel, path)
    s.check.fail = ActivationError("onnxruntime cannot load model.onnx: out of memory")
    assert s.activator.activate(rel, path)
    assert s.record.failed == (rel.id.hex(),) and path.exists()
    assert s.active() == {"m": 2}


def test_a_rollback_to_a_corrupt_previous_version_fails(tmp_path: Path) -> None:
    s = setup(tmp_path)
    for version in (2, 3):
        s.activator.activate(*s.verified(version))
    _, v2_path = s.verified(2)
    v2_path.write_bytes(b"rotten")
    s.check.checked.clear()
    s.activator.rollback("m", 2)
    assert s.active() == {"m": 3} and s.check.checked == []
    (failed,) = s.room.events.named("rollback-failed")
    assert f"{v2_path} is corrupt: sha256 " in (failed.detail or "")
