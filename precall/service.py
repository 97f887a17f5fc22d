"""The pre-call flow: validated request in, clone and agent update out (docs/api.md)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy

from voiceclone import events
from voiceclone.clones import Clone, CloneInventory
from voiceclone.config import Settings
from voiceclone.deadline import Deadline, DeadlineExceeded
from voiceclone.elevenlabs_client import ElevenLabsClient, ElevenLabsError
from voiceclone.errors import SampleQualityTooLow, UpstreamTimeout, VoiceCloningFailed
from voiceclone.logs import get_logger, log_event
from voiceclone.naming import caller_ref, clone_description, clone_labels, voice_name
from voiceclone.pools import start_threads
from voiceclone.sinks import EventSink

from . import audio, quality
from .greeting import greeting, mask_name
from .outcome import CloneOutcome
from .payload import PrecallRequest
from .prepared_clones import PreparedClone, PreparedClones
from .single_flight import SingleFlight

_log = get_logger("service")
T = TypeVar("T")
# Two PATCHes of one agent for different calls closer than this probably overlap a live call.
AGENT_PATCH_OVERLAP_SECONDS = 600.0
LOOKUP_GRACE_SECONDS = 2.0
PUBLISH_WAIT_SECONDS = 1.0
SIDE_THREADS_STARTED_AHEAD = 256


class VoiceLimitReached(VoiceCloningFailed):
    """The account has no free voice slot (ElevenLabs `voice_limit_reached`)."""


@dataclass(frozen=True)
class _Cloned:
    voice_id: str
    name: str
    reused: bool
    event: dict[str, Any] | None  # voice.created to publish for the clone this call answers with
    twin_check: _TwinCheck | None = None  # for a clone just made: the look-up after its add


@dataclass(frozen=True)
class _TwinCheck:
    """A clone just made, and the listing of its conversation's clones started after its add."""

    made: Clone
    listing: Future[list[Clone]]


@dataclass(frozen=True)
class _Added:
    """What the add gave this call: a voice it made, or (`taken_over`) another request's clone of the same
    conversation that the add's idempotency probe found after an attempt that failed on the way back (the
    request that made it, killed before answering, was retried)."""

    voice_id: str
    requires_verification: bool
    taken_over: Clone | None


@dataclass(frozen=True)
class ValidSample:
    """A sample that passed validation (and the quality gate, unless it is off or only reports).

    Iterates as `(data, format)`, so `data, fmt = service.validate_sample(request)` reads as before."""

    data: bytes
    format: audio.AudioFormat
    quality: quality.QualityReport | None  # None with SAMPLE_QUALITY_GATE=off

    def __iter__(self) -> Iterator[Any]:
        return iter((self.data, self.format))


class PrecallService:
    def __init__(
        self,
        settings: Settings,
        client: ElevenLabsClient,
        sink: EventSink,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self._settings = settings
        self._client = client
        self._sink = sink
        self._now = now
        self._inventory = CloneInventory(client, settings.voice_clone_ttl_seconds, now)
        self._flights: SingleFlight[CloneOutcome] = SingleFlight()
        self.prepared = PreparedClones()
        self._last_patch: dict[str, tuple[float, str]] = {}
        self._patch_lock = threading.Lock()
        # Side work of a call (duplicate look-up, publish). Threads start lazily, so none exists before
        # gunicorn forks its worker (`warm_up` starts them after); sized for hundreds of concurrent calls that mostly wait on I/O.
        self._pool = ThreadPoolExecutor(max_workers=512, thread_name_prefix="precall-side")
        if settings.measures_quality:
            # Here, before gunicorn forks its worker (the weights are plain arrays, shared after the fork),
            # so the first sample does not wait for what every measure does once.
            quality.warm_up()

    def warm_up(self) -> None:
        """Start the side threads now, in the background, in the process that serves (after
        gunicorn's fork): one per request thread at the default `THREADS`, ready for a burst."""
        start_threads(self._pool, SIDE_THREADS_STARTED_AHEAD)

    @property
    def inventory(self) -> CloneInventory:
        return self._inventory

    def caller_ref(self, caller_id: str | None) -> str | None:
        """The keyed hash that stands for a phone number (`caller_ref`, docs/api.md); None without a number."""
        return caller_ref(self._settings.webhook_secrets[0], caller_id) if caller_id else None

    def validate_sample(self, request: PrecallRequest) -> ValidSample:
        """Format from the bytes, measured duration, then the quality gate (before anything reaches
        ElevenLabs, so a refused sample spends no voice slot); trimmed if configured. A refused sample
        is still written to `DEBUG_SAMPLE_DIR`, where `check-sample` can show why.

        Raises `SampleQualityTooLow` with `SAMPLE_QUALITY_GATE=enforce` when the sample fails."""
        data = request.sample.data
        fmt = audio.sniff_format(data)
        keep = quality.FIRST_WINDOW_SECONDS if self._settings.measures_quality else 0.0
        probe = audio.probe(data, fmt, self._settings.min_sample_seconds, keep_seconds=keep)
        report = self._measure(request, data, fmt, probe) if self._settings.measures_quality else None
        limit = self._settings.clone_sample_max_seconds
        if limit > 0 and probe.declared_seconds > limit:
            data = audio.trim(data, fmt, limit)
        if self._settings.debug_sample_dir:
            _write_debug_sample(self._settings.debug_sample_dir, request.conversation_id, fmt, data)
        if report is not None and report.reasons and self._settings.enforces_quality:
            raise SampleQualityTooLow(_refusal_message(report), report.reasons, report.as_dict())
        return ValidSample(data, fmt, report)

    def _measure(self, request: PrecallRequest, data: bytes, fmt: audio.AudioFormat, probe: audio.AudioProbe) -> quality.QualityReport:
        """The gate's measures, logged as numbers (`sample_quality`) with the verdict this setting gives."""
        started = time.monotonic()
        report = quality.assess(probe.samples, probe.sample_rate, self._settings.min_speech_seconds,
                                lambda: (audio.continued(data, fmt, probe, quality.MAX_ANALYSED_SECONDS), probe.sample_rate))
        refused = bool(report.reasons) and self._settings.enforces_quality
        log_event(_log, logging.WARNING if report.reasons else logging.INFO,
                  "Voice sample refused by the quality gate" if refused else "Voice sample quality measured",
                  "sample_quality", conversation_id=request.conversation_id, gate=self._settings.sample_quality_gate,
                  verdict="refused" if refused else ("would_refuse" if report.reasons else "accepted"),
                  reason=report.reasons[0] if report.reasons else "", gate_ms=round((time.monotonic() - started) * 1000, 1),
                  **report.as_dict())
        return report

    def handle(self, request: PrecallRequest, started: float, deadline: Deadline | None = None,
               patch_agent: bool = True) -> CloneOutcome:
        """Validate, then clone once per conversation (concurrent duplicates share the work). The
        telephony front gives its own (shorter) deadline and never PATCHes the shared agent."""
        valid = self.validate_sample(request)
        if deadline is None:
            deadline = Deadline(self._settings.request_deadline_seconds - (time.monotonic() - started))
        return self._flights.run(request.conversation_id,
                                 lambda: self._clone_and_update(request, valid.data, valid.format, deadline, valid.quality,
                                                                patch_agent))

    def _clone_and_update(self, request: PrecallRequest, sample: bytes, fmt: audio.AudioFormat, deadline: Deadline,
                          report: quality.QualityReport | None, patch_agent: bool) -> CloneOutcome:
        """Nothing waits that need not: the duplicate look-up runs beside the clone, and the event is
        published beside the agent PATCH (the answer waits for both, the publish at most about a second:
        Cloud Run may throttle the CPU once the answer is sent, so a normal publish is done before it)."""
        timings: dict[str, int] = {}
        lookup = self._pool.submit(self._timed, timings, "lookup_ms", self._existing_clones, request.conversation_id, deadline)
        clone = self._clone(request, sample, fmt, deadline, lookup, timings)
        self._remember(request, clone)
        first_message = greeting(self._settings.first_message_template, self._settings.first_message_default, request.caller.name)
        published = None
        if clone.event is not None:
            published = self._pool.submit(self._timed, timings, "publish_ms", self._sink.publish, clone.event)
            publish_started = time.monotonic()
        patching = patch_agent and self._settings.patches_agent
        agent_updated = patching and self._timed(
            timings, "agent_update_ms", self._update_agent, request, clone.voice_id, first_message, deadline)
        check = clone.twin_check
        if check is not None and patching:
            # `patch` mode: the twin look-up ran beside the PATCH (listing voices is quicker than a PATCH), so a
            # call that won the race waits for nothing more; one that lost PATCHes the agent again with the
            # older clone, then deletes its own, and answers with the older.
            twin = self._older_twin(check, deadline)
            if twin is None:
                self._log_success(request, clone, timings)
            else:
                repatched = self._timed(timings, "agent_repatch_ms", self._update_agent, request, twin.voice_id,
                                        first_message, deadline)
                # The agent may still name this call's clone if the second PATCH failed: then it stays
                # until the call ends (its voice.created is out), rather than leave the agent on a deleted voice.
                clone = self._yield_to(twin, request, check.made, deadline, timings,
                                       delete_now=repatched or not agent_updated, found_by="lookup")
                agent_updated = repatched
                self._remember(request, clone)
                if clone.event is not None:  # the answer waits for the kept clone's event, not the discarded one's
                    published = self._pool.submit(self._timed, timings, "publish_ms", self._sink.publish, clone.event)
                    publish_started = time.monotonic()
        elif check is not None:
            self._log_success(request, clone, timings)
            self._pool.submit(self._settle_behind, request, clone, check, deadline)
        if published is not None and clone.event is not None:
            self._await_publish(published, clone.event, publish_started)
        return CloneOutcome(request.conversation_id, request.agent_id, clone.voice_id, clone.name, agent_updated,
                            first_message, request.caller, clone.reused, timings, report)

    def _remember(self, request: PrecallRequest, clone: _Cloned) -> None:
        """What `/conversation-init` and `/twilio/connect` on this instance answer for the call."""
        self.prepared.remember(PreparedClone(clone.voice_id, clone.name, request.conversation_id, request.caller.name,
                                             self.caller_ref(request.caller_id), self._now()))

    def publish(self, event: dict[str, Any]) -> bool | None:
        """Publish for an answer that must not wait long: True/False once done, None if it is still
        under way after `PUBLISH_WAIT_SECONDS` (it goes on behind the answer)."""
        return self._await_publish(self._pool.submit(self._sink.publish, event), event, time.monotonic())

    @staticmethod
    def _await_publish(published: Future[bool], event: dict[str, Any], started: float) -> bool | None:
        """The answer waits at most `PUBLISH_WAIT_SECONDS` for its event (a stalled Pub/Sub cost every call
        6 s: the publisher's own 5 s timeout and then some). Past that the publish finishes behind the answer,
        or fails and says so (`voice_event_publish_failed`); a clone whose event never lands is the sweep's."""
        try:
            return published.result(timeout=max(0.0, PUBLISH_WAIT_SECONDS - (time.monotonic() - started)))
        except FutureTimeout:
            log_event(_log, logging.WARNING, "Publishing is slow; answering without waiting for it",
                      "voice_event_publish_pending", lifecycle_event=event.get("event_type"),
                      conversation_id=event.get("conversation_id"), waited_ms=round((time.monotonic() - started) * 1000))
            return None

    @staticmethod
    def _timed(timings: dict[str, int], key: str, step: Callable[..., T], *args: object) -> T:
        started = time.monotonic()
        try:
            return step(*args)
        finally:
            timings[key] = round((time.monotonic() - started) * 1000)

    def _existing_clones(self, conversation_id: str, deadline: Deadline) -> list[Clone]:
        """This service's clones of the conversation already in ElevenLabs (another instance's, for a
        redelivered webhook). Only an optimisation: a failed look-up finds nothing."""
        try:
            return self._inventory.for_conversation(conversation_id, deadline)
        except (ElevenLabsError, DeadlineExceeded):
            return []

    def _clone(self, request: PrecallRequest, sample: bytes, fmt: audio.AudioFormat, deadline: Deadline,
               lookup: Future[list[Clone]], timings: dict[str, int]) -> _Cloned:
        conversation_id = request.conversation_id
        created_at = self._now()
        name = voice_name(request.caller.name, created_at, conversation_id)
        log_event(_log, logging.INFO, "Voice cloning initiated", "voice_clone_start",
                  conversation_id=conversation_id, agent_id=request.agent_id, caller_name=mask_name(request.caller.name),
                  sample_bytes=len(sample), sample_format=fmt.name)
        clone_started = time.monotonic()
        try:
            added = self._add_voice(request, sample, fmt, name, created_at, deadline)
        except VoiceLimitReached as limit:
            self._free_slot(conversation_id, deadline, limit)
            added = self._add_voice(request, sample, fmt, name, created_at, deadline)  # once, no more
        timings["clone_ms"] = round((time.monotonic() - clone_started) * 1000)
        voice_id = added.voice_id
        if added.requires_verification:
            self._discard(request, voice_id, name, created_at, deadline, "requires_verification")
            raise VoiceCloningFailed(
                "ElevenLabs could not clone the voice: the sample matches a protected voice and the clone requires "
                "verification before use, so it cannot be used for this call (the clone was discarded)")
        earlier = [c for c in self._wait_for(lookup, deadline) if c.voice_id != voice_id]
        made = added.taken_over or Clone(voice_id, name, conversation_id, request.agent_id, created_at.replace(microsecond=0))
        own = None if added.taken_over is not None else made
        if earlier:  # a clone listed before this one could be seen: an earlier request's (see `_older_twin`)
            return self._yield_to(min(earlier, key=_age_order), request, own, deadline, timings, delete_now=True,
                                  found_by="lookup")
        if added.taken_over is not None:
            return self._yield_to(added.taken_over, request, None, deadline, timings, delete_now=False, found_by="add_probe")
        # Look again after the add (`_older_twin`), beside what the call does next.
        listing = self._pool.submit(self._timed, timings, "recheck_ms", self._existing_clones, conversation_id, deadline)
        return _Cloned(voice_id, name, reused=False, twin_check=_TwinCheck(made, listing),
                       event=events.voice_created(voice_id, name, conversation_id, request.agent_id, created_at))

    def _yield_to(self, keep: Clone, request: PrecallRequest, own: Clone | None, deadline: Deadline,
                  timings: dict[str, int], delete_now: bool, found_by: str) -> _Cloned:
        """Answer with another request's clone of the conversation (`found_by`: the look-up beside or after
        the add, or the add's own idempotency probe). `own` is the clone this call made, if any (one taken
        over from the add's probe is not its own): deleted at once (`delete_now`), or, where the agent may
        still name it, left to the lifecycle (its voice.created is out) and deleted with the call."""
        if own is not None and delete_now:
            self._discard(request, own.voice_id, own.name, own.created_at or self._now(), deadline, "duplicate",
                          keep.voice_id)
        elif own is not None:
            log_event(_log, logging.WARNING, "A second clone of this conversation was made; it is deleted with the call",
                      "voice_clone_duplicate", conversation_id=request.conversation_id, voice_id=own.voice_id,
                      kept_voice_id=keep.voice_id, deleted=False)
        # Not `voice_clone_success`: that line is its maker's, so the log-based "clones made" counts each clone once.
        log_event(_log, logging.INFO, "Reusing an earlier clone of this conversation", "voice_clone_reused",
                  conversation_id=request.conversation_id, voice_id=keep.voice_id, clone_ms=timings["clone_ms"],
                  found_by=found_by)
        return _Cloned(keep.voice_id, keep.name, reused=True, event=self._created_event(request, keep))

    def _created_event(self, request: PrecallRequest, clone: Clone) -> dict[str, Any]:
        """voice.created for another request's clone this call answers with. Its maker may have died before
        publishing (seen in the soak: a retry after a crash reused the clone, and without a post-call
        webhook it waited for the TTL); one more event is harmless."""
        return events.voice_created(clone.voice_id, clone.name, request.conversation_id, request.agent_id,
                                    clone.created_at or self._now())

    def _log_success(self, request: PrecallRequest, clone: _Cloned, timings: dict[str, int]) -> None:
        log_event(_log, logging.INFO, "Voice cloned successfully", "voice_clone_success",
                  conversation_id=request.conversation_id, voice_id=clone.voice_id, clone_ms=timings["clone_ms"])

    def _older_twin(self, check: _TwinCheck, deadline: Deadline) -> Clone | None:
        """The same webhook sent to two instances at once (or a sender's retry a moment later) makes a
        clone on each, and neither saw the other's before its own add: the look-up after the add
        (`twin_check`) lists both. The oldest (created time, then voice id: both instances order them
        alike) is kept; None if that is ours. A look-up that fails or hangs keeps ours (the other clone
        then waits for the call's end). Left open: with the labels dropped (ages in whole seconds), two
        clones made within one second, one listed too late for the other's look: both kept (the same
        caller's voice; the second is deleted with the call)."""
        found = {c.voice_id: c for c in self._wait_for(check.listing, deadline)}
        found.setdefault(check.made.voice_id, check.made)  # a listing may not show a voice made a moment ago
        oldest = min(found.values(), key=_age_order)
        return None if oldest.voice_id == check.made.voice_id else oldest

    def _settle_behind(self, request: PrecallRequest, clone: _Cloned, check: _TwinCheck, deadline: Deadline) -> None:
        """Without a PATCH (`override` mode, the telephony front) the answer does not wait for the twin
        look-up: it costs a listing's round trip, about a tenth of the caller's wait. Once it is in, a call
        that lost the race points this instance's prepared clone at the older twin (`voice_clone_superseded`).
        Its own clone is not deleted at once (the answer named it, and `/twilio/connect` may already have
        handed it to the call): it is deleted with the call, as every clone is. Runs in the side pool, where
        nobody reads its result: any failure is logged here."""
        try:
            twin = self._older_twin(check, deadline)
            if twin is None:
                return
            log_event(_log, logging.WARNING, "An older clone of this conversation now stands for the call; this one is "
                      "deleted with the call", "voice_clone_superseded", conversation_id=request.conversation_id,
                      voice_id=clone.voice_id, kept_voice_id=twin.voice_id)
            self._remember(request, _Cloned(twin.voice_id, twin.name, reused=True, event=None))
            self._sink.publish(self._created_event(request, twin))
        except Exception as exc:  # noqa: BLE001 - a failed second look keeps this call's clone, which is answered already
            log_event(_log, logging.ERROR, "The look for a twin clone after the add failed", "voice_twin_check_failed",
                      conversation_id=request.conversation_id, voice_id=clone.voice_id, error_type=type(exc).__name__)

    @staticmethod
    def _wait_for(lookup: Future[list[Clone]], deadline: Deadline) -> list[Clone]:
        """The look-up's answer; it normally arrived during the clone. A look-up still hanging after
        that gets a short grace, then the call goes on (a duplicate then waits for the call's end)."""
        try:
            return lookup.result(timeout=min(deadline.remaining(), LOOKUP_GRACE_SECONDS))
        except FutureTimeout:
            return []

    def _discard(self, request: PrecallRequest, voice_id: str, name: str, created_at: datetime, deadline: Deadline,
                 reason: str, kept_voice_id: str | None = None) -> None:
        """Delete a clone this call must not use (held for verification, or a duplicate of an earlier
        clone of the same conversation) at once, so it takes no slot; if that fails, hand it to the
        lifecycle like any clone."""
        try:
            self._client.delete_voice(voice_id, deadline)
            deleted = True
        except (ElevenLabsError, DeadlineExceeded):
            deleted = False
            self._sink.publish(events.voice_created(voice_id, name, request.conversation_id, request.agent_id, created_at))
        if reason == "duplicate":
            log_event(_log, logging.WARNING, "A second clone of this conversation was made; it was discarded",
                      "voice_clone_duplicate", conversation_id=request.conversation_id, voice_id=voice_id,
                      kept_voice_id=kept_voice_id, deleted=deleted)
        else:
            log_event(_log, logging.ERROR, "ElevenLabs requires verification for this clone; it cannot be used",
                      "voice_clone_failed", conversation_id=request.conversation_id, voice_id=voice_id,
                      reason=reason, deleted=deleted)

    def _add_voice(self, request: PrecallRequest, sample: bytes, fmt: audio.AudioFormat, name: str,
                   created_at: datetime, deadline: Deadline) -> _Added:
        conversation_id = request.conversation_id
        reference = self.caller_ref(request.caller_id)
        probed: dict[str, Clone] = {}

        def already_cloned() -> str | None:
            """The add's idempotency probe: a clone of this conversation already made, this call's own
            earlier attempt (its name, to the second) first."""
            try:
                found = self._inventory.for_conversation(conversation_id, deadline)
            except (ElevenLabsError, DeadlineExceeded):
                return None
            if not found:
                return None
            # Else the oldest: the one every instance keeps (a newer one may be a twin being deleted).
            clone = next((c for c in found if c.name == name), None) or min(found, key=_age_order)
            probed[clone.voice_id] = clone
            return clone.voice_id

        try:
            voice = self._client.add_voice(
                name=name, sample=sample, filename=f"{_file_stem(request)}.{fmt.extension}", mime_type=fmt.mime_type,
                description=clone_description(conversation_id, reference),
                labels=clone_labels(conversation_id, request.agent_id, created_at, reference),
                remove_background_noise=self._settings.remove_background_noise,
                deadline=deadline, already_done=already_cloned,
            )
        except DeadlineExceeded:
            log_event(_log, logging.ERROR, "Voice cloning ran out of time", "voice_clone_failed",
                      conversation_id=conversation_id, reason="deadline")
            raise UpstreamTimeout("The pre-call deadline ran out while cloning the voice") from None
        except ElevenLabsError as exc:
            log_event(_log, logging.ERROR, "Voice cloning failed", "voice_clone_failed",
                      conversation_id=conversation_id, status=exc.status, elevenlabs_code=exc.code, reason=exc.message)
            if exc.has("voice_limit_reached"):
                raise VoiceLimitReached(f"ElevenLabs could not clone the voice: {exc.message}") from None
            raise VoiceCloningFailed(f"ElevenLabs could not clone the voice: {exc.message}") from None
        found = probed.get(voice.voice_id) if voice.found_by_probe else None
        return _Added(voice.voice_id, voice.requires_verification, found if found is not None and found.name != name else None)

    def _free_slot(self, conversation_id: str, deadline: Deadline, limit: VoiceLimitReached) -> None:
        """Make room after `voice_limit_reached`, if auto-delete allows touching old clones."""
        if not self._settings.voice_clone_auto_delete:
            raise VoiceCloningFailed(f"{limit.message} (VOICE_CLONE_AUTO_DELETE is off, so no clone was freed)")
        try:
            freed = self._inventory.free_slot(deadline, keep_conversation=conversation_id)
        except (ElevenLabsError, DeadlineExceeded):
            freed = False
        if not freed:
            raise VoiceCloningFailed(f"{limit.message} (no clone of a finished call could be freed)")

    def _update_agent(self, request: PrecallRequest, voice_id: str, first_message: str, deadline: Deadline) -> bool:
        self._warn_on_patch_overlap(request)
        try:
            self._client.update_agent(request.agent_id, first_message=first_message, voice_id=voice_id, deadline=deadline)
        except (ElevenLabsError, DeadlineExceeded) as exc:
            log_event(_log, logging.ERROR, "Agent update failed; the call proceeds with the agent's voice",
                      "agent_update_failed", conversation_id=request.conversation_id, agent_id=request.agent_id,
                      voice_id=voice_id, reason=getattr(exc, "message", str(exc)))
            return False
        log_event(_log, logging.INFO, "Agent updated successfully", "agent_update_success",
                  conversation_id=request.conversation_id, agent_id=request.agent_id, voice_id=voice_id)
        return True


    def _warn_on_patch_overlap(self, request: PrecallRequest) -> None:
        """`patch` mode edits one shared agent per call: two calls close together can hear each
        other's voice. Say so where it happens; the two-step flow (`override`) has no such race."""
        now = time.monotonic()
        with self._patch_lock:
            previous = self._last_patch.get(request.agent_id)
            self._last_patch[request.agent_id] = (now, request.conversation_id)
        if previous is not None and previous[1] != request.conversation_id and now - previous[0] < AGENT_PATCH_OVERLAP_SECONDS:
            log_event(_log, logging.WARNING,
                      "Agent PATCHed for two calls within minutes: the earlier call may now speak with this caller's "
                      "voice. Use AGENT_UPDATE_MODE=override with /conversation-init to avoid it.",
                      "agent_patch_overlap", agent_id=request.agent_id, conversation_id=request.conversation_id,
                      previous_conversation_id=previous[1], seconds_since_previous=round(now - previous[0], 1))


def _age_order(clone: Clone) -> tuple[datetime, str]:
    """Oldest first; a clone of unknown age last; the voice id breaks ties the same way everywhere."""
    return (clone.created_at or datetime.max.replace(tzinfo=timezone.utc), clone.voice_id)


# What a caller can do about each reason, for the error message (the codes are in `reasons`).
_ADVICE = {
    "too_little_speech": "too little speech (record the caller speaking, not music, tones or silence)",
    "keypad_tones": "keypad tones (record without pressing keys)",
    "clipped": "clipped (record at a lower level)",
    "too_quiet": "too quiet (record closer to the microphone or at a higher level)",
    "too_noisy": "too noisy (record somewhere quieter, without music or television)",
}


def _refusal_message(report: quality.QualityReport) -> str:
    return (f"The voice sample cannot make a good clone: {'; '.join(_ADVICE[r] for r in report.reasons)}. "
            f"{report.speech_seconds:g} s of speech found in the first {report.analysed_seconds:g} s.")


def _file_stem(request: PrecallRequest) -> str:
    """Upload filename stem: the sender's, if sane; the extension always follows the real format."""
    stem = Path(request.sample.filename or "").stem
    return stem if stem and stem.isascii() and stem.replace("-", "").replace("_", "").isalnum() else "voice_sample"


def _write_debug_sample(directory: str, conversation_id: str, fmt: audio.AudioFormat, data: bytes) -> None:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    target = path / f"{conversation_id}.{fmt.extension}"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
