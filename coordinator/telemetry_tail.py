"""``modelcast telemetry tail``: a live decoder of a fleet's status and telemetry stream.

It is an observer, not part of the service: its own MQTT connection with a clean session and a
random client id (so it never takes over another client's session), subscribed to
``devices/+/status`` and ``devices/+/telemetry/+`` (or one device's, or one kind). Every message
becomes one line, human or JSON; a message that does not decode becomes an error line naming the
reason, never a crash. Retained status messages arrive first, as the broker replays them; on a
broker that keeps them from wildcards (RabbitMQ), a device's arrives once the tail hears from it
(``tail_status``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

import protocol
from runtime.credentials import ClientCreds, session_auth
from runtime.display import printable
from runtime.mqtt import MqttSession

from .tail_status import status_follower

log = logging.getLogger(__name__)

KINDS = ("metrics", "events", "drift", "status", "all")
#: messages waiting to be printed; beyond it (a stalled terminal) new ones are dropped
QUEUE_SIZE = 10_000
_WAKE_S = 0.2


def tail_filters(
    topics: protocol.Topics, kind: str = "all", device: str | None = None
) -> list[str]:
    """The topic filters of ``kind`` (metrics, events, status or all) for one device or all."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    base = topics.device(device) if device is not None else f"{topics.base}/devices/+"
    return {
        "metrics": [f"{base}/telemetry/metrics"],
        "events": [f"{base}/telemetry/events"],
        "drift": [f"{base}/telemetry/drift"],
        "status": [f"{base}/status"],
        "all": [f"{base}/status", f"{base}/telemetry/+"],
    }[kind]


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "metrics": protocol.MetricsSample.decode,
    "events": protocol.DeviceEvent.decode,
    "status": protocol.DeviceStatus.decode,
    "drift": protocol.DriftSample.decode,
}


def decode_message(
    topics: protocol.Topics,
    topic: str,
    payload: bytes,
    *,
    retained: bool = False,
    received_at: float | None = None,
) -> dict[str, Any]:
    """One message as a JSON-ready record: ``topic``, ``device``, ``kind`` (metrics, events,
    status), ``retained``, ``received_at``, then ``message`` (the decoded fields), or ``error``
    (``reason`` and ``detail``) and ``payload`` (hex) when it does not decode, or ``cleared``
    when the payload is empty (a retained message being deleted)."""
    prefix = f"{topics.base}/devices/"
    device, _, rest = topic.removeprefix(prefix).partition("/")
    kind = {
        "status": "status",
        "telemetry/metrics": "metrics",
        "telemetry/events": "events",
        "telemetry/drift": "drift",
    }.get(rest, rest)
    record: dict[str, Any] = {
        "received_at": time.time() if received_at is None else received_at,
        "topic": topic,
        "device": device,
        "kind": kind,
        "retained": retained,
    }
    if not payload:
        record["cleared"] = True
        return record
    try:
        if not topic.startswith(prefix) or not protocol.is_valid_name(device):
            raise protocol.MalformedMessage(f"unexpected topic {topic!r}")
        decoder = _DECODERS.get(kind)
        if decoder is None:
            raise protocol.MalformedMessage(f"unknown kind {kind!r}", reason="unknown-kind")
        message = decoder(payload)
        if message.device != device:
            raise protocol.MalformedMessage(
                f"payload names device {message.device!r}", reason="device-mismatch"
            )
    except protocol.ProtocolError as exc:
        record["error"] = {"reason": exc.reason, "detail": exc.detail}
        record["payload"] = payload.hex()
        return record
    record["message"] = dataclasses.asdict(message)
    return record


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _releases(active: dict[str, int]) -> str:
    return ",".join(f"{n}@{v}" for n, v in sorted(active.items())) or "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def format_line(record: dict[str, Any]) -> str:
    """The human form of a ``decode_message`` record: time, device, kind, then the figures.
    The time is when the message was made (its ``ts``), else when it was received. One line,
    whatever the device put in its strings: control characters are shown escaped."""
    return printable(_format_line(record))


def _format_line(record: dict[str, Any]) -> str:
    msg = record.get("message")
    ts = msg.get("ts") if msg else None
    head = f"{_clock(ts if ts is not None else record['received_at'])} {record['device']}"
    retained = " (retained)" if record["retained"] else ""
    kind = record["kind"]
    if record.get("cleared"):
        return f"{head} {kind} cleared{retained}"
    if msg is None:
        err = record["error"]
        size = len(record["payload"]) // 2
        return f"{head} ERROR {kind}: {err['reason']}: {err['detail']} ({size} bytes){retained}"
    tail = ""
    if msg.get("hist"):
        tail += " hist"
    if msg.get("dropped"):
        tail += f" dropped={msg['dropped']}"
    if kind == "metrics":
        models = " ".join(
            f"{s['model']}@{s['version']}:{s['inferences']}/{s['errors']}err"
            f"/p95={_ms(s['latency_p95_ms'])}"
            for s in msg["models"]
        )
        return (
            f"{head} metrics seq={msg['seq']} cpu={msg['cpu_pct']:.1f}% rss={msg['rss_mb']:.1f}M "
            f"disk={msg['disk_free_mb']:.0f}M up={msg['uptime_s']:.0f}s "
            f"inf={msg['inferences']} err={msg['errors']} p95={_ms(msg['latency_p95_ms'])} "
            f"active={_releases(msg['active'])}{' ' + models if models else ''}{tail}{retained}"
        )
    if kind == "drift":
        noise = f" epsilon={msg['epsilon']:g}" if msg["epsilon"] is not None else ""
        return (
            f"{head} drift {msg['model']}@{msg['version']} seq={msg['seq']} n={msg['count']} "
            f"cos={msg['cos_mean']:.3f}{noise}{tail}{retained}"
        )
    if kind == "events":
        release = ""
        if msg["model"] is not None:
            release = f" {msg['model']}" + (
                f"@{msg['version']}" if msg["version"] is not None else ""
            )
        extra = "".join(
            f" {k}={msg[k]}" for k in ("reason", "topic", "detail") if msg[k] is not None
        )
        return f"{head} event {msg['event']}{release} seq={msg['seq']}{extra}{tail}{retained}"
    state = "online" if msg["online"] else "offline"
    info = ""
    if msg["online"]:
        info = f" agent={msg['agent'] or '-'} active={_releases(msg['active'])}"
    return f"{head} {state}{info}{retained}"


def format_json(record: dict[str, Any]) -> str:
    """One JSON object on one line; bytes (e.g. in a profile) as hex."""
    return json.dumps(record, sort_keys=True, default=_jsonable)


def run_tail(
    broker_url: str,
    fleet: str = "default",
    *,
    device: str | None = None,
    kind: str = "all",
    count: int | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
    creds: ClientCreds | None = None,
) -> int:
    """Print the stream until ``count`` messages were printed, ``stop`` is set or Ctrl-C
    (KeyboardInterrupt, left to the caller). Returns the number of messages printed."""
    if count is not None and count < 1:
        raise ValueError("--count must be at least 1")
    topics = protocol.Topics(fleet)
    if device is not None:
        protocol.check_name(device, "device id")
    filters = tail_filters(topics, kind, device)
    out = sys.stdout if out is None else out
    stop = threading.Event() if stop is None else stop
    inbox: queue.Queue[tuple[str, bytes, bool, float]] = queue.Queue(maxsize=QUEUE_SIZE)
    dropped = 0
    follower = status_follower(topics, kind, device, lambda topic: session.subscribe([topic]))

    def on_message(topic: str, payload: bytes, retained: bool) -> None:
        nonlocal dropped
        if not follower.admit(topic, payload):
            return
        try:
            inbox.put_nowait((topic, payload, retained, time.time()))
        except queue.Full:
            dropped += 1
            if dropped == 1 or dropped % 1000 == 0:
                log.warning("output too slow: %d messages dropped", dropped)

    session = MqttSession(
        broker_url,
        # with credentials the broker makes the username the client id anyway
        creds.client_id if creds else f"modelcast-tail-{uuid.uuid4().hex[:12]}",
        on_message=on_message,
        on_connect=lambda _present: session.subscribe(filters),
        clean_session=True,
        **session_auth(creds, broker_url),
    )
    log.info("tailing %s on %s", " and ".join(filters), session.broker_list)
    session.start()
    try:
        return _print_stream(topics, inbox, out, stop, count, as_json)
    finally:
        session.stop()


def _print_stream(
    topics: protocol.Topics,
    inbox: queue.Queue[tuple[str, bytes, bool, float]],
    out: TextIO,
    stop: threading.Event,
    count: int | None,
    as_json: bool,
) -> int:
    """Decode and print what arrives in ``inbox`` until ``count`` lines, ``stop`` or a closed
    pipe; returns the lines printed."""
    printed = 0
    while not stop.is_set() and (count is None or printed < count):
        try:
            topic, payload, retained, received_at = inbox.get(timeout=_WAKE_S)
        except queue.Empty:
            continue
        record = decode_message(topics, topic, payload, retained=retained, received_at=received_at)
        line = format_json(record) if as_json else format_line(record)
        try:
            print(line, file=out, flush=True)
        except BrokenPipeError:  # `... | head`: the reader is gone, which is fine
            _silence_stdout(out)
            break
        printed += 1
    return printed


def _silence_stdout(out: TextIO) -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not complain."""
    if out is not sys.stdout:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
