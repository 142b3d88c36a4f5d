"""The error root of the test and benchmark tools."""

from __future__ import annotations

from protocol.errors import ModelcastError


class TestkitError(ModelcastError):
    """A test tool could not do what it was asked (a broker that would not start, ...)."""

    __test__ = False  # not a pytest test class, despite the name


class BrokerStartError(TestkitError, RuntimeError):
    """Mosquitto exited or did not listen in time; the message ends with its log."""

    def __init__(self, message: str, *, port_in_use: bool = False) -> None:
        super().__init__(message)
        self.port_in_use = port_in_use


class WaitTimeout(TestkitError, AssertionError):
    """What a test or a figure waited for (an MQTT message, a device state) did not come in
    time. An ``AssertionError`` too: in a test it is a failed expectation."""


class RecorderError(TestkitError, AssertionError):
    """The MQTT recorder could not connect, subscribe or publish."""


class ProcessExited(TestkitError, RuntimeError):
    """A child process (an edge, a coordinator) is not running when it should be; the message
    ends with its log."""
