"""What the edge trusts, and how it changes: the root it started from (``--trust``), the root
rotations it followed since, the revocation list, and the last command it accepted. Persisted in
``DATA/trust.json`` so a restart neither forgets a rotation nor accepts a replayed command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from protocol import (
    Command,
    TrustedRoot,
    VerifyKey,
    apply_revocations,
    follow_chain,
    open_command,
)
from runtime.files import read_json, write_json_atomic


def load_trust(path: Path) -> TrustedRoot:
    """The root public key (PEM) this device trusts."""
    return TrustedRoot(VerifyKey.from_pem(path.read_bytes()))


class TrustStore:
    def __init__(self, trust_path: Path, data: Path) -> None:
        self._path = data / "trust.json"
        origin = load_trust(trust_path)
        self.origin = origin.root.key_id
        saved = read_json(self._path, {})
        self.command_seq = -1
        self.trust = origin
        # what we followed from this very root; a different --trust file starts afresh
        if saved.get("origin") == self.origin:
            self.trust = replace(
                origin,
                root=VerifyKey(bytes.fromhex(saved["root"])),
                root_version=int(saved["root_version"]),
                revoked=frozenset(saved.get("revoked", ())),
                revocations_seq=int(saved.get("revocations_seq", -1)),
            )
            self.command_seq = int(saved.get("command_seq", -1))

    def _save(self) -> None:
        t = self.trust
        write_json_atomic(
            self._path,
            {
                "origin": self.origin,
                "root": t.root.raw.hex(),
                "root_version": t.root_version,
                "revoked": sorted(t.revoked),
                "revocations_seq": t.revocations_seq,
                "command_seq": self.command_seq,
            },
        )

    def follow_root_chain(self, data: bytes) -> bool:
        """Apply a root chain; True if the root changed."""
        new = follow_chain(self.trust, data)
        if new.root_version == self.trust.root_version:
            return False
        self.trust = new
        self._save()
        return True

    def apply_revocations(self, data: bytes, now: float) -> frozenset[str]:
        """Apply a revocation list; returns the key ids newly revoked."""
        new = apply_revocations(self.trust, data, now=now)
        added = new.revoked - self.trust.revoked
        changed = new.revocations_seq != self.trust.revocations_seq
        self.trust = new
        if changed:
            self._save()
        return added

    def open_command(self, data: bytes, *, now: float, fleet: str, device: str) -> Command:
        command = open_command(
            self.trust, data, now=now, fleet=fleet, device=device, last_seq=self.command_seq
        )
        self.command_seq = command.seq
        self._save()
        return command
