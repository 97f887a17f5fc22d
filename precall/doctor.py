"""`python -m precall doctor`: prove a real ElevenLabs account, agent and deployment are ready before the first call.

  python -m precall doctor [--agent-id ID] [--service-url URL] [--probe-labels] [--slot-margin N] [--json]

Reads the service's own configuration from this machine's environment (env vars, `sm://` references:
`load_settings`; next to `make run`, its stack) and checks,
against ELEVENLABS_BASE_URL: the key, cloning (plan, voice slots, additions), this service's clones,
the agent (overrides, initiation webhook), its dynamic variables, the post-call webhook, the Pub/Sub
topic (with VOICE_EVENTS_TOPIC), the deployment end to end (with --service-url) and, opt-in, what
ElevenLabs keeps of a clone's labels (--probe-labels: clones a bundled sample and always deletes it).
With --service-url, what the deployment reports on `/healthz` (AGENT_UPDATE_MODE, where events go)
is preferred over this machine's settings, and each line says which of the two it judged.
Nothing else is written. Exit 0: nothing failed (warnings allowed); 1: something failed; 2: usage or
configuration error. `--json` prints only the JSON document on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import requests

from voiceclone import dev_stack
from voiceclone.clones import Clone, CloneInventory
from voiceclone.config import ConfigError, Settings, load_settings
from voiceclone.deadline import Deadline, DeadlineExceeded
from voiceclone.elevenlabs_client import ElevenLabsClient, ElevenLabsError
from voiceclone.logs import configure_logging
from voiceclone.naming import CLONE_SOURCE, CLONE_TYPE, ID_PATTERN, clone_description, clone_labels, voice_name
from voiceclone.readiness import FAILED, OK, UNKNOWN, WARNING, Finding, assess_postcall_webhook, public_url

from . import doctor_checks as checks

PROBE_SAMPLE = Path(__file__).with_name("data") / "probe_sample.mp3"  # 6 s of espeak-ng speech, MP3
HTTP_TIMEOUT_SECONDS = 10.0
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    agent_id: str
    service_url: str | None = None
    probe_labels: bool = False
    slot_margin: int | None = None
    timeout: float = 60.0


class _Reads:
    """ElevenLabs reads that turn a failure into a reason, remembering what the key lacks or proved."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.missing: dict[str, None] = {}  # permissions the key lacks, in the order met
        self.proven: set[str] = set()
        self.rejected = False
        self.unreachable: str | None = None

    def get(self, permission: str, call: Callable[[Deadline], T]) -> tuple[T | None, str | None]:
        try:
            value = call(self.deadline)
        except ElevenLabsError as exc:
            return None, self.failed(exc)
        except DeadlineExceeded:
            return None, "ElevenLabs did not answer in time"
        self.proven.add(permission)
        return value, None

    def failed(self, exc: ElevenLabsError) -> str:
        if exc.has("missing_permissions"):
            permission = checks.permission_named(exc.message) or "a permission"
            self.missing[permission] = None
            return f"the key lacks {permission}"
        if exc.has("invalid_api_key"):
            self.rejected = True
        if exc.status is None:
            self.unreachable = exc.message
        return f"ElevenLabs answered {exc.status or 'nothing'}: {exc.message}"


class Doctor:
    def __init__(self, settings: Settings, options: Options) -> None:
        self._local_mode = settings.agent_update_mode
        self._health = _http("GET", options.service_url + "/healthz") if options.service_url else None
        self.deployed = checks.deployed_settings(self._health[1] if self._health else None)
        # What the deployment runs beats this machine's guess: the agent is judged by the deployment's mode.
        self._settings = replace(settings, agent_update_mode=self.deployed.get("agent_update_mode", settings.agent_update_mode))
        self._options = options
        self._client = ElevenLabsClient(settings.elevenlabs_base_url, settings.elevenlabs_api_key, max_attempts=3)
        self._reads = _Reads(Deadline(options.timeout))

    @staticmethod
    def _now() -> datetime:
        return datetime.now(timezone.utc)

    def run(self) -> list[Finding]:
        """Every check, the key line first (it sums up what every read found out about the key)."""
        subscription, why = self._reads.get("user_read", self._client.get_subscription)
        if self._reads.rejected:
            return [checks.rejected_key_finding(), *self._outside(None)]
        if self._reads.unreachable:
            return [checks.unreachable_finding(self._settings.elevenlabs_base_url, self._reads.unreachable),
                    *self._outside(None)]
        found = self._cloning(subscription, why) + self._clones()
        agent, agent_found = self._agent()
        found += agent_found + self._workspace(agent)
        if self._options.probe_labels:
            found += self._probe(subscription)
        found += self._outside(agent)
        key = checks.key_finding(list(self._reads.missing), self._reads.proven)
        return [key, checks.write_permissions_finding(self._settings.agent_update_mode, self._reads.proven), *found]

    # -- ElevenLabs ----------------------------------------------------------------------

    def _cloning(self, subscription: dict[str, Any] | None, why: str | None) -> list[Finding]:
        if subscription is None:
            return [checks.unreadable_finding("cloning", "GET /v1/user/subscription", why or "")]
        return checks.cloning_findings(subscription, self._options.slot_margin)

    def _clones(self) -> list[Finding]:
        """Ownership as docs/operating.md describes it (`CloneInventory.all` / `Clone.from_voice`)."""
        inventory = CloneInventory(self._client, self._settings.voice_clone_ttl_seconds, self._now)
        clones, why = self._reads.get("voices_read", inventory.all)
        if clones is None:
            return [checks.unreadable_finding("clones of this service", "GET /v2/voices", why or "")]
        overdue = sum(1 for c in clones if inventory.is_expired(c))
        return [checks.clones_finding(len(clones), overdue, self._settings.voice_clone_ttl_seconds)]

    def _agent(self) -> tuple[dict[str, Any] | None, list[Finding]]:
        agent_id = self._options.agent_id

        def fetch(deadline: Deadline) -> dict[str, Any] | None:
            try:
                return self._client.get_agent(agent_id, deadline)
            except ElevenLabsError as exc:
                if exc.status == 404 or exc.has("agent_not_found"):
                    return None
                raise

        agent, why = self._reads.get("convai_read", fetch)
        if why is not None:
            return None, [checks.unreadable_finding("agent", f"GET /v1/convai/agents/{agent_id}", why)]
        if agent is None:
            return None, [checks.agent_missing_finding(agent_id)]
        return agent, checks.agent_findings(agent, agent_id, self._settings.agent_update_mode)

    def _workspace(self, agent: dict[str, Any] | None) -> list[Finding]:
        """The workspace's ConvAI settings and webhooks: the agent's initiation webhook and variables, then the
        post-call webhook (the same judgement as the sweep's)."""
        settings, _ = self._reads.get("convai_read", self._client.get_convai_settings)
        webhooks, _ = self._reads.get("workspace_read", self._client.list_workspace_webhooks)
        found = []
        if agent is not None:
            if self._settings.returns_overrides:
                found.append(checks.initiation_url_finding(settings, agent, self._settings.init_webhook_header,
                                                           self._options.service_url))
            found.append(checks.variables_finding(agent, self._settings.init_dynamic_variables))
        return found + assess_postcall_webhook(settings, agent, webhooks, self._options.service_url)

    def _probe(self, subscription: dict[str, Any] | None) -> list[Finding]:
        """Clone the bundled sample with the service's name, description and labels, read it back, delete it
        (also when a step in between fails)."""
        if _slots_full(subscription):
            return [Finding("label probe", UNKNOWN, "skipped: no free voice slot", "free a voice slot, then run it again")]
        created = self._now()
        conversation_id = f"doctor_{secrets.token_hex(6)}"
        labels = clone_labels(conversation_id, self._options.agent_id, created)
        inventory = CloneInventory(self._client, self._settings.voice_clone_ttl_seconds, self._now)
        deadline = Deadline(self._options.timeout)
        try:
            new = self._client.add_voice(
                name=voice_name("Doctor", created, conversation_id), sample=PROBE_SAMPLE.read_bytes(),
                filename=PROBE_SAMPLE.name, mime_type="audio/mpeg", description=clone_description(conversation_id),
                labels=labels, remove_background_noise=False, deadline=deadline,
                already_done=lambda: next((c.voice_id for c in inventory.for_conversation(conversation_id, deadline)), None))
        except ElevenLabsError as exc:
            return [checks.probe_refused_finding(self._reads.failed(exc))]
        except DeadlineExceeded:
            return [checks.probe_refused_finding("no answer in time (check ElevenLabs → Voices for a Doctor_Clone_… voice)")]
        self._reads.proven |= {"voices_write", "create_instant_voice_clone"}
        found: list[Finding] = []
        try:
            if new.requires_verification:
                found.append(checks.probe_verification_finding())
            found.append(self._inspect_probe(new.voice_id, labels, conversation_id, deadline))
        finally:
            found.append(self._delete_probe(new.voice_id))
        return found

    def _inspect_probe(self, voice_id: str, labels: dict[str, str], conversation_id: str, deadline: Deadline) -> Finding:
        try:
            voice = self._client.get_voice(voice_id, deadline)
        except ElevenLabsError as exc:
            return checks.probe_unread_finding(self._reads.failed(exc))
        except DeadlineExceeded:
            return checks.probe_unread_finding("no answer in time")
        if voice is None:
            return checks.probe_unread_finding("ElevenLabs no longer knows it")
        stored = voice.get("labels")
        clone = Clone.from_voice(voice)
        by_labels = isinstance(stored, dict) and stored.get("source") == CLONE_SOURCE and stored.get("type") == CLONE_TYPE
        recognised = clone is not None and clone.belongs_to(conversation_id)
        return checks.probe_labels_finding(labels, stored, recognised, by_labels)

    def _delete_probe(self, voice_id: str) -> Finding:
        try:
            self._client.delete_voice(voice_id, Deadline(max(self._options.timeout, 10.0)))
        except ElevenLabsError as exc:
            return checks.probe_cleanup_finding(voice_id, self._reads.failed(exc))
        except DeadlineExceeded:
            return checks.probe_cleanup_finding(voice_id, "no answer in time")
        return checks.probe_cleanup_finding(voice_id, None)

    # -- outside ElevenLabs ----------------------------------------------------------------

    def _outside(self, agent: dict[str, Any] | None) -> list[Finding]:
        found = [topic_finding(self._settings.voice_events_topic, self.deployed.get("events"))]
        if self._options.service_url and self._health is not None:
            required = checks.variables_used(agent) if agent else set()
            found += deployment_findings(self._options.service_url, self._settings, self._options.agent_id,
                                         required | set(checks.answered_variables(())), self._health, self._local_mode)
        return found


def _slots_full(subscription: dict[str, Any] | None) -> bool:
    used, limit = (subscription or {}).get("voice_slots_used"), (subscription or {}).get("voice_limit")
    return isinstance(used, int) and isinstance(limit, int) and used >= limit


def topic_finding(topic: str | None, deployed_events: str | None = None) -> Finding:
    """The topic exists (`GetTopic`) and this identity may publish (`TestIamPermissions`
    `pubsub.topics.publish`); the emulator implements no IAM, so that part can be "could not tell".
    `topic` is this machine's VOICE_EVENTS_TOPIC; `deployed_events` what the deployment's /healthz says
    (`pubsub` or `local`), which wins where the two disagree."""
    name = "Pub/Sub topic"
    if not topic and deployed_events == "pubsub":
        return Finding(name, UNKNOWN, "the deployment publishes to Pub/Sub (/healthz: events pubsub), but this "
                       "machine's VOICE_EVENTS_TOPIC is unset, so its topic was not checked",
                       "export VOICE_EVENTS_TOPIC (and GOOGLE_CLOUD_PROJECT) as deployed, e.g. voice-events, and run "
                       "doctor again")
    if topic and deployed_events == "local":
        return Finding(name, WARNING, f"the deployment has no VOICE_EVENTS_TOPIC (/healthz: events local, an "
                       f"in-process queue on each instance); this machine's {topic} is not used",
                       "redeploy with VOICE_EVENTS_TOPIC (deploy/setup.sh sets it), or unset it here")
    if not topic:
        where = "the deployment's /healthz: events local" if deployed_events else "this machine's VOICE_EVENTS_TOPIC unset"
        return Finding(name, OK, f"{where}: events go to the in-process queue (one machine only)")
    from google.api_core import exceptions  # imported here: only this check needs the (slow to import) client
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import pubsub_v1

    try:
        publisher = pubsub_v1.PublisherClient()
    except DefaultCredentialsError:
        return Finding(name, UNKNOWN, "no Google credentials on this machine", "gcloud auth application-default login")
    try:
        publisher.get_topic(request={"topic": topic}, timeout=HTTP_TIMEOUT_SECONDS)
    except exceptions.NotFound:
        return Finding(name, FAILED, f"{topic} does not exist: every lifecycle event is lost",
                       "create it: deploy/setup.sh, or gcloud pubsub topics create (docs/deploying.md)")
    except exceptions.GoogleAPICallError as exc:
        return Finding(name, UNKNOWN, f"could not read {topic}: {type(exc).__name__}",
                       "grant this identity roles/pubsub.viewer on the topic, or check it in the console")
    try:
        answer = publisher.test_iam_permissions(request={"resource": topic, "permissions": ["pubsub.topics.publish"]},
                                                timeout=HTTP_TIMEOUT_SECONDS)
    except exceptions.GoogleAPICallError as exc:
        return Finding(name, UNKNOWN, f"{topic} exists; could not tell whether this identity may publish "
                       f"({type(exc).__name__})", "check that the service's account has roles/pubsub.publisher on it")
    if "pubsub.topics.publish" not in answer.permissions:
        return Finding(name, FAILED, f"{topic} exists, but this identity may not publish to it",
                       "grant roles/pubsub.publisher on the topic to the service account (deploy/setup.sh does)")
    return Finding(name, OK, f"{topic} exists and this identity may publish")


def deployment_findings(service_url: str, settings: Settings, agent_id: str, required: set[str],
                        health: tuple[int | None, Any, str], local_mode: str) -> list[Finding]:
    """`GET /healthz` (its answer, fetched first); `/conversation-init` with the header secret and a made-up
    call sid (no clone exists for it, so none is created or used); the same request without the secret must get 401."""
    base = service_url.rstrip("/")
    found = [checks.health_finding(*health, local_mode=local_mode)]
    request = {"caller_id": "", "agent_id": agent_id, "called_number": "", "call_sid": f"CAdoctor{secrets.token_hex(8)}"}
    if settings.init_webhook_secrets:
        status, body, reason = _http("POST", base + "/conversation-init", json=request,
                                     headers={settings.init_webhook_header: settings.init_webhook_secrets[0]})
        found.append(checks.init_answer_finding(status, body, required, settings.init_webhook_header, reason))
    else:
        found.append(checks.init_secret_missing_finding(settings.agent_update_mode))
    status, _, reason = _http("POST", base + "/conversation-init", json=request)
    found.append(checks.init_auth_finding(status, reason))
    return found


def _http(method: str, url: str, **kwargs: Any) -> tuple[int | None, Any, str]:
    """Status, JSON body (None if not JSON) and, when there is no answer, why (never the request's headers)."""
    try:
        response = requests.request(method, url, timeout=HTTP_TIMEOUT_SECONDS, **kwargs)
    except requests.RequestException as exc:
        return None, None, f"{type(exc).__name__} from {public_url(url)}"
    try:
        body = response.json()
    except ValueError:
        body = None
    return response.status_code, body, ""


# -- the command line ----------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent-id", dest="agent", help="agent id (default: ELEVENLABS_AGENT_ID)")
    parser.add_argument("--agent", dest="agent", help=argparse.SUPPRESS)  # its earlier name
    parser.add_argument("--service-url", default=os.environ.get("PRECALL_URL") if _beside_make_run() else None,
                        help="the deployed precall_webhook base URL: also check it end to end, preferring what its "
                             "/healthz reports over this machine's settings (default next to make run: its URL)")
    parser.add_argument("--probe-labels", action="store_true",
                        help="clone a short bundled sample to see which labels ElevenLabs keeps (takes a voice slot "
                             "for a moment; always deleted)")
    parser.add_argument("--slot-margin", type=int, help="warn below this many free voice slots (default: 10%% of the "
                        "limit, at least 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for the ElevenLabs reads")
    parser.add_argument("--json", action="store_true", help="print only a JSON document on stdout")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")


def run(args: argparse.Namespace) -> int:
    """`python -m precall doctor` (dispatched from precall/__main__.py)."""
    try:
        settings, options = _configure(args, os.environ)
    except ConfigError as error:
        return _usage_error(args, f"configuration error: {error}")
    configure_logging("INFO" if args.verbose else "WARNING", sys.stderr)
    doctor = Doctor(settings, options)
    findings = doctor.run()
    mode = doctor.deployed.get("agent_update_mode", settings.agent_update_mode)
    context = {"elevenlabs_base_url": public_url(settings.elevenlabs_base_url), "agent_id": options.agent_id,
               "agent_update_mode": mode, "agent_update_mode_from": "deployment" if doctor.deployed else "this machine",
               "service_url": public_url(options.service_url) if options.service_url else None}
    if args.json:
        print(checks.render_json(context, findings))
    else:
        source = (f"the deployment's /healthz; this machine says {settings.agent_update_mode}"
                  if mode != settings.agent_update_mode else
                  "the deployment's /healthz" if doctor.deployed else "this machine's settings")
        title = (f"precall doctor · ElevenLabs {context['elevenlabs_base_url']} · agent {options.agent_id} · "
                 f"AGENT_UPDATE_MODE={mode} ({source})\n"
                 "ElevenLabs is read with this machine's ELEVENLABS_API_KEY; 'deployment:' lines are what "
                 "--service-url answered")
        print(checks.render_text(title, findings))
    return checks.exit_code(findings)


def _configure(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Settings, Options]:
    """The service's settings plus doctor's options; anything missing or malformed is a ConfigError (exit 2)."""
    settings = load_settings(env)
    agent_id = args.agent or settings.default_agent_id
    if not agent_id:
        raise ConfigError("ELEVENLABS_AGENT_ID", "is required for doctor (or pass --agent-id)")
    if not ID_PATTERN.fullmatch(agent_id):
        raise ConfigError("--agent-id", "must be letters, digits, '-' or '_'")
    if args.service_url is not None and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", args.service_url):
        raise ConfigError("--service-url", "must be the service's http(s) base URL, e.g. https://precall-webhook-….run.app")
    if args.slot_margin is not None and args.slot_margin < 0:
        raise ConfigError("--slot-margin", "must be 0 or more")
    if args.timeout <= 0:
        raise ConfigError("--timeout", "must be more than 0")
    return settings, Options(agent_id, args.service_url.rstrip("/") if args.service_url else None, args.probe_labels,
                             args.slot_margin, args.timeout)


def _beside_make_run() -> bool:
    """Whether this command took its settings from a running `make run` (voiceclone/dev_stack.py)."""
    return dev_stack.read(dev_stack.state_path(os.environ)) is not None and "PRECALL_URL" in os.environ


def _usage_error(args: argparse.Namespace, message: str) -> int:
    print(message, file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": False, "exit_code": 2, "error": message, "checks": []}, indent=2))
    return 2
