"""A real text model deployed like any other: the edge verifies it, tokenises on the device and
answers texts with vectors on its local endpoint; a device that cannot tokenise refuses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_node.text import load_embedder
from modelcast.textmodels.samples import CASES
from protocol import DeviceStatus, UpdateState
from protocol.textmodel import KIND_FILE, KIND_TENSORS, KIND_TEXT_EMBEDDING
from testkit.synthetic_models import make_model
from tests.support import local_http
from tests.support.env import Env
from tests.support.fleet import REPO, release_and_deploy
from tests.support.local_http import post
from tests.support.minilm import BuiltMiniLM


def http_port(env: Env, device: str) -> int:
    return local_http.http_port(env.watch, device)


def test_a_deployed_minilm_answers_texts_on_the_local_endpoint(
    env: Env, minilm: BuiltMiniLM
) -> None:
    env.start_coordinator()
    release_and_deploy(env.registry, env.keys, minilm.int8, "minilm", 1, env.fleet)
    plain = make_model(env.tmp / "plain.onnx", 4096, inputs=4)
    release_and_deploy(env.registry, env.keys, plain, "plain", 1, env.fleet)
    assert env.registry.release(env.fleet, "minilm", 1).model_kind == KIND_TEXT_EMBEDDING  # type: ignore[union-attr]
    assert env.registry.release(env.fleet, "plain", 1).model_kind == KIND_TENSORS  # type: ignore[union-attr]

    env.edge("d1")
    env.watch.wait_active("d1", "minilm", 1, timeout=120)
    env.watch.wait_active("d1", "plain", 1, timeout=120)
    port = http_port(env, "d1")
    status = [
        DeviceStatus.decode(m.payload)
        for m in env.watch.recorder.messages
        if m.topic == env.watch.topics.status("d1")
    ]
    assert status[-1].profile["model_kinds"] == [KIND_TENSORS, KIND_TEXT_EMBEDDING, KIND_FILE]

    texts = [s for case in CASES for s in (case.query, case.related, *case.unrelated)]
    code, answer = post(port, "minilm", {"texts": texts})
    assert code == 200, answer
    assert answer["model"] == "minilm" and answer["version"] == 1
    assert answer["dimensions"] == 384 and answer["latency_ms"] > 0
    vectors = np.array(answer["embeddings"], dtype=np.float32)
    # the edge's copy is the released file: same vectors as the file embeds here
    np.testing.assert_allclose(vectors, load_embedder(minilm.int8).embed(texts), atol=1e-5)
    per_case = 2 + len(CASES[0].unrelated)
    for i, _case in enumerate(CASES):
        query, related, *unrelated = vectors[i * per_case : (i + 1) * per_case]
        assert query @ related > max(query @ u for u in unrelated) + 0.3

    # texts to a tensor model, tensors to the text model, malformed bodies: clear 4xx answers
    code, answer = post(port, "plain", {"texts": ["hello"]})
    assert code == 400 and "not a text-embedding model" in answer["error"]
    ids = [[101, 7592, 102]]
    code, answer = post(
        port, "minilm", {"inputs": {"input_ids": ids, "attention_mask": [[1, 1, 1]]}}
    )
    assert code == 200 and len(answer["outputs"]["embedding"][0]) == 384
    for bad in (
        {"texts": "not a list"},
        {"texts": []},
        {"texts": [1]},
        {"texts": ["a"], "inputs": {}},
    ):
        code, answer = post(port, "minilm", bad)
        assert code == 400, (bad, answer)
    code, _ = post(port, "nope", {"texts": ["a"]})
    assert code == 404


def test_an_edge_that_cannot_tokenise_refuses_a_text_model(
    env: Env, minilm: BuiltMiniLM, tmp_path: Path
) -> None:
    # `tokenizers` hidden from the edge process, as on a device without the extra: None in
    # sys.modules makes both find_spec and import say it is not there
    shim = tmp_path / "no-tokenizers"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\n\nsys.modules['tokenizers'] = None\n")
    env.start_coordinator()
    release_and_deploy(env.registry, env.keys, minilm.int8, "minilm", 1, env.fleet)
    env.edge("small", process_env={"PYTHONPATH": str(shim)})
    state = env.watch.wait_state(
        "small", lambda s: s.state is UpdateState.FAILED and s.version == 1, timeout=120
    )
    assert "cannot tokenise" in (state.reason or "")
    event = env.watch.wait_event("small", lambda e: e.event == "activation-failed")
    assert event.model == "minilm" and "pip install" in (event.detail or "")
    topic = env.watch.topics.status("small")
    profiles = [
        DeviceStatus.decode(m.payload).profile
        for m in env.watch.recorder.messages
        if m.topic == topic
    ]
    assert profiles and profiles[-1]["model_kinds"] == [KIND_TENSORS, KIND_FILE]


def test_demo_ships_minilm_and_every_edge_answers_the_similarity_query(
    minilm: BuiltMiniLM, tmp_path: Path
) -> None:
    """``modelcast demo`` with the extra installed: MiniLM released as two variants, fp32 to
    the big edge and int8 to the small ones (a variant rule on their ``class`` tag), and each
    edge (the late joiner included) names the related sentence as the closest, from its own
    endpoint."""
    result = subprocess.run(
        [sys.executable, "-m", "modelcast.cli", "demo", "--edges", "2", "--workdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, f"stdout:\n{out[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    related = CASES[0].related
    answers = [line for line in out.splitlines() if line.startswith("  edge-")]
    assert len(answers) == 2 + 3, out[-4000:]  # 2 edges on @1; 2 edges and the late one on @2
    assert all(repr(related) in line for line in answers), answers
    assert sum("(minilm@1 " in line for line in answers) == 2
    assert sum("(minilm@2 " in line for line in answers) == 3
    # edge-1 is the big one; edge-2 and the late joiner are small
    assert [line.split()[1] for line in answers] == ["(minilm@1", "(minilm@1"] + ["(minilm@2"] * 3
    variants = [line.split()[2].rstrip(",") for line in answers]
    assert variants == ["fp32", "int8", "fp32", "int8", "int8"], answers
