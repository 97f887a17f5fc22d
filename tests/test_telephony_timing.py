"""The recording step's time: counted from when the caller stopped speaking, never past the hold or Twilio's 15 s."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from telephony.timing import SAFETY_MARGIN_SECONDS, UNKNOWN_END_ALLOWANCE_SECONDS, recording_budget

NOW = datetime(2026, 12, 7, 9, 0, 0, tzinfo=timezone.utc)


def test_a_late_callback_has_only_what_is_left_of_the_hold():
    assert recording_budget(NOW, NOW - timedelta(seconds=3), 12) == 12 - 3 - SAFETY_MARGIN_SECONDS


def test_an_end_reported_in_the_future_counts_from_the_callback():
    assert recording_budget(NOW, NOW + timedelta(seconds=5), 10) == 10 - SAFETY_MARGIN_SECONDS


def test_an_unknown_end_is_assumed_earlier_than_the_callback():
    assert recording_budget(NOW, None, 10) == 10 - UNKNOWN_END_ALLOWANCE_SECONDS - SAFETY_MARGIN_SECONDS


def test_twilios_fifteen_seconds_bound_a_long_hold():
    assert recording_budget(NOW, NOW, 60) == 14.0


def test_a_callback_after_the_hold_has_no_time_at_all():
    assert recording_budget(NOW, NOW - timedelta(seconds=30), 25) < 0
