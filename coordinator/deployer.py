"""What the coordinator publishes retained: release manifests and the signed deployment index.

Decides, from the registry's deployments, when a new index is due (targets changed, or the
current one is past half its lifetime) and when the same bytes must simply be published again
(after a reconnect: a broker without persistence forgets retained messages). No MQTT here: the
service publishes the ``Publication`` list in order and then calls ``commit``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

import protocol
from protocol.envelope import Envelope

from .deployments import Deployment
from .keystore import ReleaseKeys
from .registry import Registry
from .release_record import ReleaseRecord

log = logging.getLogger(__name__)

#: Warn about a deployed release whose manifest expires within this many seconds...
EXPIRY_WARNING_S = 7 * 86400.0
#: ...checking this often (and whenever a new index is signed).
EXPIRY_CHECK_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class Publication:
    topic: str
    payload: bytes
    what: str  # for log lines: "index seq 5", "manifest m@3"


@dataclass(frozen=True)
class SignedIndex:
    seq: int
    issued: float
    expires: float
    targets: dict[str, int]
    payload: bytes
    entries: dict[str, protocol.Target]  # the signed entries, rollout blocks and all

    def due_for_renewal(self, now: float) -> bool:
        """Past half its lifetime: re-sign well before any edge would refuse it as expired."""
        return now >= self.issued + (self.expires - self.issued) / 2


@dataclass(frozen=True)
class Plan:
    """Messages to publish, in order (manifests before the index that names them)."""

    publications: tuple[Publication, ...]
    index: SignedIndex
    records: tuple[ReleaseRecord, ...]  # every release the index names (rollout bases too)
    #: the registry's deployments (and variant rules, by model) this plan was made from
    deployed: tuple[dict[str, Deployment], dict[str, str], tuple[protocol.ConfigEntry, ...]]


def check_index_lifetime(seconds: float) -> None:
    if seconds <= 0:
        raise ValueError("index_expires_in must be positive")


def rollout_spec(
    *,
    rollback: bool = False,
    rollout: str | None = None,
    ppm: int = protocol.PPM_ALL,
    select: protocol.Selector | None = None,
    base: int | None = None,
) -> str | None:
    """The ``deployments.spec`` JSON of an index entry (None: a plain target)."""
    spec: dict[str, Any] = {}
    if rollback:
        spec["rollback"] = True
    if rollout is not None:
        spec["rollout"] = {
            "id": rollout,
            "ppm": ppm,
            "select": (select or protocol.Selector()).to_dict(),
            "base": base,
        }
    return json.dumps(spec, sort_keys=True) if spec else None


def spec_releases(deployment: Deployment) -> list[int]:
    """The versions an index entry names: its own and its rollout's base, if any."""
    versions = [deployment.version]
    rollout = json.loads(deployment.spec).get("rollout") if deployment.spec else None
    if rollout and rollout.get("base") is not None:
        versions.append(int(rollout["base"]))
    return versions


def version_target(
    records: list[ReleaseRecord],
    rules: tuple[protocol.VariantRule, ...] = (),
    default: str | None = None,
    *,
    rollback: bool = False,
) -> protocol.Target:
    """The index target of one version: its manifest, or, for a version built in several
    variants, the default variant's with the others and the rules that pick among them."""
    if not records:
        raise KeyError("no release")
    first = records[0]
    if len(records) == 1 and not first.variant:
        return protocol.Target(first.version, first.release_id, rollback)
    by_name = {r.variant: r for r in records}
    main = default if default in by_name else sorted(by_name)[0]
    others = {n: r.release_id for n, r in sorted(by_name.items()) if n != main}
    return protocol.Target(
        first.version,
        by_name[main].release_id,
        rollback,
        variant=main,
        variants=others or None,
        rules=tuple(r for r in rules if r.variant in by_name),
    )


def index_target(
    deployment: Deployment,
    releases: dict[int, list[ReleaseRecord]],
    rules: tuple[protocol.VariantRule, ...] = (),
    default: str | None = None,
) -> protocol.Target:
    """The signed index entry of one deployment, ``releases`` holding the builds it names."""
    spec = json.loads(deployment.spec) if deployment.spec else {}
    target = version_target(
        releases[deployment.version], rules, default, rollback=bool(spec.get("rollback"))
    )
    raw = spec.get("rollout")
    if not raw:
        return target
    base = raw.get("base")
    rollout = protocol.RolloutBlock(
        rollout=str(raw["id"]),
        ppm=int(raw["ppm"]),
        select=protocol.Selector.from_dict(raw.get("select") or {}, "rollout spec"),
        base=None if base is None else version_target(releases[int(base)], rules, default),
    )
    return replace(target, rollout=rollout)


class DeploymentPublisher:
    def __init__(
        self, registry: Registry, keys: ReleaseKeys, fleet: str, *, index_expires_in: float
    ) -> None:
        check_index_lifetime(index_expires_in)
        self._registry = registry
        self._keys = keys
        self._fleet = fleet
        self._topics = protocol.Topics(fleet)
        self._index_expires_in = index_expires_in
        self._current: SignedIndex | None = None
        self._records: tuple[ReleaseRecord, ...] = ()
        self._deployed: tuple[
            dict[str, Deployment], dict[str, str], tuple[protocol.ConfigEntry, ...]
        ] = ({}, {}, ())
        self._expiry_warned: dict[bytes, str] = {}
        self._expiry_checked = float("-inf")
        self._keys_changed = False

    @property
    def records(self) -> tuple[ReleaseRecord, ...]:
        """The releases the current index names."""
        return self._records

    @property
    def current(self) -> SignedIndex | None:
        """The last index that was published (and committed)."""
        return self._current

    def use_keys(self, keys: ReleaseKeys) -> None:
        """Sign with ``keys`` from now on: the next plan re-signs the deployed manifests (same
        bodies, so the same release ids) and a new index, so nothing published still depends on
        a release key about to be revoked (or a root rotated away)."""
        self._keys = keys
        self._keys_changed = True

    def plan(self, now: float, *, republish: bool) -> Plan | None:
        """What to publish now, or None when the published index is still right."""
        entries = self._registry.deployment_entries(self._fleet)
        # rules are part of the index entries: editing them must re-sign it too
        config = self._registry.config_entries(self._fleet)
        deployed = (entries, self._registry.variant_rules_snapshot(self._fleet), config)
        current = self._current
        if self._keys_changed and current is not None:
            records, targets = self._deployed_records(entries)
            index = self._sign(now, records, targets, config)
            return Plan(self._publications(records, index), index, records, deployed)
        if now - self._expiry_checked >= EXPIRY_CHECK_INTERVAL_S:
            self._expiry_checked = now
            for record in self._records:
                self._warn_if_expired(record, now)
        if current is None and not entries and not config:
            return None
        if current is not None and deployed == self._deployed:
            records = self._records
            if current.due_for_renewal(now):
                index = self._sign(now, records, current.entries, config)
                pubs = (
                    self._publications(records, index)
                    if republish
                    else (self._index_publication(index),)
                )
                return Plan(pubs, index, records, deployed)
            if republish:
                return Plan(self._publications(records, current), current, records, deployed)
            return None
        records, targets = self._deployed_records(entries)
        index = self._sign(now, records, targets, config)
        return Plan(self._publications(records, index), index, records, deployed)

    def commit(self, plan: Plan) -> None:
        """The plan's messages were handed to the broker connection: remember and log."""
        previous = self._current
        self._current, self._records, self._deployed = plan.index, plan.records, plan.deployed
        self._keys_changed = False
        if previous is plan.index:
            log.info("republished index seq %d of fleet %s", plan.index.seq, self._fleet)
            return
        before = previous.targets if previous is not None else {}
        changed = [n for n, v in plan.index.targets.items() if before.get(n) != v]
        for name in changed:
            log.info(
                "release %s@%d deployed to fleet %s (index seq %d)",
                name,
                plan.index.targets[name],
                self._fleet,
                plan.index.seq,
            )
        if not changed:
            log.info("renewed index of fleet %s (seq %d)", self._fleet, plan.index.seq)

    # --- internals -----------------------------------------------------------------------
    def _deployed_records(
        self, deployed: dict[str, Deployment]
    ) -> tuple[tuple[ReleaseRecord, ...], dict[str, protocol.Target]]:
        records: list[ReleaseRecord] = []
        targets: dict[str, protocol.Target] = {}
        for name, deployment in sorted(deployed.items()):
            releases: dict[int, list[ReleaseRecord]] = {}
            for version in spec_releases(deployment):
                found = self._registry.release_variants(self._fleet, name, version)
                if found:
                    releases[version] = found
            try:
                rules, default = self._registry.variant_rules(self._fleet, name)
                targets[name] = index_target(deployment, releases, rules, default)
            except (KeyError, ValueError, TypeError, protocol.ProtocolError) as exc:
                # deploy() and the rollout engine check this; only a hand-edited database
                log.error(
                    "deployment %s@%d in fleet %s cannot be published (%s): skipped",
                    name,
                    deployment.version,
                    self._fleet,
                    exc,
                )
                continue
            records.extend(
                self._signed_with_current_key(r) for v in sorted(releases) for r in releases[v]
            )
        return tuple(records), targets

    def _signed_with_current_key(self, record: ReleaseRecord) -> ReleaseRecord:
        """``record``, its manifest re-signed (and stored) if another key or certificate signed
        it. A manifest that does not decode is left alone (``_warn_if_expired`` reports it)."""
        try:
            env = Envelope.decode(record.manifest, len(record.manifest))
        except protocol.ProtocolError:
            return record
        if env.cert == self._keys.cert:
            return record
        signed = protocol.seal(env.kind, env.body, self._keys.key, self._keys.cert)
        self._registry.store_manifest(
            record.fleet, record.name, record.version, signed, variant=record.variant
        )
        log.info(
            "release %s in fleet %s: manifest re-signed with release key %s",
            record.release,
            self._fleet,
            self._keys.key.verify_key.key_id,
        )
        return replace(record, manifest=signed)

    def _sign(
        self,
        now: float,
        records: tuple[ReleaseRecord, ...],
        targets: dict[str, protocol.Target],
        config: tuple[protocol.ConfigEntry, ...],
    ) -> SignedIndex:
        seq = self._registry.next_index_seq(self._fleet)
        expires = now + self._index_expires_in
        if expires > self._keys.expires:
            log.warning(
                "fleet %s: index seq %d outlives the release key certificate "
                "(expires %.0f); edges refuse it from then on",
                self._fleet,
                seq,
                self._keys.expires,
            )
        index = protocol.DeploymentIndex(
            fleet=self._fleet,
            seq=seq,
            issued=now,
            expires=expires,
            targets=dict(targets),
            config=config,
        )
        for record in records:
            self._warn_if_expired(record, now)
        return SignedIndex(
            seq=seq,
            issued=now,
            expires=expires,
            targets={name: t.version for name, t in targets.items()},
            payload=index.sign(self._keys.key, self._keys.cert),
            entries=dict(targets),
        )

    def _warn_if_expired(self, record: ReleaseRecord, now: float) -> None:
        """A manifest's expiry is part of its signed identity (the release id), so it cannot
        be renewed here: say so, once per release, before and when it happens."""
        warned = self._expiry_warned.get(record.release_id)
        try:
            body = Envelope.decode(record.manifest, len(record.manifest)).body
            expires = protocol.Manifest.decode(body).expires
        except protocol.ProtocolError as exc:
            if warned is None:
                self._expiry_warned[record.release_id] = "damaged"
                log.error(
                    "release %s in fleet %s: stored manifest is damaged (%s)",
                    record.release,
                    self._fleet,
                    exc,
                )
            return
        if now >= expires and warned != "expired":
            self._expiry_warned[record.release_id] = "expired"
            log.error(
                "release %s in fleet %s: its manifest has expired and edges refuse it; "
                "release a new version",
                record.release,
                self._fleet,
            )
        elif now < expires <= now + EXPIRY_WARNING_S and warned is None:
            self._expiry_warned[record.release_id] = "soon"
            log.warning(
                "release %s in fleet %s: its manifest expires in %.1f days; release a "
                "new version before then",
                record.release,
                self._fleet,
                (expires - now) / 86400,
            )

    def _publications(
        self, records: tuple[ReleaseRecord, ...], index: SignedIndex
    ) -> tuple[Publication, ...]:
        manifests = tuple(
            Publication(
                self._topics.manifest(r.name, r.version, r.variant or None),
                r.manifest,
                f"manifest {r.release}",
            )
            for r in records
        )
        return (*manifests, self._index_publication(index))

    def _index_publication(self, index: SignedIndex) -> Publication:
        return Publication(self._topics.index(), index.payload, f"index seq {index.seq}")
