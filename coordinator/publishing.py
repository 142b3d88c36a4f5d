"""Publishing: the poller thread, which steps staged rollouts and publishes what is deployed.

Each turn (every ``poll_interval``, or at once after a (re)connect) it steps the rollouts
(``RolloutEngine.tick`` writes deployment rows), then publishes, retained and in this order on
one connection: the root chain and revocation list (``TrustPublisher``: an edge must follow a
rotation before it trusts what the new root certified), then the release manifests, then the
signed deployment index that names them (``DeploymentPublisher``), so a device never fetches a
manifest that is not there yet. After a reconnect everything is published again (a broker
without persistence forgets retained messages). A publish the client's queue refuses is retried
on the next turn. Releases the new index no longer names are retired from chunk serving, and
``on_index`` learns the targets of the new one (who will ask for what: ``release_askers``).

All of it is the poller's own state (the trust and deployment publishers are used by this
thread only); ``_republish`` and ``_wake`` are events, set from the network thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from protocol import Target

from .broker_link import BrokerLink
from .deployer import DeploymentPublisher, Publication
from .progress import Progress
from .release_cache import ReleaseCache
from .release_record import ReleaseRecord
from .trust_publisher import TrustPublisher

log = logging.getLogger(__name__)

#: How often the poller reads the database for deploys, rollouts and trust updates (seconds).
DEFAULT_POLL_INTERVAL = 0.5
SUMMARY_INTERVAL_S = 30.0


class Publishing:
    def __init__(
        self,
        fleet: str,
        trust: TrustPublisher,
        deployer: DeploymentPublisher,
        releases: ReleaseCache,
        progress: Progress,
        stopping: threading.Event,
        *,
        step_rollouts: Callable[[], object],
        retire: Callable[[set[bytes]], None],
        on_index: Callable[[Mapping[str, Target]], None] = lambda entries: None,
        summary: Callable[[], None] = lambda: None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self._fleet = fleet
        self._trust = trust
        self._deployer = deployer
        self._releases = releases
        self._progress = progress
        self._stopping = stopping
        self._step_rollouts = step_rollouts
        self._retire = retire
        self._on_index = on_index
        self._summary = summary
        self._poll_interval = poll_interval
        self._republish = threading.Event()  # set on every (re)connect
        self._wake = threading.Event()

    def on_connect(self) -> None:
        """A (re)connect: publish everything again, now (network thread)."""
        self._republish.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def run(self, link: BrokerLink) -> None:
        """The poller: a turn every ``poll_interval`` (or when woken) until the service stops."""
        last_summary = time.monotonic()
        while not self._stopping.is_set():
            self._wake.wait(self._poll_interval)
            self._wake.clear()
            if self._stopping.is_set():
                break
            self.turn(link)
            if time.monotonic() - last_summary >= SUMMARY_INTERVAL_S:
                last_summary = time.monotonic()
                self._summary()

    def turn(self, link: BrokerLink) -> None:
        """Step the rollouts, then publish; a failure of either is logged and retried."""
        try:
            self._step_rollouts()  # staged rollouts move the deployments...
        except Exception:
            log.exception("fleet %s: stepping rollouts failed; retrying", self._fleet)
        try:
            self.publish(link)  # ...that this turns into the signed index
        except Exception:  # e.g. the database is locked for longer than the busy timeout
            log.exception("fleet %s: publishing deployments failed; retrying", self._fleet)

    def publish(self, link: BrokerLink) -> None:
        """Trust first, then the manifests and the index, when something changed (or after a
        reconnect); nothing while offline."""
        if not link.connected.is_set():
            return
        republish = self._republish.is_set()
        self._republish.clear()
        if not self._publish_trust(link, republish):
            return
        previous = _stream_ids(self._deployer.records)
        plan = self._deployer.plan(time.time(), republish=republish)
        if plan is None:
            return
        # In order, on one connection: the broker stores each manifest before the index that
        # names it, so a device never fetches a manifest that is not there yet.
        if not self._publish_all(link, plan.publications):
            if republish:
                self._republish.set()
            return
        self._deployer.commit(plan)
        self._releases.add(plan.records)
        retired = previous - _stream_ids(plan.records)
        if retired:
            self._retire(retired)
        self._on_index(plan.index.entries)
        self._progress.notify()

    def _publish_trust(self, link: BrokerLink, republish: bool) -> bool:
        """The root chain and revocation list; a new release key goes to the deployer. False
        when the publishing must be tried again."""
        trust_plan = self._trust.plan(republish=republish)
        if trust_plan is None:
            return True
        if not self._publish_all(link, trust_plan.publications):
            self._republish.set()
            return False
        self._trust.commit(trust_plan)
        if trust_plan.keys is not None:
            self._deployer.use_keys(trust_plan.keys)
        return True

    def _publish_all(self, link: BrokerLink, publications: tuple[Publication, ...]) -> bool:
        """Publish retained, in order; False (and logged) at the first the queue refuses."""
        for pub in publications:
            if not link.publish(pub.topic, pub.payload, qos=1, retain=True):
                log.warning(
                    "fleet %s: MQTT client queue full publishing %s; will retry",
                    self._fleet,
                    pub.what,
                )
                return False
        return True


def _stream_ids(records: Iterable[ReleaseRecord]) -> set[bytes]:
    """The short ids of ``records`` and of the chunk streams of their deltas."""
    return {s.short_id for r in records for s in (r, *r.delta_streams())}
