"""What ``modelcast release`` refuses before anything is signed: a file onnx cannot parse, one
onnxruntime cannot load, a model that fails its one inference or misses its acceptance vectors;
and what it ships as it is when asked: ``--kind file``. Nothing refused is stored."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import protocol
from coordinator.errors import RegistryError
from coordinator.keystore import ReleaseKeys, init_keys, load_release_keys
from coordinator.registry import Registry
from modelcast.acceptance import load_vectors, make_vectors
from modelcast.cli import EXIT_FAILED, EXIT_OK, main
from protocol.textmodel import KIND_FILE, KIND_TENSORS
from runtime.errors import AcceptanceMiss, ModelCheckError
from runtime.model_check import check_model, load_session
from testkit.synthetic_models import make_failing_model, make_model

NOTES = b"notes\n"  # 6 bytes: "released as a tensors model" before these checks


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
def keys(keydir: Path) -> ReleaseKeys:
    return load_release_keys(keydir)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path / "coord.db")
    yield reg
    reg.close()


def refused(registry: Registry, keys: ReleaseKeys, path: Path, **kwargs: object) -> str:
    """Release ``path`` as m@1, expecting a refusal that stores nothing: what it says."""
    with pytest.raises(RegistryError) as info:
        registry.add_release(path, name="m", version=1, keys=keys, **kwargs)  # type: ignore[arg-type]
    assert registry.releases("default") == []
    blobs = registry.blob_dir
    assert not blobs.exists() or not list(blobs.iterdir()), "a refused release left a blob"
    return str(info.value)


def test_a_text_file_is_refused_naming_the_file_and_what_onnx_said(
    registry: Registry, keys: ReleaseKeys, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(NOTES)
    said = refused(registry, keys, notes)
    assert said.startswith(f"cannot release m@1: {notes}: not an ONNX model (onnx: ")
    assert "Error parsing message" in said  # protobuf's own words
    assert "--kind file ships any file as it is" in said


def test_a_truncated_model_is_refused(
    registry: Registry, keys: ReleaseKeys, tmp_path: Path
) -> None:
    whole = make_model(tmp_path / "whole.onnx", 20_000, inputs=16).read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(whole[: len(whole) - 10])
    assert f"{cut}: not an ONNX model" in refused(registry, keys, cut)


def test_a_model_that_loads_but_fails_to_run_is_refused(
    registry: Registry, keys: ReleaseKeys, tmp_path: Path
) -> None:
    failing = make_failing_model(tmp_path / "failing.onnx")
    load_session(failing)  # it does load: only running it shows the fault
    said = refused(registry, keys, failing)
    assert said.startswith(f"cannot release m@1 ({failing}): test inference failed: ")
    assert "Reshape" in said  # onnxruntime's message names the node that failed


def test_missed_acceptance_vectors_are_refused_naming_the_case_and_the_largest_error(
    registry: Registry, keys: ReleaseKeys, tmp_path: Path
) -> None:
    model = make_model(tmp_path / "m.onnx", 4_000, seed=1, inputs=8)
    other = make_model(tmp_path / "o.onnx", 4_000, seed=2, inputs=8)
    right = make_vectors(model, tmp_path / "right.npz", seed=3)
    wrong = make_vectors(other, tmp_path / "wrong.npz", seed=3)
    vectors = load_vectors([right, wrong], 1e-4)  # case 0 passes, case 1 misses
    with pytest.raises(AcceptanceMiss) as miss:
        check_model(model, acceptance=vectors)
    assert miss.value.case == 1 and miss.value.max_error > 1e-4
    said = refused(registry, keys, model, acceptance=vectors)
    assert f"max error {miss.value.max_error:.6g} in case 1 (output 'y')" in said
    assert "exceeds tolerance 0.0001" in said
    record = registry.add_release(
        model, name="m", version=1, keys=keys, acceptance=load_vectors([right], 1e-4)
    )
    assert record.model_kind == KIND_TENSORS


def test_the_check_runs_on_the_staged_copy_but_names_the_operators_file(
    registry: Registry, keys: ReleaseKeys, tmp_path: Path
) -> None:
    seen: list[tuple[Path, str | None, str | None]] = []

    def check(
        path: Path,
        kind: str | None = None,
        acceptance: protocol.Acceptance | None = None,
        *,
        label: str | None = None,
    ) -> float | None:
        seen.append((path, kind, label))
        raise ModelCheckError(f"onnxruntime cannot load {label}: stand-in")

    model = make_model(tmp_path / "m.onnx", 4_000, inputs=8)
    said = refused(registry, keys, model, check=check)
    ((path, kind, label),) = seen
    assert path.parent == registry.blob_dir and path != model  # exactly the bytes to sign
    assert (kind, label) == (KIND_TENSORS, str(model))
    assert said == f"cannot release m@1 ({model}): onnxruntime cannot load {model}: stand-in"


def test_onnxruntime_messages_name_the_file_not_a_staged_copy(tmp_path: Path) -> None:
    staged = tmp_path / ".staged-x.tmp"
    staged.write_bytes(b"\x08" * 64)
    with pytest.raises(ModelCheckError) as info:
        load_session(staged, label="model.onnx")
    assert str(staged) not in str(info.value)
    assert str(info.value).startswith("onnxruntime cannot load model.onnx: ")


def test_kind_file_ships_any_bytes_unchecked(
    registry: Registry, keys: ReleaseKeys, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(NOTES)

    def never(*args: object, **kwargs: object) -> float | None:
        raise AssertionError("a file release is never loaded")

    record = registry.add_release(
        notes, name="m", version=1, keys=keys, model_kind=KIND_FILE, check=never
    )
    assert (record.model_kind, record.size) == (KIND_FILE, len(NOTES))
    assert Path(record.blob_path).read_bytes() == NOTES
    vectors = load_vectors(
        [make_vectors(make_model(tmp_path / "m.onnx", 4_000), tmp_path / "v.npz")], 1
    )
    with pytest.raises(RegistryError, match="acceptance vectors need a model"):
        registry.add_release(
            notes, name="m", version=2, keys=keys, model_kind=KIND_FILE, acceptance=vectors
        )


def test_the_cli_refuses_a_non_model_with_exit_1_and_ships_it_with_kind_file(
    tmp_path: Path, keydir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(NOTES)
    db = tmp_path / "cli.db"
    args = ["release", str(notes), "--name", "m", "--version", "1", "--db", str(db)]
    args += ["--keys", str(keydir)]
    assert main(args) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith(
        f"modelcast release: error: cannot release m@1: {notes}: not an ONNX model (onnx: "
    )
    assert err.endswith("; --kind file ships any file as it is\n")
    assert main([*args, "--kind", "file"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("released m@1 (file, 6 bytes, 1 chunks, sha256 ")
    assert os.path.getsize(db) > 0
