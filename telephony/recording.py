"""`POST /twilio/recording`: the recording is ready; clone it and connect the caller (step 4 of the flow).

All of it runs inside this request: on Cloud Run the CPU is only certain while a request is being
answered, so nothing is left to a thread after the answer. It ends within `timing.recording_budget`
(before the hold's own redirect) or leaves the call alone; then the hold connects the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from datetime import datetime, timezone

from precall.init_answer import ClonedVoice
from precall.payload import CallerInfo, PrecallRequest, VoiceSample
from precall.service import PrecallService
from voiceclone import events
from voiceclone.config import Settings
from voiceclone.deadline import Deadline, DeadlineExceeded
from voiceclone.errors import InvalidAudio, SampleQualityTooLow, SampleTooShort, ServiceError, UpstreamTimeout
from voiceclone.logs import get_logger, log_event
from voiceclone.sinks import EventSink

from . import twiml
from .connect import Connector, log_outcome
from .forms import TwilioForm, caller_name, media_url
from .timing import recording_budget
from .twilio_client import CallDetails, TwilioClient, TwilioError

# The sample refusals that get the caller one more try (the retry prompt and a new recording): the
# caller can fix them by speaking longer, louder, more clearly or somewhere quieter (the quality gate's
# refusal: hold music, keypad tones, noise). Any other refusal, or a second one, connects the call
# without a clone.
REPROMPT_ERRORS: tuple[type[ServiceError], ...] = (SampleTooShort, InvalidAudio, SampleQualityTooLow)
DELETE_SECONDS = 5.0
CALL_NOT_IN_PROGRESS = 21220  # Twilio's answer to updating a call that has ended
_log = get_logger("telephony")


class RecordingStep:
    def __init__(self, settings: Settings, service: PrecallService, twilio: TwilioClient, connector: Connector,
                 prompts: twiml.Prompts, sink: EventSink, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        assert settings.default_agent_id is not None  # required with TWILIO_ACCOUNT_SID (voiceclone/config.py)
        self._settings = settings
        self._agent_id = settings.default_agent_id
        self._service = service
        self._twilio = twilio
        self._connector = connector
        self._prompts = prompts
        self._sink = sink
        self._now = now
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="twilio-call")

    def handle(self, form: TwilioForm, attempt: int, base: str) -> None:
        arrived, started = self._now(), time.monotonic()
        call_sid = form.call_sid
        if form.recording_status == "absent":
            # Nothing was recorded: Twilio skipped the action and its next verb already connects the call.
            _fallback(call_sid, "absent", attempt=attempt)
            return
        if form.recording_status != "completed":
            return
        deadline = Deadline(recording_budget(arrived, form.recording_ended_at, self._settings.twilio_hold_seconds))
        if deadline.remaining() <= 0:
            _left_to_the_hold(call_sid, "out_of_time", step="arrival")  # the hold has (nearly) run out already
            self._delete(form)
            return
        url = media_url(form.recording_url, form.recording_sid, self._settings.twilio_api_base_url,
                        self._twilio.account_sid)
        if url is None:
            _fallback(call_sid, "untrusted_recording_url", attempt=attempt)
            self._connect(form, None, deadline, arrived)
            return
        try:
            self._clone_and_connect(form, attempt, base, url, deadline, arrived, started)
        finally:
            self._delete(form)

    def _clone_and_connect(self, form: TwilioForm, attempt: int, base: str, url: str, deadline: Deadline,
                           arrived: datetime, started: float) -> None:
        """The call's numbers and caller name (not in a recording callback) are fetched beside the media."""
        call_sid = form.call_sid
        details = self._pool.submit(self._twilio.get_call, call_sid, deadline)
        try:
            fetched = time.monotonic()
            audio, not_found = self._twilio.fetch_recording(url, deadline)
        except (TwilioError, DeadlineExceeded) as error:
            _fallback(call_sid, "recording_unavailable", status=getattr(error, "status", None))
            self._connect(self._with_call_details(form, details, deadline), None, deadline, arrived)
            return
        log_event(_log, logging.INFO, "Recording fetched", "twilio_recording_fetched", call_sid=call_sid,
                  recording_sid=form.recording_sid, bytes=len(audio), fetch_ms=round((time.monotonic() - fetched) * 1000),
                  not_found_retries=not_found, attempt=attempt)
        form = self._with_call_details(form, details, deadline)
        request = PrecallRequest(call_sid, self._agent_id, VoiceSample(audio, "recording.wav", "audio/x-wav"),
                                 CallerInfo(name=form.caller_name), call_sid, form.from_number or None)
        try:
            outcome = self._service.handle(request, started, deadline=deadline, patch_agent=False)
        except REPROMPT_ERRORS as refused:
            if attempt == 1 and deadline.remaining() > 0:
                self._reprompt(form, base, refused, deadline)
                return
            _fallback(call_sid, "sample_refused", error_code=refused.code, attempt=attempt)
            self._connect(form, None, deadline, arrived)
            return
        except UpstreamTimeout:
            _left_to_the_hold(call_sid, "out_of_time", step="clone")
            return
        except ServiceError as failed:
            _fallback(call_sid, "sample_refused" if failed.http_status < 422 else "clone_failed", error_code=failed.code)
            self._connect(form, None, deadline, arrived)
            return
        self._connect(form, ClonedVoice(outcome.voice_id, call_sid, form.caller_name), deadline, arrived)

    def _with_call_details(self, form: TwilioForm, details: Future[CallDetails], deadline: Deadline) -> TwilioForm:
        try:
            call = details.result(timeout=max(0.0, deadline.remaining()))
        except (TwilioError, DeadlineExceeded, FutureTimeout):
            return form
        return replace(form, from_number=call.from_number[:64], to_number=call.to_number[:64],
                       caller_name=caller_name(call.caller_name))

    def _reprompt(self, form: TwilioForm, base: str, refused: ServiceError, deadline: Deadline) -> None:
        try:
            self._twilio.update_call(form.call_sid, twiml.record(self._prompts, base, attempt=2), deadline)
        except (TwilioError, DeadlineExceeded) as error:
            _update_failed(form.call_sid, "retry_prompt", error, error_code=refused.code)
            return
        log_event(_log, logging.INFO, "Sample refused; the caller is asked once more", "twilio_sample_reprompt",
                  call_sid=form.call_sid, error_code=refused.code)

    def _connect(self, form: TwilioForm, clone: ClonedVoice | None, deadline: Deadline, arrived: datetime) -> None:
        """Register the call with ElevenLabs and update the live call with its TwiML, if there is time;
        with none left the call is not touched (the hold's redirect connects it)."""
        if deadline.remaining() <= 0:
            _left_to_the_hold(form.call_sid, "out_of_time", step="connect")
            return
        if not form.from_number or not form.to_number:
            # Without the call's numbers register-call cannot be asked: the hold's redirect (which carries
            # them) connects the call, and finds a clone made here by the CallSid.
            _left_to_the_hold(form.call_sid, "call_details_unavailable", voice_id=clone.voice_id if clone else None)
            return
        connection = self._connector.connect(form, clone, deadline)
        if deadline.remaining() <= 0:
            # register-call used up the step's time: the call is not touched, the hold's redirect connects it.
            _left_to_the_hold(form.call_sid, "out_of_time", step="register", voice_id=clone.voice_id if clone else None)
            return
        try:
            self._twilio.update_call(form.call_sid, connection.twiml, deadline)
        except (TwilioError, DeadlineExceeded) as error:
            # Nothing reached the caller: the hold's redirect to `/twilio/connect` decides what they get,
            # and its own line says so. No apology or fallback is claimed here.
            _update_failed(form.call_sid, "agent" if connection.registered else "apology", error,
                           voice_id=clone.voice_id if clone else None,
                           elevenlabs_code=connection.failure.get("elevenlabs_code"))
            if clone is not None and getattr(error, "code", None) == CALL_NOT_IN_PROGRESS:
                # The caller hung up on hold: the call's `call.ended` may have come before this clone existed.
                self._sink.publish(events.call_ended(form.call_sid, self._agent_id, self._now()))
            return
        ended = form.recording_ended_at or arrived
        log_outcome(form.call_sid, connection, "recording", clone,
                    wait_ms=round((self._now() - min(ended, arrived)).total_seconds() * 1000),
                    handler_ms=round((self._now() - arrived).total_seconds() * 1000))

    def _delete(self, form: TwilioForm) -> None:
        """No copy of the caller's voice stays at Twilio: the clone (deleted after the call) is the only one."""
        if form.recording_sid is None:
            return
        try:
            deleted = self._twilio.delete_recording(form.recording_sid, Deadline(DELETE_SECONDS))
        except (TwilioError, DeadlineExceeded) as error:
            log_event(_log, logging.ERROR, "Could not delete the recording at Twilio", "twilio_recording_deleted",
                      call_sid=form.call_sid, recording_sid=form.recording_sid, deleted=False,
                      status=getattr(error, "status", None))
            return
        log_event(_log, logging.INFO, "Recording deleted at Twilio", "twilio_recording_deleted", call_sid=form.call_sid,
                  recording_sid=form.recording_sid, deleted=True, already_gone=not deleted)


def _fallback(call_sid: str, reason: str, **fields: object) -> None:
    log_event(_log, logging.WARNING, "The call goes to the agent without the caller's voice", "twilio_fallback",
              call_sid=call_sid, reason=reason, **fields)


def _left_to_the_hold(call_sid: str, reason: str, **fields: object) -> None:
    """Not a fallback: nothing is decided for the caller yet. The hold's redirect to `/twilio/connect`
    connects the call (with the clone, if one was made here or elsewhere) and its line says what they got."""
    log_event(_log, logging.WARNING, "The recording step leaves the call to the hold's redirect", "twilio_left_to_hold",
              call_sid=call_sid, reason=reason, **fields)


def _update_failed(call_sid: str, carried: str, error: Exception, **fields: object) -> None:
    """The call update (`carried`: what its TwiML was) did not reach the call: the caller stays on hold
    until its redirect (or has hung up, Twilio code 21220)."""
    log_event(_log, logging.WARNING, "The call update failed; the hold's redirect decides what the caller gets",
              "twilio_call_update_failed", call_sid=call_sid, carried=carried, status=getattr(error, "status", None),
              twilio_code=getattr(error, "code", None), **{k: v for k, v in fields.items() if v is not None})
