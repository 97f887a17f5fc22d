"""Connecting a call to the ElevenLabs agent: register-call's TwiML, or an apology (step 5 of the flow).

The initiation data is built as `/conversation-init` builds its answer (precall/init_answer.py): the
dynamic variables always, `tts.voice_id` and `agent.first_message` only where the agent allows them,
read from the per-instance `AgentOverrides` cache. ElevenLabs fails a conversation that overrides
what the agent does not allow, so an unknown permission means no override at all.

What the caller gets is only known once the TwiML reaches the call (the recording step's call update
accepted, or `/twilio/connect` answering with it): `connect` logs nothing of its outcome, and its
caller writes `log_outcome` then. Written earlier, a failed call update would leave a line claiming an
apology (or a clone refused) for a caller whom the hold's redirect connected after all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from precall.agent_overrides import AgentOverrides
from precall.conversation_init import ConversationInit
from precall.init_answer import ClonedVoice, InitRequest, build_answer
from voiceclone.config import Settings
from voiceclone.deadline import Deadline, DeadlineExceeded
from voiceclone.elevenlabs_client import ElevenLabsClient, ElevenLabsError
from voiceclone.logs import get_logger, log_event

from . import twiml
from .forms import TwilioForm

PERMISSIONS_WAIT_SECONDS = 1.0  # a cold cache waits this long for the agent's settings, then sends no override
_log = get_logger("telephony")


@dataclass(frozen=True)
class Connection:
    twiml: str
    registered: bool  # False: the apology (ElevenLabs could not take the call)
    voice_sent: bool  # the clone's voice went to ElevenLabs as the call's voice
    overrides: tuple[str, ...]
    # register-call's refusals on the way, each `{status, elevenlabs_code, ...}`: of the call with its clone
    # (then tried without), and of the call altogether (behind the apology)
    clone_refused: dict[str, object] | None = None
    failure: dict[str, object] = field(default_factory=dict)


class Connector:
    def __init__(self, settings: Settings, client: ElevenLabsClient, overrides: AgentOverrides,
                 conversation_init: ConversationInit) -> None:
        assert settings.default_agent_id is not None  # required with TWILIO_ACCOUNT_SID (voiceclone/config.py)
        self._settings = settings
        self._agent_id = settings.default_agent_id
        self._client = client
        self._overrides = overrides
        self._init = conversation_init

    def prepared_clone(self, form: TwilioForm, deadline: Deadline) -> ClonedVoice | None:
        """A clone of this call made elsewhere (another instance's recording step): `/conversation-init`'s
        look-up, by the call's own id only. Not by caller: a repeat caller's clone of an earlier call may
        already be deleted, and this call's caller chose (consent) or failed to give a sample for this call."""
        clone, _ = self._init.find_clone(InitRequest(form.call_sid, None, self._agent_id), deadline)
        return clone

    def connect(self, form: TwilioForm, clone: ClonedVoice | None, deadline: Deadline) -> Connection:
        """ElevenLabs' TwiML for this call; refused with the clone (a voice deleted meanwhile), once more
        without it; refused or out of time altogether, the apology."""
        refused: dict[str, object] | None = None
        if clone is not None:
            try:
                return self._register(form, clone, deadline)
            except ElevenLabsError as error:
                refused = {"status": error.status, "elevenlabs_code": error.code}
            except DeadlineExceeded as error:
                return self._apology(error, None)
        try:
            return replace(self._register(form, None, deadline), clone_refused=refused)
        except (ElevenLabsError, DeadlineExceeded) as error:
            return self._apology(error, refused)

    def _register(self, form: TwilioForm, clone: ClonedVoice | None, deadline: Deadline) -> Connection:
        permissions = self._overrides.get(self._agent_id, min(PERMISSIONS_WAIT_SECONDS, deadline.remaining()))
        settings = self._settings
        answer = build_answer(clone, permissions, settings.init_dynamic_variables, settings.first_message_template,
                              settings.first_message_default, caller_name=form.caller_name, conversation_id=form.call_sid)
        override = answer["conversation_config_override"]
        data = {"dynamic_variables": answer["dynamic_variables"], "conversation_config_override": override}
        registered = self._client.register_twilio_call(agent_id=self._agent_id, from_number=form.from_number,
                                                       to_number=form.to_number, initiation_data=data, deadline=deadline)
        return Connection(registered, True, "tts" in override, tuple(sorted(override)))

    def _apology(self, error: Exception, refused: dict[str, object] | None) -> Connection:
        failure = {"status": getattr(error, "status", None), "elevenlabs_code": getattr(error, "code", None),
                   "detail": getattr(error, "message", str(error))}
        return Connection(twiml.apology(self._settings.twilio_language), False, False, (), refused, failure)


def log_outcome(call_sid: str, connection: Connection, via: str, clone: ClonedVoice | None, **fields: object) -> None:
    """What the caller got, once `connection.twiml` has reached the call: the agent (`twilio_call_connected`)
    or the apology (`twilio_fallback`, `register_failed`), after a clone refused on the way if one was.
    `fields` go on the connected line only (the recording step's `wait_ms`, `handler_ms`)."""
    if connection.clone_refused is not None:
        log_event(_log, logging.WARNING, "register-call refused the call with its clone; it went on without",
                  "twilio_fallback", call_sid=call_sid, reason="clone_refused_at_connect", via=via,
                  **connection.clone_refused)
    if connection.registered:
        log_event(_log, logging.INFO, "Call connected to the agent", "twilio_call_connected", call_sid=call_sid,
                  via=via, clone_used=connection.voice_sent, voice_id=clone.voice_id if clone else None,
                  overrides=list(connection.overrides), **fields)
        return
    log_event(_log, logging.ERROR, "ElevenLabs register-call failed; the caller hears an apology", "twilio_fallback",
              call_sid=call_sid, reason="register_failed", via=via, **connection.failure)
