"""The small unsigned messages (chunk request, device state/status/event), names and topics."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from protocol import (
    ChunkRequest,
    DeviceEvent,
    DeviceState,
    DeviceStatus,
    Limits,
    MalformedMessage,
    OversizedMessage,
    Topics,
    UnsupportedVersion,
    UpdateState,
    check_name,
    is_valid_name,
    iter_ranges,
    to_ranges,
)
from protocol.codec import pack

RID = bytes(range(16))

REQUEST = ChunkRequest(
    device="edge-01",
    name="resnet_50",
    version=12,
    release_id=RID,
    ranges=((0, 4), (9, 1), (30, 2)),
    subscribed=(0, 1),
    fresh=True,
    repair=True,
)
STATE = DeviceState(
    device="edge-01",
    state=UpdateState.DOWNLOADING,
    ts=1_700_000_123.5,
    boot="b0",
    model="resnet_50",
    version=12,
    chunks_held=3,
    chunks_total=40,
    bytes_held=3 * 4096,
    size=40 * 4096,
    received=5,
    duplicates=2,
    reason="hash-mismatch",
    active={"resnet_50": 11, "other": 2},
    rejections=1,
)
STATUS = DeviceStatus(
    device="edge-01",
    online=True,
    ts=1_700_000_000.25,
    boot="b0",
    agent="modelcast/0.1",
    active={"resnet_50": 11},
)
EVENT = DeviceEvent(
    device="edge-01",
    event="rejected",
    ts=1_700_000_001.0,
    boot="b0",
    seq=9,
    reason="bad-signature",
    detail="manifest signature does not verify",
    topic="modelcast/default/releases/resnet_50/12",
    model="resnet_50",
    version=12,
)

MESSAGES: list[tuple[Any, Any]] = [
    (ChunkRequest, REQUEST),
    (DeviceState, STATE),
    (DeviceStatus, STATUS),
    (DeviceEvent, EVENT),
]
IDS = ["request", "state", "status", "event"]


def _obj(msg: Any) -> dict[str, Any]:
    obj = msgpack.unpackb(msg.encode(), raw=False)
    assert isinstance(obj, dict)
    return obj


def _malformed(cls: Any, obj: object) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as exc:
        cls.decode(pack(obj))
    assert exc.value.reason == "malformed"
    return exc.value


# --- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "msg"), MESSAGES, ids=IDS)
def test_round_trip(cls: Any, msg: Any) -> None:
    assert cls.decode(msg.encode()) == msg


def test_round_trip_of_minimal_messages() -> None:
    req = ChunkRequest("d", "m", 0, RID, ((0, 1),))
    assert ChunkRequest.decode(req.encode()) == req
    state = DeviceState("d", UpdateState.IDLE, 0.0)
    assert DeviceState.decode(state.encode()) == state
    event = DeviceEvent("d", "downloading", 1.0)
    assert DeviceEvent.decode(event.encode()) == event


def test_will_message_is_the_documented_three_fields() -> None:
    will = DeviceStatus(device="edge-01", online=False)
    assert _obj(will) == {"v": 1, "device": "edge-01", "online": False}
    assert DeviceStatus.decode(will.encode()) == will


def test_request_accepts_a_full_32_byte_release_id() -> None:
    obj = _obj(REQUEST)
    obj["release"] = RID + b"\xff" * 16
    assert ChunkRequest.decode(pack(obj)).release_id == RID


def test_request_optional_fields_default() -> None:
    obj = _obj(REQUEST)
    del obj["subscribed"], obj["fresh"], obj["repair"]
    req = ChunkRequest.decode(pack(obj))
    assert (req.subscribed, req.fresh, req.repair) == ((), False, False)


def test_request_indices() -> None:
    assert REQUEST.indices() == [0, 1, 2, 3, 9, 30, 31]


def test_ranges_helpers() -> None:
    assert to_ranges([5, 1, 2, 3, 9, 2]) == [[1, 3], [5, 1], [9, 1]]
    assert to_ranges([]) == []
    assert list(iter_ranges([(1, 3), [5, 1]])) == [1, 2, 3, 5]
    assert list(iter_ranges(to_ranges([7, 3, 4, 100]))) == [3, 4, 7, 100]


def test_state_progress() -> None:
    assert STATE.progress == pytest.approx(3 / 40)
    assert DeviceState("d", UpdateState.IDLE, 0.0).progress == 0.0


@pytest.mark.parametrize("state", list(UpdateState))
def test_every_documented_state_round_trips(state: UpdateState) -> None:
    msg = DeviceState("d", state, 1.0)
    assert DeviceState.decode(msg.encode()).state is state


def test_documented_state_names() -> None:
    assert {s.value for s in UpdateState} == {
        "idle",
        "downloading",
        "verifying",
        "verified",
        "activating",
        "active",
        "failed",
        "rejected",
    }


def test_status_ts_may_be_an_integer() -> None:
    obj = _obj(STATUS)
    obj["ts"] = 5
    got = DeviceStatus.decode(pack(obj)).ts
    assert got == 5.0 and type(got) is float


# --- rejections: types ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "msg", "key", "value"),
    [
        (ChunkRequest, REQUEST, "device", 7),
        (ChunkRequest, REQUEST, "name", b"m"),
        (ChunkRequest, REQUEST, "version", "12"),
        (ChunkRequest, REQUEST, "version", 12.0),
        (ChunkRequest, REQUEST, "version", -1),
        (ChunkRequest, REQUEST, "release", "0123456789abcdef"),
        (ChunkRequest, REQUEST, "release", b"\x00" * 15),
        (ChunkRequest, REQUEST, "release", b"\x00" * 17),
        (ChunkRequest, REQUEST, "ranges", {"0": 4}),
        (ChunkRequest, REQUEST, "ranges", None),
        (ChunkRequest, REQUEST, "subscribed", [0, -1]),
        (ChunkRequest, REQUEST, "subscribed", ["0"]),
        (ChunkRequest, REQUEST, "subscribed", 3),
        (ChunkRequest, REQUEST, "fresh", 1),
        (ChunkRequest, REQUEST, "repair", "yes"),
        (DeviceState, STATE, "ts", "now"),
        (DeviceState, STATE, "chunks_held", -1),
        (DeviceState, STATE, "bytes_held", 1.5),
        (DeviceState, STATE, "version", "12"),
        (DeviceState, STATE, "reason", 3),
        (DeviceState, STATE, "model", "a/b"),
        (DeviceState, STATE, "active", [1, 2]),
        (DeviceState, STATE, "active", {"m": "1"}),
        (DeviceState, STATE, "active", {"a.b": 1}),
        (DeviceState, STATE, "boot", 5),
        (DeviceState, STATE, "state", 1),
        (DeviceStatus, STATUS, "online", 1),
        (DeviceStatus, STATUS, "online", "false"),
        (DeviceStatus, STATUS, "ts", "now"),
        (DeviceStatus, STATUS, "agent", 1),
        (DeviceStatus, STATUS, "active", {"m": 1.0}),
        (DeviceEvent, EVENT, "event", None),
        (DeviceEvent, EVENT, "ts", None),
        (DeviceEvent, EVENT, "seq", "9"),
        (DeviceEvent, EVENT, "reason", 1),
        (DeviceEvent, EVENT, "detail", b"x"),
        (DeviceEvent, EVENT, "topic", ["a"]),
        (DeviceEvent, EVENT, "model", 1),
        (DeviceEvent, EVENT, "version", "12"),
    ],
)
def test_wrong_type(cls: Any, msg: Any, key: str, value: object) -> None:
    obj = _obj(msg)
    obj[key] = value
    _malformed(cls, obj)


@pytest.mark.parametrize(
    ("cls", "msg", "key"),
    [
        (ChunkRequest, REQUEST, "version"),
        (DeviceState, STATE, "chunks_held"),
        (DeviceState, STATE, "version"),
        (DeviceStatus, STATUS, "ts"),
        (DeviceEvent, EVENT, "seq"),
        (DeviceEvent, EVENT, "version"),
        (DeviceState, STATE, "ts"),
        (DeviceEvent, EVENT, "ts"),
    ],
)
def test_bool_is_not_a_number(cls: Any, msg: Any, key: str) -> None:
    obj = _obj(msg)
    obj[key] = True
    _malformed(cls, obj)


@pytest.mark.parametrize("bad", [[True, 1], [0, True], [False, 3]])
def test_bool_is_not_an_int_in_ranges(bad: list[object]) -> None:
    obj = _obj(REQUEST)
    obj["ranges"] = [bad]
    _malformed(ChunkRequest, obj)


def test_bool_is_not_a_block_number() -> None:
    obj = _obj(REQUEST)
    obj["subscribed"] = [True]
    _malformed(ChunkRequest, obj)


@pytest.mark.parametrize(
    ("cls", "msg", "key"),
    [
        (ChunkRequest, REQUEST, "device"),
        (ChunkRequest, REQUEST, "name"),
        (ChunkRequest, REQUEST, "version"),
        (ChunkRequest, REQUEST, "release"),
        (ChunkRequest, REQUEST, "ranges"),
        (DeviceState, STATE, "device"),
        (DeviceState, STATE, "state"),
        (DeviceState, STATE, "ts"),
        (DeviceStatus, STATUS, "device"),
        (DeviceStatus, STATUS, "online"),
        (DeviceEvent, EVENT, "device"),
        (DeviceEvent, EVENT, "event"),
        (DeviceEvent, EVENT, "ts"),
    ],
)
def test_missing_field(cls: Any, msg: Any, key: str) -> None:
    obj = _obj(msg)
    del obj[key]
    assert key in _malformed(cls, obj).detail or key == "state"


@pytest.mark.parametrize(("cls", "msg"), MESSAGES, ids=IDS)
def test_missing_schema_version(cls: Any, msg: Any) -> None:
    obj = _obj(msg)
    del obj["v"]
    _malformed(cls, obj)


@pytest.mark.parametrize(("cls", "msg"), MESSAGES, ids=IDS)
@pytest.mark.parametrize("v", ["1", 1.0, True, None])
def test_schema_version_of_the_wrong_type(cls: Any, msg: Any, v: object) -> None:
    obj = _obj(msg)
    obj["v"] = v
    _malformed(cls, obj)


@pytest.mark.parametrize(("cls", "msg"), MESSAGES, ids=IDS)
@pytest.mark.parametrize("v", [0, 2, 255])
def test_unsupported_schema_version(cls: Any, msg: Any, v: int) -> None:
    obj = _obj(msg)
    obj["v"] = v
    with pytest.raises(UnsupportedVersion) as exc:
        cls.decode(pack(obj))
    assert exc.value.reason == "unsupported-version"


@pytest.mark.parametrize("state", ["bogus", "ACTIVE", "", "Active", "complete"])
def test_unknown_state(state: str) -> None:
    obj = _obj(STATE)
    obj["state"] = state
    assert "state" in _malformed(DeviceState, obj).detail


@pytest.mark.parametrize(("cls", "msg"), MESSAGES, ids=IDS)
@pytest.mark.parametrize(
    "payload", [[1, 2], "v", 1, None, b"\x01", True, 1.5], ids=lambda p: type(p).__name__
)
def test_non_map_payload(cls: Any, msg: Any, payload: object) -> None:
    assert "map" in _malformed(cls, payload).detail


@pytest.mark.parametrize(("cls", "msg"), MESSAGES, ids=IDS)
@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x81", b"\x82\xa1v\x01", b"\x81\xa1v\x01\x00"])
def test_undecodable_bytes(cls: Any, msg: Any, data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        cls.decode(data)


@pytest.mark.parametrize(("cls", "msg"), MESSAGES, ids=IDS)
def test_non_string_map_keys(cls: Any, msg: Any) -> None:
    with pytest.raises(MalformedMessage):
        cls.decode(msgpack.packb({1: 1, "v": 1}))


@pytest.mark.parametrize(("cls", "msg"), MESSAGES, ids=IDS)
def test_not_bytes_at_all(cls: Any, msg: Any) -> None:
    with pytest.raises(MalformedMessage):
        cls.decode("not bytes")


@pytest.mark.parametrize(("cls", "msg"), MESSAGES, ids=IDS)
def test_oversized_message(cls: Any, msg: Any) -> None:
    obj = _obj(msg)
    obj["pad"] = "x" * (64 * 1024)
    with pytest.raises(OversizedMessage) as exc:
        cls.decode(pack(obj))
    assert exc.value.reason == "oversized"
    # the same message without the padding is fine, so it was the size that was refused
    del obj["pad"]
    assert cls.decode(pack(obj)) == msg


@pytest.mark.parametrize(("cls", "msg"), MESSAGES, ids=IDS)
def test_unknown_extra_fields_are_ignored(cls: Any, msg: Any) -> None:
    obj = _obj(msg)
    obj["future_field"] = [1, 2, 3]
    assert cls.decode(pack(obj)) == msg


# --- names ----------------------------------------------------------------------------------------
BAD_NAMES = [
    "a.b",
    "a/b",
    "a+b",
    "+",
    "a#",
    "#",
    "",
    "x" * 65,
    "a b",
    "é",
    "a\n",
    "a\x00",
    "$share",
    "..",
    "a\tb",
]
GOOD_NAMES = ["a", "A-z_0", "x" * 64, "edge-01", "_", "-", "0"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(
    ("cls", "msg", "key"),
    [
        (ChunkRequest, REQUEST, "device"),
        (ChunkRequest, REQUEST, "name"),
        (DeviceState, STATE, "device"),
        (DeviceState, STATE, "model"),
        (DeviceStatus, STATUS, "device"),
        (DeviceEvent, EVENT, "device"),
    ],
)
def test_bad_names_are_refused(cls: Any, msg: Any, key: str, name: str) -> None:
    obj = _obj(msg)
    obj[key] = name
    _malformed(cls, obj)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_in_active_maps(name: str) -> None:
    obj = _obj(STATE)
    obj["active"] = {name: 1}
    _malformed(DeviceState, obj)
    obj = _obj(STATUS)
    obj["active"] = {name: 1}
    _malformed(DeviceStatus, obj)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_name_refuses(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(MalformedMessage):
        check_name(name)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_check_name_accepts(name: str) -> None:
    assert is_valid_name(name)
    assert check_name(name) == name
    obj = _obj(REQUEST)
    obj["device"] = name
    assert ChunkRequest.decode(pack(obj)).device == name


@pytest.mark.parametrize("value", [None, 1, b"abc", ["a"]])
def test_check_name_refuses_non_strings(value: object) -> None:
    assert not is_valid_name(value)
    with pytest.raises(MalformedMessage):
        check_name(value)


# --- ranges ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ranges",
    [
        [[0, 0]],
        [[5, -1]],
        [[-1, 2]],
        [[0]],
        [[0, 1, 2]],
        [0, 1],
        [[0, "1"]],
        [[0, 1.0]],
        [[29_999, 2]],  # runs past the chunk cap
        [[2**40, 1]],
        [[0, 1], [3, 0]],
    ],
)
def test_bad_ranges(ranges: object) -> None:
    obj = _obj(REQUEST)
    obj["ranges"] = ranges
    _malformed(ChunkRequest, obj)


def test_range_ending_exactly_at_the_chunk_cap_is_fine() -> None:
    obj = _obj(REQUEST)
    obj["ranges"] = [[29_999, 1]]
    assert ChunkRequest.decode(pack(obj)).ranges == ((29_999, 1),)


def test_too_many_ranges() -> None:
    obj = _obj(REQUEST)
    obj["ranges"] = [[2 * i, 1] for i in range(1025)]
    with pytest.raises(OversizedMessage) as exc:
        ChunkRequest.decode(pack(obj))
    assert exc.value.reason == "oversized"
    obj["ranges"] = obj["ranges"][:1024]
    assert len(ChunkRequest.decode(pack(obj)).ranges) == 1024


def test_limits_are_honoured() -> None:
    limits = Limits(max_request_ranges=2, max_chunks=10, max_message_bytes=200)
    with pytest.raises(OversizedMessage):
        ChunkRequest.decode(REQUEST.encode(), limits)  # three ranges
    obj = _obj(REQUEST)
    obj["ranges"] = [[9, 2]]
    with pytest.raises(MalformedMessage):
        ChunkRequest.decode(pack(obj), limits)  # past max_chunks
    with pytest.raises(OversizedMessage):
        DeviceState.decode(STATE.encode(), limits)  # > 200 bytes


# --- topics ---------------------------------------------------------------------------------------
def test_topic_names() -> None:
    t = Topics()
    assert t.fleet == "default"
    assert t.index() == "modelcast/default/releases/index"
    assert t.manifest("m", 3) == "modelcast/default/releases/m/3"
    assert t.chunk_block("m", 3, 7) == "modelcast/default/chunks/m/3/7"
    assert t.request("e1") == "modelcast/default/devices/e1/request"
    assert t.state("e1") == "modelcast/default/devices/e1/state"
    assert t.status("e1") == "modelcast/default/devices/e1/status"
    assert t.telemetry("e1", "events") == "modelcast/default/devices/e1/telemetry/events"
    assert t.all_requests() == "modelcast/default/devices/+/request"
    assert t.all_state() == "modelcast/default/devices/+/state"
    assert t.all_status() == "modelcast/default/devices/+/status"
    assert t.all_events() == "modelcast/default/devices/+/telemetry/events"
    assert Topics("lab").index() == "modelcast/lab/releases/index"


@pytest.mark.parametrize("fleet", BAD_NAMES)
def test_topics_validate_the_fleet(fleet: str) -> None:
    with pytest.raises(MalformedMessage):
        Topics(fleet)


@pytest.mark.parametrize("name", ["a.b", "a/b", "+", "#", ""])
def test_topics_validate_their_levels(name: str) -> None:
    t = Topics()
    with pytest.raises(MalformedMessage):
        t.manifest(name, 1)
    with pytest.raises(MalformedMessage):
        t.chunk_block(name, 1, 0)
    with pytest.raises(MalformedMessage):
        t.request(name)
    with pytest.raises(MalformedMessage):
        t.telemetry("e1", name)


@pytest.mark.parametrize(
    ("topic", "device"),
    [
        ("modelcast/default/devices/e1/request", "e1"),
        ("modelcast/default/devices/edge-01/telemetry/events", "edge-01"),
        ("modelcast/default/devices/e1", "e1"),
        ("modelcast/default/devices//state", None),
        ("modelcast/default/devices/", None),
        ("modelcast/lab/devices/e1/state", None),  # another fleet
        ("modelcast/default/releases/index", None),
        ("modelcast/defaults/devices/e1/state", None),
        ("other/default/devices/e1/state", None),
        ("modelcast/default/devices/a.b/state", None),  # not a valid device id
        ("modelcast/default/devices/" + "x" * 65 + "/state", None),
    ],
)
def test_device_of(topic: str, device: str | None) -> None:
    assert Topics().device_of(topic) == device


def test_device_of_round_trips_every_device_topic() -> None:
    t = Topics("f1")
    for topic in (t.request("d-9"), t.state("d-9"), t.status("d-9"), t.telemetry("d-9", "events")):
        assert t.device_of(topic) == "d-9"
