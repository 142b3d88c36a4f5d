"""Test keys and releases. The edge processes and the fleet watcher the tests run are
``testkit.edge_process`` and ``testkit.fleet_watch``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coordinator.delta_build import DEFAULT_DELTA_BASES
from coordinator.keystore import ReleaseKeys, init_keys, load_release_keys
from coordinator.registry import Registry
from protocol import DEFAULT_CHUNK_SIZE, Acceptance
from testkit.cli_process import REPO

__all__ = ["REPO", "Keys", "devices_check_only", "make_keys", "release_and_deploy"]


@dataclass
class Keys:
    dir: Path
    release: ReleaseKeys

    @property
    def root_pub(self) -> Path:
        return self.dir / "root.pub"


def make_keys(path: Path) -> Keys:
    init_keys(path)
    return Keys(path, load_release_keys(path))


def devices_check_only(
    path: Path,
    kind: str | None = None,
    acceptance: Acceptance | None = None,
    *,
    label: str | None = None,
) -> float | None:
    """A release check that passes everything (``Registry.add_release(check=...)``): so a test
    can ship what only the devices' own check catches (a model that fails on their runtime, or
    misses its acceptance vectors there) and watch the fleet refuse it."""
    return None


def release_and_deploy(
    registry: Registry,
    keys: Keys,
    model: Path,
    name: str,
    version: int,
    fleet: str,
    chunk_size: int | None = None,
    delta_bases: int | None = None,
) -> None:
    """Release ``model`` as ``name@version`` and deploy it (``chunk_size``, ``delta_bases``:
    the registry's defaults unless given)."""
    registry.add_release(
        model,
        name=name,
        version=version,
        keys=keys.release,
        fleet=fleet,
        chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
        delta_bases=DEFAULT_DELTA_BASES if delta_bases is None else delta_bases,
    )
    registry.deploy(name, version, fleet=fleet)
