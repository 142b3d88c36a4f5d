"""``python -m tests.support.flooder HOST PORT FLEET COUNT RATE``: a device ("flooder") flooding
the coordinator with valid reports, from a process of its own, as a device is (in the test's
process it would take the interpreter's lock from the coordinator under test).

Six metrics samples, an event and a state message in every eight, each distinct (its own
``seq``), published at QoS 0 at ``RATE`` messages a second. It prints ``flooding`` once
connected, just before the first; then, on the same connection and so after every flood message
the broker passes on, one metrics sample of the device "sentinel" (QoS 1, acknowledged); then
``published COUNT``.
"""

from __future__ import annotations

import argparse
import threading
import time

import protocol
from testkit.plain_mqtt import plain_client

DEVICE = "flooder"
SENTINEL = "sentinel"
#: messages published between two looks at the clock
STEP = 100


def sample(device: str, seq: int) -> bytes:
    return protocol.MetricsSample(device=device, boot="b", seq=seq, ts=time.time()).encode()


def flood_messages(topics: protocol.Topics, count: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(1, count + 1):
        if i % 8 == 0:
            state = protocol.DeviceState(DEVICE, protocol.UpdateState.IDLE, ts=time.time())
            out.append((topics.state(DEVICE), state.encode()))
        elif i % 8 == 7:
            event = protocol.DeviceEvent(DEVICE, "activated", ts=time.time(), boot="b", seq=i)
            out.append((topics.telemetry(DEVICE, "events"), event.encode()))
        else:
            out.append((topics.telemetry(DEVICE, "metrics"), sample(DEVICE, i)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("fleet")
    parser.add_argument("count", type=int)
    parser.add_argument("rate", type=float)
    args = parser.parse_args()
    topics = protocol.Topics(args.fleet)
    messages = flood_messages(topics, args.count)
    client = plain_client(f"{DEVICE}-{args.fleet}")
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not connected.wait(30):
        raise SystemExit("flooder: no CONNACK")
    print("flooding", flush=True)
    started = time.monotonic()
    for i, (topic, payload) in enumerate(messages):
        if i % STEP == 0:  # the pace of a load generator, nothing waits on it
            time.sleep(max(0.0, started + i / args.rate - time.monotonic()))
        client.publish(topic, payload, qos=0)
    last = client.publish(topics.telemetry(SENTINEL, "metrics"), sample(SENTINEL, 1), qos=1)
    last.wait_for_publish(120)
    if not last.is_published():
        raise SystemExit("flooder: the sentinel was not acknowledged")
    print(f"published {len(messages)}", flush=True)
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()
