"""The edge's reporter: the state message's pacing, and rejections through the throttle."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_node.rejection_throttle import DEFAULT_BURST
from edge_node.shared import Download
from edge_node.storage import PartialDownload
from protocol import DeviceStatus, DownloadSession, MalformedMessage, UpdateState
from tests.support.edge_fakes import DEVICE, TOPICS, release, room


def download(tmp_path: Path, held: range = range(0)) -> Download:
    rel = release()
    part = PartialDownload(tmp_path / "part", rel.manifest, rel.envelope)
    return Download(rel, part, DownloadSession(rel, held), "prefix/")


def test_a_change_of_state_goes_out_at_once_progress_at_the_state_pace(tmp_path: Path) -> None:
    r = room(tmp_path, state_interval=0.5)
    dl = download(tmp_path)
    r.reporter.set_state(UpdateState.VERIFYING, reason=None, release=release())
    assert [s.state for s in r.wire.states()] == [UpdateState.VERIFYING]
    r.reporter.progress(dl)  # a new state, DOWNLOADING: it waits for the pace
    r.reporter.progress(dl)
    assert len(r.wire.states()) == 1 and r.reporter.dirty
    r.reporter.flush_due(r.clock.now + 0.4)
    assert len(r.wire.states()) == 1
    r.reporter.flush_due(r.clock.now + 0.5)
    assert [s.state for s in r.wire.states()] == [UpdateState.VERIFYING, UpdateState.DOWNLOADING]
    assert not r.reporter.dirty
    r.reporter.flush_due(r.clock.now + 5.0)  # nothing new: nothing sent
    assert len(r.wire.states()) == 2
    r.clock.now += 5.0
    r.reporter.progress(dl)  # more progress
    r.reporter.flush_due(r.clock.now + 0.5)
    assert len(r.wire.states()) == 3


def test_the_state_is_latest_value_retained_qos0(tmp_path: Path) -> None:
    r = room(tmp_path)
    r.reporter.set_state(UpdateState.ACTIVE, reason=None, release=release())
    (topic, _, qos, retain), *_ = r.wire.published
    assert (topic, qos, retain) == (TOPICS.state(DEVICE), 0, True)
    state = r.wire.states()[0]
    assert (state.model, state.version, state.chunks_held) == ("m", 2, 8)  # whole once active


def test_offline_the_state_waits_for_the_reconnect(tmp_path: Path) -> None:
    r = room(tmp_path, connected=False)
    r.reporter.set_state(UpdateState.FAILED, reason="write-failed: disk full")
    assert r.wire.published == [] and r.reporter.dirty
    r.slots.connected = True
    r.reporter.flush_due(r.clock.now + 1.0)
    assert [(s.state, s.reason) for s in r.wire.states()] == [
        (UpdateState.FAILED, "write-failed: disk full")
    ]


def test_a_rollback_names_the_version_gone_back_to(tmp_path: Path) -> None:
    r = room(tmp_path)
    r.reporter.set_state(UpdateState.ACTIVE, reason=None, release=release(version=3))
    r.reporter.rolled_back("m", 2, reason="rolled back from m@3")
    last = r.wire.states()[-1]
    assert (last.state, last.model, last.version, last.reason) == (
        UpdateState.ACTIVE,
        "m",
        2,
        "rolled back from m@3",
    )


def test_the_status_carries_the_profile_and_active_variants(tmp_path: Path) -> None:
    r = room(tmp_path)
    r.reporter.profile["arch"] = "x86_64"
    r.reporter.publish_status()
    (topic, payload, qos, retain), *_ = r.wire.published
    assert (topic, qos, retain) == (TOPICS.status(DEVICE), 0, True)
    status = DeviceStatus.decode(payload)
    assert status.online and status.profile == {"arch": "x86_64", "variants": {}}


def test_rejections_are_all_counted_a_flood_is_reported_in_part(tmp_path: Path) -> None:
    r = room(tmp_path)
    flood = DEFAULT_BURST + 5
    for _ in range(flood):
        r.reporter.reject("t", MalformedMessage("bad"), update_state=False)
    assert r.reporter.rejections == {"malformed": flood}
    assert len(r.events.named("rejected")) == DEFAULT_BURST
    assert r.wire.states() == []  # rejections without update_state wait for the pace
    r.reporter.flush_due(r.clock.now + 1.0)
    assert r.wire.states()[-1].rejections == flood

    r.clock.now += 1.0  # the budget refills: the next report says what was only counted
    r.reporter.reject("t", MalformedMessage("bad"), update_state=False)
    assert r.events.named("rejected")[-1].detail == "bad (5 more of these not reported one by one)"


def test_after_a_flood_a_summary_says_how_many_went_unreported(tmp_path: Path) -> None:
    r = room(tmp_path)
    for _ in range(DEFAULT_BURST + 3):
        r.reporter.reject("t", MalformedMessage("bad"), update_state=False)
    r.reporter.report_unreported()
    assert len(r.events.named("rejected")) == DEFAULT_BURST  # no budget yet
    r.clock.now += 1.0
    r.reporter.report_unreported()
    summary = r.events.named("rejected")[-1]
    assert (summary.reason, summary.detail) == ("malformed", "3 more not reported one by one")
    r.clock.now += 5.0
    r.reporter.report_unreported()  # said once
    assert len(r.events.named("rejected")) == DEFAULT_BURST + 1


def test_a_reported_rejection_of_an_update_goes_out_at_once_a_throttled_one_at_pace(
    tmp_path: Path,
) -> None:
    r = room(tmp_path)
    for _ in range(DEFAULT_BURST):
        r.reporter.reject("t", MalformedMessage("bad"), update_state=True, model="m", version=3)
    assert len(r.wire.states()) == DEFAULT_BURST
    state = r.wire.states()[-1]
    assert (state.state, state.model, state.version) == (UpdateState.REJECTED, "m", 3)
    assert state.reason == "malformed: bad"
    r.reporter.reject("t", MalformedMessage("worse"), update_state=True)
    assert len(r.wire.states()) == DEFAULT_BURST and r.reporter.dirty
    assert r.reporter.state.reason == "malformed: worse"


def test_events_say_whether_they_were_made_offline(tmp_path: Path) -> None:
    r = room(tmp_path, connected=False)
    r.reporter.event("verified", model="m", version=2)
    r.slots.connected = True
    r.reporter.event("activated", model="m", version=2)
    assert [(e.event, connected) for e, connected in r.events.got] == [
        ("verified", False),
        ("activated", True),
    ]


def test_progress_is_logged_every_tenth(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = room(tmp_path)
    caplog.set_level(logging.INFO, "modelcast.edge")
    for held in range(1, 9):  # of 8 chunks: a new tenth each time
        r.reporter.progress(download(tmp_path / str(held), range(held)))
    logged = [m for m in caplog.messages if "chunks)" in m]
    assert logged[0] == "edge d1: m@2 10% (1/8 chunks)" and len(logged) == 8
    r.reporter.progress(download(tmp_path / "again", range(8)))
    assert len([m for m in caplog.messages if "chunks)" in m]) == 8  # 100% said once
    r.reporter.download_started()  # a new download: from the start
    r.reporter.progress(download(tmp_path / "new", range(8)))
    assert len([m for m in caplog.messages if "chunks)" in m]) == 9
