"""What differs between brokers, handled (issue 16, item 2), on each broker.

RabbitMQ does not deliver retained messages through wildcard subscriptions, so a coordinator that
starts while devices are already there, or a new ``telemetry tail``, would never hear the devices'
retained status and state. The coordinator asks every device to report again (a signed report
request on each connect) and, on RabbitMQ, subscribes to the exact topics of the devices it knows;
the tail subscribes to the exact status topic of each device it hears from.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import pytest

from testkit.cli_process import REPO
from tests.support.env import Env

#: edges that send no telemetry during the test: what the coordinator learns, it learns from
#: status and state alone
QUIET = ("--telemetry-interval", "3600")
TIMEOUT = 60.0
TAIL = (sys.executable, "-m", "modelcast.cli", "telemetry", "tail")


def rows(env: Env) -> dict[str, dict[str, Any]]:
    return {r["device_id"]: r for r in env.registry.devices(env.fleet)}


def wait_coordinator_sees(env: Env, want: dict[str, tuple[bool, str]]) -> None:
    """Until every device of ``want`` has that (online, state) in the coordinator's registry
    (read from another connection, polled: the registry has no event to wait on)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        have = rows(env)
        seen = {d: (have[d]["online"], have[d].get("state")) for d in want if d in have}
        if seen == want:
            return
        assert time.monotonic() < deadline, f"the coordinator sees {seen}, not {want}"
        time.sleep(0.2)


@pytest.mark.portable
def test_a_restarted_coordinator_learns_what_changed_while_it_was_away(env: Env) -> None:
    first = env.start_coordinator()
    stays = env.edge("stays", extra=QUIET)
    leaves = env.edge("leaves", extra=QUIET)
    for edge in (stays, leaves):
        env.wait_online(edge.device)
    before = {"stays": (True, "idle"), "leaves": (True, "idle")}
    wait_coordinator_sees(env, before)
    first.stop()

    # while it is away: one device leaves (its retained status says offline), one joins
    leaves.stop()
    joins = env.edge("joins", extra=QUIET)
    env.wait_online(joins.device)

    # a coordinator whose broker session is gone (a new client id: moved to another machine, or
    # a broker that lost its sessions): nothing queued for it, it must ask
    env.start_coordinator(client_id=f"coordinator-{env.fleet}-anew")
    after = {"stays": (True, "idle"), "leaves": (False, "idle"), "joins": (True, "idle")}
    wait_coordinator_sees(env, after)


def _lines(stream: IO[str], out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


@pytest.fixture
def tail_of(env: Env) -> Iterator[queue.Queue[str]]:
    """``modelcast telemetry tail --json`` of the whole fleet, its lines in a queue."""
    proc = subprocess.Popen(
        [*TAIL, "--broker", env.broker.url, "--fleet", env.fleet, "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        yield lines
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.portable
def test_a_new_tail_prints_the_status_of_devices_that_were_there_before_it(
    env: Env, request: pytest.FixtureRequest
) -> None:
    env.edge("early")  # telemetry every second (testkit's default)
    env.wait_online("early")
    lines: queue.Queue[str] = request.getfixturevalue("tail_of")
    seen: list[dict[str, Any]] = []
    while not any(r["kind"] == "status" and r["device"] == "early" for r in seen):
        try:
            seen.append(json.loads(lines.get(timeout=TIMEOUT)))
        except queue.Empty:
            pytest.fail(f"no status of 'early' from the tail; it printed {seen}")
    status = next(r for r in seen if r["kind"] == "status")
    assert status["message"]["online"] is True and status["retained"] is True
    # two samples later: printed once, even where it reached the tail through both a wildcard
    # and an exact subscription
    after = [json.loads(lines.get(timeout=TIMEOUT)) for _ in range(2)]
    assert all(r["kind"] == "metrics" for r in after), after
    assert [r["kind"] for r in seen + after].count("status") == 1
