"""What the devices of one fleet publish (``modelcast/{fleet}/devices/#``), recorded as it
arrives and decoded once: their states (with the time each arrived), events and online status.

The tests assert on it; the benchmarks time deliveries by it (the arrival of ``verified``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from protocol import DeviceEvent, DeviceState, DeviceStatus, ProtocolError, Topics, UpdateState
from runtime.urls import parse_broker_url

from .cli_process import CliProcess
from .errors import WaitTimeout
from .mqtt_recorder import Received, TopicRecorder

T = TypeVar("T")


class SeenState(NamedTuple):
    at: float  # time.monotonic() when it arrived
    state: DeviceState


@dataclass
class _Device:
    """One device's messages so far, decoded (undecodable ones are left out)."""

    states: list[SeenState] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)
    online: bool = False


class FleetWatch:
    """One fleet's devices as seen on the broker, from the moment it is entered.

    ``broker`` is the broker's URL (a plain connection), or a recorder already configured for
    it (TLS, a login), not started yet. ``states_only`` subscribes to the devices' states and
    status alone (a benchmark's watcher, which must not add to the traffic it measures);
    otherwise to everything under ``devices/#``, chunk requests and telemetry included, which
    ``recorder`` keeps raw.

    The waits take the processes they wait on (``edges``): one that dies ends the wait at once
    with its log, instead of after the timeout.
    """

    def __init__(
        self,
        broker: str | TopicRecorder,
        fleet: str,
        *,
        states_only: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self.topics = Topics(fleet)
        if isinstance(broker, TopicRecorder):
            self.recorder = broker
        else:
            host, port = parse_broker_url(broker)
            wanted = [self.topics.all_state(), self.topics.all_status()]
            if not states_only:
                wanted = [f"{self.topics.base}/devices/#"]
            self.recorder = TopicRecorder(host, port, wanted, timeout=timeout)
        self._devices: dict[str, _Device] = {}
        self._indexed = 0  # how many of the recorder's messages _devices holds

    def __enter__(self) -> FleetWatch:
        self.recorder.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.recorder.close()

    # -- what arrived so far ------------------------------------------------------------------
    def states(self, device: str) -> list[DeviceState]:
        return self._read(lambda: [seen.state for seen in self._device(device).states])

    def events(self, device: str) -> list[DeviceEvent]:
        return self._read(lambda: list(self._device(device).events))

    # -- waits --------------------------------------------------------------------------------
    def wait_state_received(
        self,
        device: str,
        pred: Callable[[DeviceState], bool],
        timeout: float = 60.0,
        edge: CliProcess | None = None,
    ) -> SeenState:
        """The first state of ``device`` (ever received) that matches, with its arrival time."""
        seen = self._wait(
            lambda: next((s for s in self._device(device).states if pred(s.state)), None),
            timeout,
            () if edge is None else (edge,),
        )
        if seen is None:
            last = self.states(device)[-1:]
            raise WaitTimeout(
                f"{device}: no matching state after {timeout}s; last {last[0] if last else None}"
            )
        return seen

    def wait_state(
        self,
        device: str,
        pred: Callable[[DeviceState], bool],
        timeout: float = 60.0,
        edge: CliProcess | None = None,
    ) -> DeviceState:
        """The first state of ``device`` (ever received) that matches."""
        return self.wait_state_received(device, pred, timeout, edge).state

    def wait_active(
        self, device: str, name: str, version: int, timeout: float = 90.0
    ) -> DeviceState:
        return self.wait_state(
            device,
            lambda s: s.state is UpdateState.ACTIVE and s.active.get(name) == version,
            timeout,
        )

    def wait_event(
        self, device: str, pred: Callable[[DeviceEvent], bool], timeout: float = 30.0
    ) -> DeviceEvent:
        """The first event of ``device`` (ever received) that matches."""
        event = self._wait(
            lambda: next((e for e in self._device(device).events if pred(e)), None), timeout
        )
        if event is None:
            raise WaitTimeout(f"{device}: no matching event after {timeout}s")
        return event

    def wait_online(
        self, devices: Sequence[str], timeout: float = 30.0, edges: Sequence[CliProcess] = ()
    ) -> None:
        """Until the last status of every one of ``devices`` says online."""

        def all_online() -> bool | None:
            return all(self._device(d).online for d in devices) or None

        if not self._wait(all_online, timeout, edges):
            missing = self._read(lambda: [d for d in devices if not self._device(d).online])
            raise WaitTimeout(f"devices not online after {timeout}s: {missing[:5]}")

    # -- the index, under the recorder's lock -------------------------------------------------
    def _wait(
        self, find: Callable[[], T | None], timeout: float, edges: Sequence[CliProcess] = ()
    ) -> T | None:
        def probe(items: Sequence[Received]) -> T | None:
            self._index(items)
            return find()

        def check() -> None:
            for edge in edges:
                edge.check_alive()

        return self.recorder.wait_until(probe, timeout, check=check if edges else None)

    def _read(self, read: Callable[[], T]) -> T:
        def probe(items: Sequence[Received]) -> T:
            self._index(items)
            return read()

        return self.recorder.inspect(probe)

    def _device(self, device: str) -> _Device:
        return self._devices.setdefault(device, _Device())

    def _index(self, items: Sequence[Received]) -> None:
        if len(items) < self._indexed:  # the recorder was cleared
            self._devices.clear()
            self._indexed = 0
        for item in items[self._indexed :]:
            self._add(item)
        self._indexed = len(items)

    def _add(self, item: Received) -> None:
        device = self.topics.device_of(item.topic)
        if device is None:
            return
        kind = item.topic[len(self.topics.device(device)) + 1 :]
        try:
            if kind == "state":
                state = DeviceState.decode(item.payload)
                self._device(device).states.append(SeenState(item.at, state))
            elif kind == "status":
                self._device(device).online = DeviceStatus.decode(item.payload).online
            elif kind == "telemetry/events":
                self._device(device).events.append(DeviceEvent.decode(item.payload))
        except ProtocolError:
            return
