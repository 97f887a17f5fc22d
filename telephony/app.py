"""The `/twilio/*` routes of `precall_webhook`: Twilio webhooks in, TwiML (`text/xml`) or `204` out.

Every request is checked first: the form read within `forms.MAX_FORM_BYTES`, then
`X-Twilio-Signature` (a missing or wrong one is `403` with no TwiML), then its fields. After that
nothing a caller does is an error: any failure ends in the agent's own voice, never a `500`
(Twilio would play "an application error has occurred" and hang up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

import flask

from precall.init_answer import ClonedVoice
from voiceclone import events
from voiceclone.config import Settings
from voiceclone.deadline import Deadline
from voiceclone.logs import get_logger, log_event
from voiceclone.sinks import EventSink

from . import forms, signature, twiml
from .connect import Connector, log_outcome
from .recording import RecordingStep

ROUTES = ("/twilio/voice", "/twilio/consent", "/twilio/recorded", "/twilio/recording", "/twilio/connect", "/twilio/status")
# Twilio's final call statuses (https://www.twilio.com/docs/voice/api/call-resource#call-status-values).
ENDED_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
LOOKUP_SECONDS = 0.8  # the hold ran out: how long to look for a clone another instance made
CONNECT_SECONDS = 8.0  # register-call, well within Twilio's 15 s for the answer
_log = get_logger("telephony")
# What the caller gets after an unexpected error, by route (the answers of `TwilioApp.__call__`).
_CONNECTED = "the caller is sent to /twilio/connect"
_AFTER_AN_ERROR = {"/twilio/connect": "the caller hears an apology",
                   "/twilio/recording": "the hold's redirect connects the caller", "/twilio/status": "no caller waits on it"}


class TwilioApp:
    routes = ROUTES
    max_form_bytes = forms.MAX_FORM_BYTES

    def __init__(self, settings: Settings, sink: EventSink, connector: Connector, recording: RecordingStep,
                 prompts: twiml.Prompts, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._settings = settings
        self._sink = sink
        self._connector = connector
        self._recording = recording
        self._prompts = prompts
        self._now = now

    def __call__(self, request: flask.Request, path: str, body: bytes | bytearray) -> flask.Response:
        params = forms.parse_params(body)
        url = signature.public_url(self._settings.public_base_url, request.headers, request.scheme, request.path,
                                   request.query_string.decode("latin-1"))
        if not signature.is_valid(url, params, request.headers.get(signature.SIGNATURE_HEADER),
                                  self._settings.twilio_auth_tokens):
            log_event(_log, logging.WARNING, "Twilio signature rejected", "signature_rejected", path=path,
                      reason="INVALID_TWILIO_SIGNATURE")
            return flask.Response(b"", status=403)
        form = forms.read_form(params)
        base = url.split("?", 1)[0].rsplit("/", 1)[0] + "/"
        attempt = 2 if request.args.get("attempt") == "2" else 1
        try:
            return self._route(path, form, base, attempt)
        except Exception as exc:  # noqa: BLE001 - the caller is connected whatever failed here
            # Only at `/twilio/connect` is this the caller's outcome (the apology): a fallback. Elsewhere the
            # call goes on to `/twilio/connect` (or has no caller waiting), whose own line says what they got.
            fallback = path == "/twilio/connect"
            log_event(_log, logging.ERROR, f"Unexpected error in a Twilio webhook; {_AFTER_AN_ERROR.get(path, _CONNECTED)}",
                      "twilio_fallback" if fallback else "internal_error", call_sid=form.call_sid,
                      **({"reason": "internal_error"} if fallback else {}), path=path, error_type=type(exc).__name__)
            if path in ("/twilio/recording", "/twilio/status"):
                return _empty()
            if path == "/twilio/connect":
                return _xml(twiml.apology(self._settings.twilio_language))
            return _xml(twiml.connect_now(base))

    def _route(self, path: str, form: forms.TwilioForm, base: str, attempt: int) -> flask.Response:
        if path == "/twilio/voice":
            if self._settings.twilio_consent == "off":
                log_event(_log, logging.INFO, "Consent by other means (TWILIO_CONSENT=off)", "twilio_consent",
                          call_sid=form.call_sid, given=True, mode="off")
                return _xml(twiml.record(self._prompts, base, attempt=1))
            return _xml(twiml.consent(self._prompts, base))
        if path == "/twilio/consent":
            return self._consent(form, base)
        if path == "/twilio/recorded":
            return _xml(twiml.hold(self._prompts, base))
        if path == "/twilio/recording":
            self._recording.handle(form, attempt, base)
            return _empty()
        if path == "/twilio/connect":
            clone = self._connector.prepared_clone(form, Deadline(LOOKUP_SECONDS))
            return self._connect(form, clone, "redirect")
        return self._status(form)

    def _consent(self, form: forms.TwilioForm, base: str) -> flask.Response:
        given = form.digits == "1"
        log_event(_log, logging.INFO, "Consent given" if given else "Consent refused", "twilio_consent",
                  call_sid=form.call_sid, given=given, mode="required",
                  pressed="1" if given else ("other" if form.digits else "none"))
        if given:
            return _xml(twiml.record(self._prompts, base, attempt=1))
        log_event(_log, logging.INFO, "The call goes to the agent without the caller's voice", "twilio_fallback",
                  call_sid=form.call_sid, reason="consent_refused" if form.digits else "no_key")
        return self._connect(form, None, "consent_refused")

    def _connect(self, form: forms.TwilioForm, clone: ClonedVoice | None, via: str) -> flask.Response:
        """This answer is what the caller gets (Twilio runs it), so its outcome is logged here."""
        connection = self._connector.connect(form, clone, Deadline(CONNECT_SECONDS))
        log_outcome(form.call_sid, connection, via, clone, wait_ms=None)
        return _xml(connection.twiml)

    def _status(self, form: forms.TwilioForm) -> flask.Response:
        """The phone call ended: `call.ended` for its CallSid, so its clone is deleted even when ElevenLabs'
        post-call webhook never comes (the clone's conversation id is the CallSid)."""
        if form.call_status in ENDED_STATUSES:
            published = self._sink.publish(events.call_ended(form.call_sid, self._settings.default_agent_id or "",
                                                             self._now()))
            log_event(_log, logging.INFO, "Phone call ended", "twilio_call_ended", call_sid=form.call_sid,
                      call_status=form.call_status, published=published)
        return _empty()


def _xml(text: str) -> flask.Response:
    return flask.Response(text, status=200, mimetype="text/xml")


def _empty() -> flask.Response:
    return flask.Response(b"", status=204)
