"""``--broker URL1,URL2,...``: parsing a broker list, and which broker a session tries next."""

from __future__ import annotations

import pytest
from paho.mqtt.client import ConnectFlags
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from runtime.credentials import ClientCreds
from runtime.errors import SetupError
from runtime.mqtt import MqttSession
from runtime.urls import BrokerAddress, is_tls_url, parse_broker_list


def test_a_list_keeps_its_order_and_default_ports() -> None:
    brokers = parse_broker_list("mqtt://a:1884, mqtt://b ,mqtt://[::1]:1999")
    assert brokers == (
        BrokerAddress("a", 1884, tls=False),
        BrokerAddress("b", 1883, tls=False),
        BrokerAddress("::1", 1999, tls=False),
    )
    assert [b.url for b in brokers] == ["mqtt://a:1884", "mqtt://b:1883", "mqtt://[::1]:1999"]
    assert parse_broker_list("mqtts://n1,mqtts://n2:9883")[1] == BrokerAddress("n2", 9883, True)
    assert parse_broker_list("mqtt://h:1") == (BrokerAddress("h", 1, tls=False),)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no broker URL"),
        (" , ", "no broker URL"),
        ("mqtt://a,,mqtt://b", "empty entry"),
        ("mqtt://a,", "empty entry"),
        ("mqtt://a,mqtts://b", "mixes mqtt:// and mqtts://"),
        ("mqtt://a:1883,mqtt://a", r"names mqtt://a:1883 more than once"),
        ("mqtt://a,tcp://b", "must look like"),
        ("mqtt://a,mqtt://b:0", "port must be"),
    ],
)
def test_a_bad_list_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(SetupError, match=reason):
        parse_broker_list(text)


def test_tls_is_that_of_the_whole_list() -> None:
    assert is_tls_url("mqtts://a,mqtts://b")
    assert not is_tls_url("mqtt://a,mqtt://b")


def test_credentials_for_tls_refuse_a_plain_list_and_take_a_tls_one() -> None:
    creds = ClientCreds(username="u", password="p", client_id="u", ca_file=None, tls=True)
    with pytest.raises(SetupError, match="use mqtts://"):
        creds.session_auth("mqtt://a,mqtt://b")
    assert creds.session_auth("mqtts://a,mqtts://b") == {"username": "u", "password": "p"}


def _session(url: str) -> MqttSession:
    return MqttSession(url, "t-client", on_message=lambda _t, _p, _r: None)


def test_a_session_starts_on_the_first_broker_and_moves_round_robin() -> None:
    session = _session("mqtt://a:1,mqtt://b:2,mqtt://c:3")
    assert (session.host, session.port, session.url) == ("a", 1, "mqtt://a:1")
    moved = []
    for _ in range(4):
        session._fail_over()  # what a lost, refused or failed connection does
        moved.append(session.url)
    assert moved == ["mqtt://b:2", "mqtt://c:3", "mqtt://a:1", "mqtt://b:2"]
    assert session.failovers == 4


def test_a_single_broker_is_never_left() -> None:
    session = _session("mqtt://a:1")
    session._fail_over()
    assert (session.url, session.failovers) == ("mqtt://a:1", 0)


def _connack(session: MqttSession, session_present: bool) -> list[bool]:
    """What the caller's on_connect hears of a successful CONNACK saying ``session_present``."""
    heard: list[bool] = []
    session._on_connect_cb = heard.append
    reason = ReasonCode(PacketTypes.CONNACK, identifier=0)
    session._handle_connect(None, None, ConnectFlags(session_present), reason, None)  # type: ignore[arg-type]
    return heard


def test_with_a_list_a_resumed_session_after_a_failure_is_taken_as_new() -> None:
    """A cluster node resumes a session another node held, but not what was in flight there:
    the caller is told "new", so it subscribes again and asks again for what it lacks."""
    session = _session("mqtt://a:1,mqtt://b:2")
    assert _connack(session, True) == [True]  # the first connect: as the broker says
    session._fail_over()
    assert _connack(session, True) == [False]
    assert _connack(session, False) == [False]
    single = _session("mqtt://a:1")
    assert _connack(single, True) == [True]
    assert _connack(single, True) == [True]  # one broker: a resumed session is trusted


def test_the_list_reads_back_for_the_logs() -> None:
    assert _session("mqtt://a:1, mqtt://b").broker_list == "mqtt://a:1, mqtt://b:1883"
