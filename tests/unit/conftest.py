"""Fixtures shared by the release tests (a module's own fixture of the same name wins)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.keystore import ReleaseKeys, init_keys, load_release_keys
from coordinator.registry import Registry


@pytest.fixture
def keys(tmp_path: Path) -> ReleaseKeys:
    """Fresh release keys under ``tmp_path/keys``."""
    init_keys(tmp_path / "keys")
    return load_release_keys(tmp_path / "keys")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A coordinator database at ``tmp_path/coord.db``, closed after the test."""
    with contextlib.closing(Registry(tmp_path / "coord.db")) as opened:
        yield opened
