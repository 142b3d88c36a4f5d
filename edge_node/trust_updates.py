"""Changes to what the edge trusts, and signed commands, as they arrive from the broker.

- A root chain (``.../trust/root``) moves trust to a rotated root key (``TrustStore`` persists it).
- A revocation list (``.../trust/revocations``) revokes release keys; a download signed by a
  key just revoked is refused and discarded.
- A command (``devices/ID/commands``, or the fleet's) is opened against the trusted root and
  replay-checked by ``TrustStore``; ``rollback`` goes to the activator, ``re-request`` to the
  downloader; anything else is reported as ignored.
- A report request (``releases/report``, ``protocol.report_request``) is answered by publishing
  the status and the state again; a replayed one is ignored (no rejection: it is harmless).

Bad messages are rejections (counted, reported through the reporter). Owned by the agent's
worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from protocol import ProtocolError, SignatureError, StaleError, open_report_request

from .activator import Activator
from .downloader import Downloader
from .reporter import Reporter
from .shared import Slots
from .trust_store import TrustStore

log = logging.getLogger("modelcast.edge")


class TrustUpdates:
    def __init__(
        self,
        store: TrustStore,
        *,
        device: str,
        fleet: str,
        clock: Callable[[], float],
        slots: Slots,
        reporter: Reporter,
        downloader: Downloader,
        activator: Activator,
    ) -> None:
        self.store = store
        self.device = device
        self._fleet = fleet
        self._clock = clock
        self._slots = slots
        self._reporter = reporter
        self._downloader = downloader
        self._activator = activator
        #: ``issued`` of the last report request answered (in memory: after a restart the
        #: device publishes both on connect anyway)
        self._report_answered = 0.0

    def on_root_chain(self, topic: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            if self.store.follow_root_chain(payload):
                trust = self.store.trust
                log.warning(
                    "edge %s: now trusting root %s (version %d)",
                    self.device,
                    trust.root.key_id,
                    trust.root_version,
                )
                self._reporter.event("root-rotated", detail=trust.root.key_id)
        except ProtocolError as exc:
            self._reporter.reject(topic, exc, update_state=False)

    def on_revocations(self, topic: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            added = self.store.apply_revocations(payload, self._clock())
        except ProtocolError as exc:
            self._reporter.reject(topic, exc, update_state=False)
            return
        if added:
            log.warning("edge %s: release keys revoked: %s", self.device, ", ".join(sorted(added)))
            self._reporter.event("keys-revoked", detail=", ".join(sorted(added)))
        dl = self._slots.download
        if dl is not None and dl.release.signer.key.key_id in added:
            self._reporter.reject(
                topic,
                SignatureError(f"{dl.label} was signed by a revoked key", reason="revoked-key"),
                update_state=True,
            )
            self._downloader.drop(discard=True)

    def on_command(self, topic: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            command = self.store.open_command(
                payload, now=self._clock(), fleet=self._fleet, device=self.device
            )
        except ProtocolError as exc:
            self._reporter.reject(topic, exc, update_state=False)
            return
        log.info(
            "edge %s: command %s %s (seq %d)",
            self.device,
            command.action,
            command.args,
            command.seq,
        )
        if command.action == "rollback":
            self._activator.rollback(str(command.args["model"]), int(command.args["version"]))
        elif command.action == "re-request" and self._slots.download is not None:
            self._downloader.repair()
        else:
            self._reporter.event("command-ignored", detail=f"{command.action} is not supported yet")

    def on_report_request(self, topic: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            request = open_report_request(
                self.store.trust,
                payload,
                now=self._clock(),
                fleet=self._fleet,
                answered=self._report_answered,
            )
        except StaleError as exc:
            log.debug("edge %s: %s", self.device, exc)
            return
        except ProtocolError as exc:
            self._reporter.reject(topic, exc, update_state=False)
            return
        self._report_answered = request.issued
        log.info("edge %s: asked to report (request of %.3f)", self.device, request.issued)
        self._reporter.publish_status()
        self._reporter.flush_state()
