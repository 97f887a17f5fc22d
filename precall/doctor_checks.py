"""What `python -m precall doctor` concludes from what it read (pure): one `Finding` per checklist line.

Every field read here is named in the ElevenLabs SDK 2.78 sources (paths under
.venv/lib/python3.11/site-packages/elevenlabs, cited per function); where ElevenLabs leaves a field
out, the line says "could not tell" instead of guessing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import urlsplit

from voiceclone.documents import dig
from voiceclone.readiness import FAILED, OK, SEVERITY, UNKNOWN, WARNING, Finding, public_url

from .init_answer import ANSWER_TYPE, SERVICE_VARIABLES, OverridePermissions

# The SDK's `PermissionType` names (elevenlabs/types/permission_type.py) of what the service does:
# list/read voices, delete them, clone, read the agent and conversations, PATCH the agent (patch mode),
# read the subscription and (for this check) the workspace webhooks.
NEEDED_PERMISSIONS = ("voices_read", "voices_write", "create_instant_voice_clone", "convai_read", "convai_write",
                      "user_read", "workspace_read")
_PERMISSION_IN_MESSAGE = re.compile(r"missing the permission (\w+)")
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
SYSTEM_PREFIX = "system__"
SECURITY_TAB = "ElevenLabs → Agents → your agent → Security tab"
KEY_SETTINGS = "ElevenLabs → Developers → API keys"


# -- the key ----------------------------------------------------------------------------------

def permission_named(message: str) -> str | None:
    """The permission a `401 missing_permissions` message names ("...missing the permission voices_read to...")."""
    found = _PERMISSION_IN_MESSAGE.search(message or "")
    return found.group(1) if found else None


def rejected_key_finding() -> Finding:
    return Finding("key", FAILED, "ElevenLabs rejected the key (401 invalid_api_key)",
                   f"set ELEVENLABS_API_KEY to a valid key ({KEY_SETTINGS})")


def unreachable_finding(base_url: str, reason: str) -> Finding:
    return Finding("key", FAILED, f"could not reach ElevenLabs at {public_url(base_url)}: {reason}",
                   "check ELEVENLABS_BASE_URL and this machine's network")


def key_finding(missing: Sequence[str], proven: Collection[str]) -> Finding:
    """A scoped key without a permission is reported as that, never as a bad key."""
    if missing:
        return Finding("key", FAILED, f"accepted, but it lacks {', '.join(missing)} (the service needs "
                       f"{', '.join(NEEDED_PERMISSIONS)})",
                       f"{KEY_SETTINGS}: edit the key to allow {', '.join(missing)} (or leave it unrestricted)")
    return Finding("key", OK, f"accepted; permissions proven: {', '.join(p for p in NEEDED_PERMISSIONS if p in proven)}")


def write_permissions_finding(mode: str, proven: Collection[str]) -> Finding:
    """Write permissions are only proven by using them; doctor writes nothing without --probe-labels
    and never changes the agent."""
    wanted = ["voices_write", "create_instant_voice_clone"] + (["convai_write"] if mode in ("patch", "both") else [])
    unproven = [p for p in wanted if p not in proven]
    name = "key: write permissions"
    if not unproven:
        return Finding(name, OK, f"proven: {', '.join(wanted)}")
    if unproven == ["convai_write"]:
        fix = (f"doctor never changes the agent: check in {KEY_SETTINGS} that ElevenLabs Agents is 'write' "
               "(AGENT_UPDATE_MODE=patch/both PATCHes the agent)")
    else:
        fix = "run doctor again with --probe-labels: it clones a short sample and deletes it"
    return Finding(name, UNKNOWN, f"not exercised: {', '.join(unproven)}", fix)


def unreadable_finding(name: str, what: str, reason: str) -> Finding:
    fix = ("allow that permission on the key (see the key line)" if reason.startswith("the key lacks")
           else "run doctor again; if it persists, check ELEVENLABS_BASE_URL and ElevenLabs' status page")
    return Finding(name, UNKNOWN, f"could not read {what}: {reason}", fix)


# -- cloning (GET /v1/user/subscription: elevenlabs/types/subscription_response.py) ---------------

def slot_margin(voice_limit: int, configured: int | None) -> int:
    """Free slots below which a warning is due: as configured, else 10% of the limit and at least 2."""
    return configured if configured is not None else max(2, math.ceil(voice_limit / 10))


def cloning_findings(subscription: dict[str, Any], margin: int | None) -> list[Finding]:
    """`can_use_instant_voice_cloning`, `voice_slots_used` / `voice_limit`, `voice_add_edit_counter` /
    `max_voice_add_edits` (a cap on additions; null means none)."""
    return [_plan(subscription), _slots(subscription, margin), _additions(subscription)]


def _plan(subscription: dict[str, Any]) -> Finding:
    can = subscription.get("can_use_instant_voice_cloning")
    tier = subscription.get("tier") or "unknown"
    if can is True:
        return Finding("cloning: plan", OK, f"instant voice cloning allowed (tier {tier})")
    if can is False:
        return Finding("cloning: plan", FAILED, f"tier {tier} does not include instant voice cloning: every clone is refused",
                       "ElevenLabs → Subscription: upgrade to a plan with instant voice cloning (Starter or higher)")
    return Finding("cloning: plan", UNKNOWN, "ElevenLabs did not report can_use_instant_voice_cloning",
                   "check ElevenLabs → Subscription for instant voice cloning")


def _slots(subscription: dict[str, Any], configured_margin: int | None) -> Finding:
    used, limit = subscription.get("voice_slots_used"), subscription.get("voice_limit")
    name = "cloning: voice slots"
    if not isinstance(used, int) or not isinstance(limit, int):
        return Finding(name, UNKNOWN, "ElevenLabs did not report voice_slots_used / voice_limit",
                       "check ElevenLabs → Voices for free custom voice slots")
    free, margin = limit - used, slot_margin(limit, configured_margin)
    detail = f"{used} of {limit} used, {free if free > 0 else 0} free (warning below {margin})"
    fix = ("delete voices you no longer need (ElevenLabs → Voices; this service's overdue clones: "
           "python -m cleanup sweep --apply) or raise the plan's voice limit")
    if free <= 0:
        return Finding(name, FAILED, f"{detail}: the next call cannot clone", fix)
    if free < margin:
        return Finding(name, WARNING, detail, fix)
    return Finding(name, OK, detail)


def _additions(subscription: dict[str, Any]) -> Finding:
    name = "cloning: voice additions"
    if "max_voice_add_edits" not in subscription:
        return Finding(name, UNKNOWN, "ElevenLabs did not report max_voice_add_edits",
                       "check ElevenLabs → Subscription for a limit on voice additions")
    cap, count = subscription.get("max_voice_add_edits"), subscription.get("voice_add_edit_counter")
    if cap is None:
        return Finding(name, OK, f"no cap reported ({count if isinstance(count, int) else '?'} used)")
    if not isinstance(cap, int) or not isinstance(count, int):
        return Finding(name, UNKNOWN, "ElevenLabs reported max_voice_add_edits without voice_add_edit_counter",
                       "check ElevenLabs → Subscription for a limit on voice additions")
    left = cap - count
    fix = "wait for the next billing period or raise the plan: every call adds a voice"
    if left <= 0:
        return Finding(name, FAILED, f"{count} of {cap} voice additions used: the next clone is refused", fix)
    if left < slot_margin(cap, None):
        return Finding(name, WARNING, f"{count} of {cap} voice additions used, {left} left", fix)
    return Finding(name, OK, f"{count} of {cap} voice additions used")


def clones_finding(total: int, overdue: int, ttl_seconds: int) -> Finding:
    """This service's clones (ownership as docs/events.md describes it) and how many outlived VOICE_CLONE_TTL_SECONDS."""
    detail = f"{total} clone{'s' if total != 1 else ''} of this service, {overdue} older than the TTL ({ttl_seconds} s)"
    if overdue:
        return Finding("clones of this service", WARNING, f"{detail}: cleanup is not deleting them",
                       "python -m cleanup sweep --apply; then check the post-call webhook and the push "
                       "subscription's dead-letter topic")
    return Finding("clones of this service", OK, detail)


# -- the agent (GET /v1/convai/agents/{id}: elevenlabs/types/get_agent_response_model.py) -------

def agent_missing_finding(agent_id: str) -> Finding:
    return Finding("agent", FAILED, f"ElevenLabs has no agent {agent_id}",
                   "set ELEVENLABS_AGENT_ID (or --agent) to the agent's id (ElevenLabs → Agents → the agent's URL)")


def agent_findings(agent: dict[str, Any], agent_id: str, mode: str) -> list[Finding]:
    """Overrides and the initiation switch in `platform_settings.overrides` (read by `OverridePermissions`;
    elevenlabs/types/conversation_initiation_client_data_config_output.py) in override/both mode;
    the shared-agent race (docs/connecting-elevenlabs.md) wherever the service PATCHes the agent."""
    findings = [Finding("agent", OK, f"{agent.get('name') or agent_id} ({agent_id})")]
    if mode in ("override", "both"):
        findings += _override_findings(agent)
    if mode in ("patch", "both"):
        findings.append(Finding("agent: update mode", WARNING,
                                f"AGENT_UPDATE_MODE={mode}: every call PATCHes the one shared agent, so concurrent "
                                "callers can hear each other's clone (docs/connecting-elevenlabs.md)",
                                "use the two-step flow: AGENT_UPDATE_MODE=override (docs/connecting-elevenlabs.md)"))
    return findings


def _override_findings(agent: dict[str, Any]) -> list[Finding]:
    overrides = dig(agent, "platform_settings", "overrides")
    if not isinstance(overrides, dict):
        reason = "ElevenLabs did not report platform_settings.overrides"
        fix = f"check {SECURITY_TAB}"
        return [Finding("agent: overrides", UNKNOWN, reason, fix), Finding("agent: initiation webhook", UNKNOWN, reason, fix)]
    allowed = OverridePermissions.from_agent(agent)
    refused = [label for label, ok in (("first message", allowed.first_message), ("voice", allowed.voice)) if not ok]
    findings = [
        Finding("agent: overrides", FAILED,
                f"overriding the {' and the '.join(refused)} is not allowed: the call keeps the agent's own",
                f"{SECURITY_TAB} → Overrides: switch on {' and '.join(r.capitalize() for r in refused)}")
        if refused else Finding("agent: overrides", OK, "first message and voice may be overridden")]
    switch = overrides.get("enable_conversation_initiation_client_data_from_webhook")
    if switch is True:
        findings.append(Finding("agent: initiation webhook", OK, "ElevenLabs asks /conversation-init at call start"))
    elif switch is False:
        findings.append(Finding("agent: initiation webhook", FAILED, "switched off: ElevenLabs never calls /conversation-init",
                                f"{SECURITY_TAB}: switch on 'Fetch conversation initiation data for inbound Twilio calls'"))
    else:
        findings.append(Finding("agent: initiation webhook", UNKNOWN, "ElevenLabs did not report "
                                "enable_conversation_initiation_client_data_from_webhook", f"check {SECURITY_TAB}"))
    return findings


def initiation_url_finding(convai_settings: dict[str, Any] | None, agent: dict[str, Any], header: str,
                           expected_url: str | None) -> Finding:
    """Where ElevenLabs sends the initiation webhook and with which request headers: the agent's
    `platform_settings.workspace_overrides.conversation_initiation_client_data_webhook`, else the
    workspace's (`GET /v1/convai/settings`); `url` and `request_headers`
    (elevenlabs/types/conversation_initiation_client_data_webhook.py)."""
    name = "agent: initiation webhook URL"
    webhook = (dig(agent, "platform_settings", "workspace_overrides", "conversation_initiation_client_data_webhook")
               or dig(convai_settings, "conversation_initiation_client_data_webhook"))
    fix = (f"ElevenLabs → Agents → Settings → Conversation initiation webhook: URL https://SERVICE/conversation-init "
           f"with the request header {header} set to INIT_WEBHOOK_SECRET")
    if not isinstance(webhook, dict):
        if convai_settings is None:
            return Finding(name, UNKNOWN, "could not read the ConvAI settings", "allow convai_read on the key (see the key line)")
        return Finding(name, FAILED, "no conversation initiation webhook is configured", fix)
    url = webhook.get("url") if isinstance(webhook.get("url"), str) else ""
    wanted = expected_url.rstrip("/") + "/conversation-init" if expected_url else None
    if not url:
        return Finding(name, FAILED, "the conversation initiation webhook has no URL", fix)
    if wanted and url.rstrip("/") != wanted:
        return Finding(name, FAILED, f"{public_url(url)}, not {public_url(wanted)}", fix)
    if not urlsplit(url).path.rstrip("/").endswith("/conversation-init"):
        return Finding(name, FAILED, f"{public_url(url)}: not this service's /conversation-init", fix)
    headers = webhook.get("request_headers")
    if not isinstance(headers, dict) or header.lower() not in (str(k).lower() for k in headers):
        return Finding(name, FAILED, f"{public_url(url)} without the request header {header}: every call is refused 401", fix)
    return Finding(name, OK, f"{public_url(url)} with the header {header}")


# -- dynamic variables (elevenlabs/types/agent_config.py, dynamic_variables_config.py) -----------

def variables_used(agent: dict[str, Any]) -> set[str]:
    """`{{variable}}`s of `conversation_config.agent.first_message` and `.prompt.prompt`, and the keys of
    `.dynamic_variables.dynamic_variable_placeholders`, less ElevenLabs' own `system__…`."""
    config = dig(agent, "conversation_config", "agent")
    texts = [dig(config, "first_message"), dig(config, "prompt", "prompt")]
    used = {m for text in texts if isinstance(text, str) for m in _VARIABLE.findall(text)}
    placeholders = dig(config, "dynamic_variables", "dynamic_variable_placeholders")
    if isinstance(placeholders, dict):
        used |= {str(k) for k in placeholders}
    return {v for v in used if not v.startswith(SYSTEM_PREFIX)}


def answered_variables(init_defaults: Sequence[tuple[str, str]]) -> set[str]:
    """What `/conversation-init` always answers: the service's own variables and INIT_DYNAMIC_VARIABLES."""
    return set(SERVICE_VARIABLES) | {k for k, _ in init_defaults}


def variables_finding(agent: dict[str, Any], init_defaults: Sequence[tuple[str, str]]) -> Finding:
    used, answered = variables_used(agent), answered_variables(init_defaults)
    missing = sorted(used - answered)
    if missing:
        return Finding("dynamic variables", FAILED,
                       f"the agent uses {', '.join(missing)}, which /conversation-init does not answer: ElevenLabs "
                       "refuses to start such calls",
                       f"add {', '.join(missing)} to INIT_DYNAMIC_VARIABLES (a JSON object of default values)")
    return Finding("dynamic variables", OK, f"all answered: {', '.join(sorted(used)) or 'the agent uses none'}")


# -- the deployment (--service-url) -------------------------------------------------------------

def deployed_settings(health: Any) -> dict[str, str]:
    """What a healthy `/healthz` answer says the deployment runs: `agent_update_mode` and `events`."""
    if dig(health, "status") != "ok":
        return {}
    found = {"agent_update_mode": dig(health, "agent_update_mode"), "events": dig(health, "events")}
    return {k: v for k, v in found.items() if isinstance(v, str) and v}


def health_finding(status: int | None, body: Any, reason: str = "", local_mode: str | None = None) -> Finding:
    """The deployment answers; where its AGENT_UPDATE_MODE differs from this machine's, the other lines
    already judged the deployment's, so the difference is only told."""
    name = "deployment: /healthz"
    fix = "check --service-url (gcloud run services describe precall-webhook --format='value(status.url)')"
    if status != 200 or dig(body, "status") != "ok":
        return Finding(name, FAILED, f"no healthy answer ({reason or f'HTTP {status}'})", fix)
    deployed = dig(body, "agent_update_mode")
    differs = (f"; this machine's AGENT_UPDATE_MODE={local_mode} differs, the checks above used the deployment's"
               if local_mode and deployed != local_mode else "")
    return Finding(name, OK, f"ok (AGENT_UPDATE_MODE={deployed}, events: {dig(body, 'events')}){differs}")


def init_answer_finding(status: int | None, body: Any, required: Collection[str], header: str, reason: str = "") -> Finding:
    """The documented answer (docs/api.md, `/conversation-init`): `type`, `dynamic_variables` (strings, every variable needed),
    `conversation_config_override`."""
    name = "deployment: /conversation-init"
    if status == 401:
        return Finding(name, FAILED, f"the deployment refused this INIT_WEBHOOK_SECRET in {header} (401)",
                       "use the deployment's INIT_WEBHOOK_SECRET / INIT_WEBHOOK_HEADER here (gcloud secrets versions "
                       "access latest --secret=precall-init-webhook-secret)")
    if status != 200:
        return Finding(name, FAILED, f"no answer ({reason or f'HTTP {status}'})", "check the service's logs (Cloud Run)")
    variables = dig(body, "dynamic_variables")
    shaped = (dig(body, "type") == ANSWER_TYPE and isinstance(variables, dict)
              and all(isinstance(v, str) for v in variables.values())
              and isinstance(dig(body, "conversation_config_override"), dict))
    if not shaped:
        return Finding(name, FAILED, "200, but not the documented answer shape", "deploy this version of the service")
    missing = sorted(set(required) - set(variables))
    if missing:
        return Finding(name, FAILED, f"200, but without {', '.join(missing)}: ElevenLabs would refuse the call",
                       f"add {', '.join(missing)} to the deployment's INIT_DYNAMIC_VARIABLES")
    return Finding(name, OK, f"200 with {', '.join(sorted(variables))}")


def init_auth_finding(status: int | None, reason: str = "") -> Finding:
    name = "deployment: /conversation-init auth"
    if status == 401:
        return Finding(name, OK, "refused without the header secret (401)")
    return Finding(name, FAILED, f"without the header secret: {reason or f'HTTP {status}'}, not 401",
                   "set INIT_WEBHOOK_SECRET on the deployment (deploy/setup.sh) so strangers cannot ask for clones")


def init_secret_missing_finding(mode: str) -> Finding:
    name = "deployment: /conversation-init"
    if mode == "patch":
        return Finding(name, OK, "not checked: AGENT_UPDATE_MODE=patch does not use it and INIT_WEBHOOK_SECRET is unset")
    return Finding(name, FAILED, "INIT_WEBHOOK_SECRET is not set here, and ElevenLabs sends only headers",
                   "set INIT_WEBHOOK_SECRET to the deployment's value (secret precall-init-webhook-secret)")


# -- the label probe (POST /v1/voices/add: elevenlabs/voices/ivc/raw_client.py,
#    types/add_voice_ivc_response_model.py; GET /v1/voices/{id}) ------------------------------------

def probe_labels_finding(sent: dict[str, str], stored: Any, recognised: bool, by_labels: bool) -> Finding:
    """Which labels ElevenLabs kept, and whether ownership (docs/events.md) still holds."""
    stored = stored if isinstance(stored, dict) else {}
    kept = [k for k, v in sent.items() if stored.get(k) == v]
    dropped = [k for k in sent if k not in kept]
    listing = f"kept: {', '.join(kept) or 'none'}; dropped: {', '.join(dropped) or 'none'}"
    if not recognised:
        return Finding("label probe", FAILED, f"{listing}; the service would not recognise its own clone, so cleanup "
                       "would never delete one", "do not deploy: ownership (docs/events.md, voiceclone/naming.py) no longer "
                       "matches what ElevenLabs stores")
    how = "ownership by labels" if by_labels else "ownership falls back to name and description"
    return Finding("label probe", OK, f"{listing}; {how}")


def probe_refused_finding(reason: str) -> Finding:
    return Finding("label probe", FAILED, f"ElevenLabs refused the probe clone: {reason}",
                   "fix what the cloning and key lines say, then run --probe-labels again")


def probe_unread_finding(reason: str) -> Finding:
    return Finding("label probe", UNKNOWN, f"could not read the probe voice back: {reason}",
                   "run doctor --probe-labels again")


def probe_verification_finding() -> Finding:
    return Finding("label probe: verification", WARNING,
                   "ElevenLabs held the probe voice for verification (requires_verification): the service refuses "
                   "such clones (422), so callers get the agent's own voice",
                   "check the account's voice verification in ElevenLabs → Voices; a caller matching a protected voice "
                   "is expected to be refused")


def probe_cleanup_finding(voice_id: str, error: str | None) -> Finding:
    if error is None:
        return Finding("label probe: cleanup", OK, f"probe voice {voice_id} deleted")
    return Finding("label probe: cleanup", FAILED, f"could not delete probe voice {voice_id}: {error}",
                   f"delete voice {voice_id} by hand (ElevenLabs → Voices, or DELETE /v1/voices/{voice_id})")


# -- the report ---------------------------------------------------------------------------------

def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.status == FAILED for f in findings) else 0


def summary(findings: Sequence[Finding]) -> str:
    counts = {s: sum(1 for f in findings if f.status == s) for s in SEVERITY}
    parts = [f"{counts[FAILED]} failed", f"{counts[WARNING]} warning{'s' if counts[WARNING] != 1 else ''}",
             f"{counts[UNKNOWN]} could not tell", f"{counts[OK]} ok"]
    verdict = "NOT READY" if counts[FAILED] else "ready"
    return f"{verdict}: {', '.join(parts)}"


def render_text(title: str, findings: Sequence[Finding]) -> str:
    """The checklist: one line per check, and under every line that is not ok the one thing to do."""
    width = max((len(f.name) for f in findings), default=0)
    lines = [title, ""]
    for finding in findings:
        lines.append(f"  {finding.status:<14}  {finding.name:<{width}}  {finding.detail}")
        if finding.status != OK and finding.fix:
            lines.append(f"  {'':<14}  {'':<{width}}  → {finding.fix}")
    lines += ["", summary(findings)]
    return "\n".join(lines)


def render_json(context: dict[str, Any], findings: Sequence[Finding]) -> str:
    return json.dumps({**context, "ok": exit_code(findings) == 0, "exit_code": exit_code(findings),
                       "summary": summary(findings),
                       "checks": [{"name": f.name, "status": f.status, "detail": f.detail,
                                   "fix": f.fix if f.status != OK else None} for f in findings]},
                      indent=2, ensure_ascii=False)
