"""How long the recording step may take (pure): it must be over before the hold's own redirect.

The caller waits on hold for `TWILIO_HOLD_SECONDS` after the recording ends, then the hold's
`<Redirect>` connects the call (on whichever instance Twilio reaches). The recording step updates
the live call instead, so it must be done `SAFETY_MARGIN_SECONDS` before that redirect, or leave
the call alone: never both. Its clock starts when the caller stopped speaking, as Twilio's own
callback reports it (`RecordingStartTime` + `RecordingDuration`, whole seconds, so never later than
the truth), not when the callback arrived, which may be later (Twilio processes the file first).
Without those fields the callback's arrival less `UNKNOWN_END_ALLOWANCE_SECONDS` stands in for the
end of the recording. Twilio also waits at most 15 s for a
webhook answer (error 11200, https://www.twilio.com/docs/api/errors/11200), so the step ends
within that too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

SAFETY_MARGIN_SECONDS = 1.5  # a call update's round trip, and clock skew, before the hold ends
UNKNOWN_END_ALLOWANCE_SECONDS = 2.0  # how long before its callback a recording of unknown end may have ended
TWILIO_WEBHOOK_SECONDS = 15.0
WEBHOOK_MARGIN_SECONDS = 1.0


def recording_budget(arrived: datetime, recording_ended_at: datetime | None, hold_seconds: float) -> float:
    """Seconds the step has from `arrived` (may be <= 0: too late to touch the call at all)."""
    if recording_ended_at is None:
        ended = arrived - timedelta(seconds=UNKNOWN_END_ALLOWANCE_SECONDS)
    else:
        ended = min(recording_ended_at, arrived)
    hold_left = (ended - arrived).total_seconds() + hold_seconds - SAFETY_MARGIN_SECONDS
    return min(hold_left, TWILIO_WEBHOOK_SECONDS - WEBHOOK_MARGIN_SECONDS)
