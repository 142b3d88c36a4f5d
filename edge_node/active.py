"""Which model versions are active, persisted so that a restart (or SIGKILL) always finds a whole,
verified, activated model: the pointer ``active.json`` is only ever replaced atomically, and only
after the new version passed every check."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from protocol.textmodel import KIND_TENSORS
from runtime.files import read_json, write_json_atomic

from .storage import kept_sha256

log = logging.getLogger("modelcast.edge")


@dataclass(frozen=True)
class ActiveModel:
    name: str
    version: int
    path: Path
    sha256: str  # the whole file's, from the signed manifest it was activated by (hex)
    previous_version: int | None = None
    previous_path: Path | None = None
    variant: str | None = None  # which build of the version, when it has several
    previous_variant: str | None = None
    #: the release's ``model_kind`` (a ``file`` is never loaded); the previous one's, if known
    kind: str = KIND_TENSORS
    previous_kind: str | None = None
    #: the previous file's signed sha256 (hex); None: not known
    previous_sha256: str | None = None


def _from_json(name: str, e: dict[str, Any]) -> ActiveModel:
    previous_path = Path(e["previous_path"]) if e.get("previous_path") else None
    previous_sha256 = e.get("previous_sha256")
    if previous_sha256 is None and previous_path is not None:
        # written before the previous file's hash was kept: the manifest kept beside it knows
        previous_sha256 = kept_sha256(previous_path.parent)
    return ActiveModel(
        name=name,
        version=int(e["version"]),
        path=Path(e["path"]),
        sha256=str(e["sha256"]),
        previous_version=e.get("previous_version"),
        previous_path=previous_path,
        variant=e.get("variant"),
        previous_variant=e.get("previous_variant"),
        kind=str(e.get("kind", KIND_TENSORS)),
        previous_kind=e.get("previous_kind"),
        previous_sha256=previous_sha256,
    )


def _to_json(m: ActiveModel) -> dict[str, Any]:
    return {
        "version": m.version,
        "path": str(m.path),
        "sha256": m.sha256,
        "previous_version": m.previous_version,
        "previous_path": str(m.previous_path) if m.previous_path else None,
        **({"previous_sha256": m.previous_sha256} if m.previous_sha256 else {}),
        **({"variant": m.variant} if m.variant else {}),
        **({"previous_variant": m.previous_variant} if m.previous_variant else {}),
        **({"kind": m.kind} if m.kind != KIND_TENSORS else {}),
        **({"previous_kind": m.previous_kind} if m.previous_kind else {}),
    }


class ActiveModels:
    """The ``active.json`` pointer file: one entry per model name."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self._path = data / "active.json"
        self._models: dict[str, ActiveModel] = {
            name: _from_json(name, e) for name, e in read_json(self._path, {}).items()
        }

    def get(self, name: str) -> ActiveModel | None:
        return self._models.get(name)

    def all(self) -> list[ActiveModel]:
        return [m for _, m in sorted(self._models.items())]

    def versions(self) -> dict[str, int]:
        return {name: m.version for name, m in sorted(self._models.items())}

    def variants(self) -> dict[str, str]:
        """The variant of each active model that has one."""
        return {n: m.variant for n, m in sorted(self._models.items()) if m.variant}

    def switch(
        self,
        name: str,
        version: int,
        path: Path,
        sha256: str,
        variant: str | None = None,
        kind: str = KIND_TENSORS,
    ) -> ActiveModel:
        """Make ``version`` active; the one it replaces becomes ``previous`` (kept for rollback);
        older versions on disk are removed. The active version itself again (its file
        repaired) keeps the previous one it had."""
        old = self._models.get(name)
        new = ActiveModel(name, version, path, sha256, variant=variant, kind=kind)
        if old is not None and old.version == version:
            new = replace(old, path=path, sha256=sha256, variant=variant, kind=kind)
        elif old is not None:
            new = replace(
                new,
                previous_version=old.version,
                previous_path=old.path,
                previous_variant=old.variant,
                previous_kind=old.kind,
                previous_sha256=old.sha256,
            )
        models = dict(self._models)
        models[name] = new
        write_json_atomic(self._path, {n: _to_json(m) for n, m in models.items()})
        self._models = models
        self._prune(new)
        return new

    def _prune(self, model: ActiveModel) -> None:
        keep = {model.version, model.previous_version}
        root = self.data / "models" / model.name
        for entry in root.iterdir() if root.exists() else []:
            if (
                entry.is_dir()
                and entry.name.isdigit()
                and int(entry.name) < model.version
                and int(entry.name) not in keep
            ):
                shutil.rmtree(entry, ignore_errors=True)


@dataclass
class AgentRecord:
    """What the agent remembers across restarts besides models: replay and retry protection."""

    index_seq: int = -1
    failed: tuple[str, ...] = ()  # release ids (hex) that failed to activate: never retried
    #: {model: version} rolled back from by a signed directive: not upgraded to again
    held_back: dict[str, int] = field(default_factory=dict)
    #: the newest signed time verified (an index's ``issued``): expiry is never checked against
    #: an earlier time, whatever the clock says (``trusted_time``)
    time_floor: float = 0.0

    def saw_signed(self, issued: float) -> None:
        self.time_floor = max(self.time_floor, issued)

    @classmethod
    def load(cls, data: Path) -> AgentRecord:
        raw = read_json(data / "agent.json", {})
        return cls(
            index_seq=int(raw.get("index_seq", -1)),
            failed=tuple(raw.get("failed", ())),
            held_back={str(k): int(v) for k, v in raw.get("held_back", {}).items()},
            time_floor=float(raw.get("time_floor", 0.0)),
        )

    def save(self, data: Path) -> None:
        write_json_atomic(
            data / "agent.json",
            {
                "index_seq": self.index_seq,
                "failed": list(self.failed[-100:]),
                "held_back": self.held_back,
                "time_floor": self.time_floor,
            },
        )

    def save_or_log(self, data: Path, device: str) -> None:
        """Save; a failure is logged (the record protects against replays and retries: losing
        an update of it is no reason to stop)."""
        try:
            self.save(data)
        except OSError as exc:
            log.error("edge %s: cannot save agent record: %s", device, exc)
