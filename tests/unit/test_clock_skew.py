"""The skew of each device's clock: the estimate from its messages' times, and how status
shows it."""

from __future__ import annotations

import calendar

import pytest

from coordinator.clock_skew import ClockReading, ClockSkews, describe_skew

DAY = 86400.0
NOW = 1_800_000_000.0  # 2027


def test_the_least_delayed_of_the_recent_messages_is_the_estimate() -> None:
    skews = ClockSkews(window=3)
    # a device 10 s behind; its messages take 0.2 s, 3 s (waited in its outbox), 0.1 s to arrive
    for sent, delay in ((NOW, 0.2), (NOW + 1, 3.0), (NOW + 2, 0.1)):
        skews.observe("d", sent - 10.0, sent + delay)
    assert skews.take() == {"d": ClockReading(pytest.approx(-10.1), NOW + 2.1)}
    assert skews.take() == {}  # nothing observed since


def test_a_clock_set_forward_shows_at_once_and_one_set_back_after_the_window() -> None:
    skews = ClockSkews(window=3)
    skews.observe("d", 120.0, NOW)  # booted at 1970, NTP has not answered
    assert skews.take()["d"].skew == 120.0 - NOW
    skews.observe("d", NOW + 1.0, NOW + 1.0)  # NTP answered
    assert skews.take()["d"].skew == 0.0
    skews.observe("d", NOW + 3600.0, NOW + 2.0)  # a clock an hour fast...
    skews.observe("d", NOW + 3.0, NOW + 3.0)  # ...set right
    assert skews.take()["d"].skew == 3598.0  # still within the window
    for t in (NOW + 4.0, NOW + 5.0):
        skews.observe("d", t, t)
    assert skews.take()["d"].skew == 0.0


def test_each_device_has_its_own_estimate_and_memory_stays_bounded() -> None:
    skews = ClockSkews(max_devices=2)
    skews.observe("a", NOW - DAY, NOW)
    skews.observe("b", NOW + 5.0, NOW)
    assert len(skews) == 2
    assert {d: r.skew for d, r in skews.take().items()} == {"a": -DAY, "b": 5.0}
    skews.observe("a", NOW - DAY, NOW + 1.0)  # a is now the most recent; b the longest quiet
    skews.observe("c", NOW, NOW)  # forgets b
    assert {d: r.skew for d, r in skews.take().items()} == {"a": -DAY, "c": 0.0}
    skews.observe("b", NOW + 1.0, NOW)  # forgets a; b starts afresh (its +5 s is forgotten)
    assert {d: r.skew for d, r in skews.take().items()} == {"b": 1.0}


@pytest.mark.parametrize(
    ("skew", "text"),
    [
        (None, "?"),
        (0.0, "+0.0s"),
        (0.34, "+0.3s"),
        (-42.0, "-42.0s"),
        (59.96, "+1m"),
        (-DAY + 1800.0, "-1d"),  # not -24h
        (-DAY + 1801.0, "-23h"),
        (5 * 60 + 10, "+5m"),
        (-3 * 3600 - 100, "-3h"),
        (-DAY - 0.4, "-1d"),
        (2.5 * DAY, "+2d"),
        (2 * 365.25 * DAY, "+2y"),
        (5000 * 365.25 * DAY, "+>999y"),
    ],
)
def test_how_status_shows_a_skew(skew: float | None, text: str) -> None:
    assert describe_skew(skew, NOW) == text


@pytest.mark.parametrize(
    ("device_time", "text"),
    [
        (120.0, "1970?"),  # booted at the epoch two minutes ago
        (-5e9, "1970?"),
        (calendar.timegm((1999, 6, 1, 0, 0, 0)), "1999?"),
        (calendar.timegm((2001, 1, 1, 0, 0, 1)), "-26y"),
    ],
)
def test_a_clock_that_was_never_set_shows_the_year_it_says(device_time: float, text: str) -> None:
    assert describe_skew(device_time - NOW, NOW) == text


def test_unknown_without_the_time_it_was_checked() -> None:
    assert describe_skew(-5.0, None) == "?"
