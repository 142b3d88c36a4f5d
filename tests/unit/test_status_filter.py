"""`modelcast status` at fleet scale: the filters (--state, --model, --device-prefix, --limit),
the summary of the whole fleet on top, in the table and in --json, and the command's flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import protocol
from coordinator.registry import Registry
from coordinator.status import fleet_status, format_status
from coordinator.status_filter import DeviceFilter, describe_filters, format_summary, summarize
from modelcast.cli.entry import main as cli_main

S = protocol.UpdateState


def row(device: str, state: str | None, active: dict[str, int], **kw: Any) -> dict[str, Any]:
    return {"device_id": device, "state": state, "active": active, "online": True, **kw}


ROWS = [
    row("cam-1", "active", {"m": 2}),
    row("cam-2", "failed", {"m": 1}, model="m", version=2, online=False),
    row("cam-3", "downloading", {"m": 1}, model="m", version=2),
    row("gw-1", "active", {"m": 1, "n": 4}),
    row("gw-2", None, {}, online=None),
]


def ids(rows: list[Any]) -> list[str]:
    return [r["device_id"] for r in rows]


def test_filters_keep_what_all_their_conditions_say() -> None:
    assert ids(DeviceFilter(states=frozenset({"failed"})).apply(ROWS)[0]) == ["cam-2"]
    assert ids(DeviceFilter(states=frozenset({"unknown", "failed"})).apply(ROWS)[0]) == [
        "cam-2",
        "gw-2",
    ]
    # m@2: running it, or working on it (failed on it, downloading it)
    assert ids(DeviceFilter(model="m", version=2).apply(ROWS)[0]) == ["cam-1", "cam-2", "cam-3"]
    assert ids(DeviceFilter(model="m", version=1).apply(ROWS)[0]) == ["cam-2", "cam-3", "gw-1"]
    assert ids(DeviceFilter(model="n").apply(ROWS)[0]) == ["gw-1"]
    assert ids(DeviceFilter(prefix="gw-").apply(ROWS)[0]) == ["gw-1", "gw-2"]
    both = DeviceFilter(states=frozenset({"active"}), prefix="cam-")
    assert ids(both.apply(ROWS)[0]) == ["cam-1"]
    shown, matched = DeviceFilter(model="m", limit=2).apply(ROWS)
    assert ids(shown) == ["cam-1", "cam-2"] and matched == 4
    assert DeviceFilter().apply(ROWS) == (ROWS, 5) and not DeviceFilter().narrows


def test_the_summary_counts_states_versions_and_online() -> None:
    summary = summarize(ROWS)
    assert summary == {
        "devices": 5,
        "online": 3,
        "states": {"active": 2, "downloading": 1, "failed": 1, "unknown": 1},
        "versions": {"m@1": 3, "m@2": 1, "n@4": 1},
    }
    assert format_summary(summary) == (
        "5 device(s), 3 online; active 2, downloading 1, failed 1, unknown 1; "
        "running m@1 3, m@2 1, n@4 1"
    )


def test_versions_sort_by_number_not_text() -> None:
    rows = [row(f"d{v}", "active", {"m": v}) for v in (10, 9, 2)]
    assert list(summarize(rows)["versions"]) == ["m@2", "m@9", "m@10"]


@pytest.fixture(name="db")
def fleet_db(tmp_path: Path) -> Path:
    db = tmp_path / "c.db"
    registry = Registry(db)
    try:
        for r in ROWS:
            state = r["state"]
            if state is not None:
                registry.record_state(
                    "f",
                    protocol.DeviceState(
                        r["device_id"],
                        S(state),
                        1.0,
                        model=r.get("model"),
                        version=r.get("version"),
                        active=r["active"],
                    ),
                )
            # (gw-2 has said nothing but the broker's will: offline, no state)
            online = bool(r["online"])
            registry.record_status("f", protocol.DeviceStatus(r["device_id"], online=online))
    finally:
        registry.close()
    return db


def test_status_lists_what_the_filters_keep_and_sums_up_the_whole_fleet(db: Path) -> None:
    status = fleet_status(
        db, "f", devices=DeviceFilter(states=frozenset({"failed", "active"}), limit=2)
    )
    assert ids(status["devices"]) == ["cam-1", "cam-2"]
    assert status["summary"]["devices"] == 5 and status["summary"]["online"] == 3
    assert status["summary"]["states"]["downloading"] == 1  # not listed, still counted
    assert (status["summary"]["matched"], status["summary"]["shown"]) == (3, 2)
    assert status["filters"] == {"states": ["active", "failed"], "limit": 2}
    lines = format_status(status, now=10.0).splitlines()
    assert lines[0] == (
        "fleet f: nothing deployed; 5 device(s), 3 online; active 2, downloading 1, failed 1, "
        "unknown 1; running m@1 3, m@2 1, n@4 1"
    )
    assert lines[1] == "showing 2 of 3 device(s) matching state active,failed, limit 2"
    assert lines[2].split()[0] == "DEVICE"
    assert [line.split()[0] for line in lines[3:5]] == ["cam-1", "cam-2"]
    none = fleet_status(db, "f", devices=DeviceFilter(prefix="nope"))
    assert none["devices"] == [] and none["summary"]["matched"] == 0
    assert "(no device matches)" in format_status(none)


def test_the_status_command_takes_the_filters(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--db", str(db), "--fleet", "f"]
    assert cli_main(["status", *flags, "--model", "m@2", "--device-prefix", "cam-", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert ids(doc["devices"]) == ["cam-1", "cam-2", "cam-3"]
    assert doc["filters"] == {"model": "m@2", "device_prefix": "cam-"}
    assert doc["summary"]["devices"] == 5
    assert cli_main(["status", *flags, "--state", "unknown", "--limit", "0"]) == 0
    out = capsys.readouterr().out
    assert "showing 0 of 1 device(s) matching state unknown, limit 0" in out
    assert cli_main(["status", *flags, "--state", "sleeping"]) == 2  # usage
    assert cli_main(["status", *flags, "--limit", "-1"]) == 1  # like --window -1


@pytest.mark.parametrize(
    "filters",
    [
        ["--state", "active"],
        ["--state", "failed", "--state", "downloading"],
        ["--model", "m@1", "--limit", "2"],
        ["--device-prefix", "gw-"],
        ["--model", "n", "--device-prefix", "cam-"],  # nothing matches
    ],
)
def test_the_table_and_json_list_the_same_devices_and_sum_up_the_whole_fleet(
    db: Path, filters: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["status", "--db", str(db), "--fleet", "f", *filters]
    assert cli_main([*flags, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert cli_main(flags) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = doc["summary"]
    assert (summary["devices"], summary["online"]) == (5, 3)  # whatever the filters say
    assert summary["shown"] == len(doc["devices"]) <= summary["matched"]
    assert lines[0].endswith(format_summary(summary))
    shown = f"showing {summary['shown']} of {summary['matched']} device(s) matching "
    assert lines[1].startswith(shown)  # then the filters, in the order given (JSON sorts them)
    described = describe_filters(doc["filters"]).split(", ")
    assert sorted(lines[1].removeprefix(shown).split(", ")) == sorted(described)
    assert lines[2].split()[0] == "DEVICE"
    listed = [line.split()[0] for line in lines[3 : 3 + summary["shown"]]]
    assert listed == ids(doc["devices"])
    if not doc["devices"]:
        assert lines[3] == "(no device matches)"
