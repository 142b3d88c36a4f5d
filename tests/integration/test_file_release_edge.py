"""A release of ``--kind file`` on a real edge: delivered and verified chunk by chunk like a
model, activated with the same atomic switch (and rolled back like one), never loaded: the
local inference endpoint refuses it and says why."""

from __future__ import annotations

import json

from protocol.textmodel import KIND_FILE
from runtime.files import sha256_file
from tests.support.env import Env
from tests.support.local_http import get, http_port, post

CHUNK = 4096


def release_file(env: Env, data: bytes, version: int) -> None:
    path = env.tmp / f"notes-{version}.txt"
    path.write_bytes(data)
    env.registry.add_release(
        path,
        name="notes",
        version=version,
        keys=env.keys.release,
        fleet=env.fleet,
        chunk_size=CHUNK,
        model_kind=KIND_FILE,
    )
    env.registry.deploy("notes", version, fleet=env.fleet)


def test_a_file_release_is_delivered_verified_and_activated_but_never_run(env: Env) -> None:
    first = b"line of notes\n" * 2000  # 28,000 bytes: 7 chunks, the last one short
    second = b"other notes\n" * 1000
    env.start_coordinator()
    release_file(env, first, 1)
    edge = env.edge("keeper")
    env.watch.wait_active("keeper", "notes", 1)
    path = edge.model_path("notes", 1)
    assert path.read_bytes() == first
    pointer = json.loads((edge.data / "active.json").read_bytes())["notes"]
    assert pointer["kind"] == KIND_FILE and pointer["sha256"] == sha256_file(path).hex()
    env.watch.wait_event("keeper", lambda e: e.event == "activated" and e.version == 1)
    events = [e.event for e in env.watch.events("keeper") if e.model == "notes"]
    assert events[:3] == ["downloading", "verified", "activated"], events

    port = http_port(env.watch, "keeper")
    assert get(port, "/v1/models") == (200, {"models": {"notes": 1}})
    code, answer = post(port, "notes", {"inputs": {"x": [[0.0]]}})
    assert code == 409, answer
    assert answer["error"] == (
        "notes@1 is a file release (model_kind file): it is delivered and verified on this "
        "device, never run"
    )
    assert post(port, "notes", {"texts": ["a"]})[0] == 409

    # a new version switches atomically and keeps the old one for a rollback, like a model
    release_file(env, second, 2)
    env.watch.wait_active("keeper", "notes", 2)
    assert edge.model_path("notes", 2).read_bytes() == second
    pointer = json.loads((edge.data / "active.json").read_bytes())["notes"]
    assert (pointer["previous_version"], pointer["previous_kind"]) == (1, KIND_FILE)
    from modelcast.cli import main

    db = str(env.tmp / "coord.db")
    assert main(["rollback", "notes@1", "--db", db, "--fleet", env.fleet]) == 0
    env.watch.wait_event("keeper", lambda e: e.event == "rolled-back" and e.version == 1)
    env.watch.wait_active("keeper", "notes", 1)
    assert edge.model_path("notes", 1).read_bytes() == first
    assert get(port, "/v1/models") == (200, {"models": {"notes": 1}})
