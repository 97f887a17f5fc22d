"""Readiness findings shared by `python -m precall doctor` and the cleanup sweep, and the post-call webhook check (pure).

The post-call webhook is what deletes a clone right after its call. When ElevenLabs stops calling
it (none selected, pointed elsewhere, disabled after repeated failures, not subscribed to the
call-ending events) clones live until the TTL, so both the operator's `doctor` and the scheduled
sweep judge it with `assess_postcall_webhook`, from what ElevenLabs reports:

* `GET /v1/convai/settings` `webhooks.post_call_webhook_id` / `webhooks.events` (SDK 2.78
  elevenlabs/types/get_conv_ai_settings_response_model.py, types/conv_ai_webhooks.py; events:
  types/webhook_event_type.py), or the agent's own `platform_settings.workspace_overrides.webhooks`
  (types/agent_platform_settings_response_model.py, types/agent_workspace_overrides_output.py);
* `GET /v1/workspace/webhooks` `webhook_id`, `webhook_url`, `is_disabled`, `is_auto_disabled`,
  `most_recent_failure_error_code`, `most_recent_failure_timestamp` (types/workspace_webhook_response_model.py;
  auto-disabling: https://elevenlabs.io/docs/product-guides/administration/webhooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from .documents import dig

OK = "ok"
WARNING = "warning"
UNKNOWN = "could not tell"
FAILED = "failed"
# Worst last: a report is as bad as its worst line.
SEVERITY = (OK, UNKNOWN, WARNING, FAILED)
REQUIRED_EVENTS = ("transcript", "call_initiation_failure")
POSTCALL_PATH = "/post-call"
_UNREAD_FIX = "give the key what the key line says it lacks (convai_read, workspace_read), or try again later"
_SELECT_FIX = ("ElevenLabs → Agents → Settings → Post-call webhook: select the workspace webhook whose URL is "
               "https://SERVICE/post-call (create it first under Settings → Webhooks, HMAC)")


@dataclass(frozen=True)
class Finding:
    """One line of a readiness report; `fix` is the one thing to do when it is not ok."""

    name: str
    status: str
    detail: str
    fix: str | None = None


def worst(findings: list[Finding]) -> str:
    return max((f.status for f in findings), key=SEVERITY.index, default=OK)


def public_url(url: str) -> str:
    """A URL as safe to print: scheme, host and path only (no credentials, query or fragment)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def assess_postcall_webhook(convai_settings: dict[str, Any] | None, agent: dict[str, Any] | None,
                            webhooks: list[dict[str, Any]] | None, expected_url: str | None = None) -> list[Finding]:
    """Judge the post-call webhook. None for a document means it could not be read. With `expected_url`
    (doctor's `--service-url`) the webhook must call exactly `{expected_url}/post-call`; without it, any
    URL whose path ends in `/post-call`."""
    name = "post-call webhook"
    agent_hooks = dig(agent, "platform_settings", "workspace_overrides", "webhooks")
    source = agent_hooks if isinstance(dig(agent_hooks, "post_call_webhook_id"), str) else dig(convai_settings, "webhooks")
    webhook_id = dig(source, "post_call_webhook_id")
    if convai_settings is None and source is None:
        return [Finding(name, UNKNOWN, "could not read the ConvAI settings (GET /v1/convai/settings)", _UNREAD_FIX)]
    if not isinstance(webhook_id, str) or not webhook_id:
        return [Finding(name, FAILED, "no post-call webhook is selected: clones are deleted only when "
                        "VOICE_CLONE_TTL_SECONDS runs out", _SELECT_FIX)]
    if webhooks is None:
        return [Finding(name, UNKNOWN, f"webhook {webhook_id} is selected, but the workspace webhooks could not be "
                        "read (GET /v1/workspace/webhooks)", _UNREAD_FIX)]
    webhook = next((w for w in webhooks if w.get("webhook_id") == webhook_id), None)
    if webhook is None:
        return [Finding(name, FAILED, f"the selected webhook {webhook_id} is not among the workspace webhooks", _SELECT_FIX)]
    return [_url_finding(name, webhook, expected_url), _enabled_finding(webhook), _events_finding(dig(source, "events"))]


def _url_finding(name: str, webhook: dict[str, Any], expected_url: str | None) -> Finding:
    url = webhook.get("webhook_url")
    if not isinstance(url, str) or not url:
        return Finding(name, UNKNOWN, "the selected webhook has no webhook_url", _SELECT_FIX)
    label = f"{webhook.get('name') or webhook.get('webhook_id')} → {public_url(url)}"
    if expected_url is not None:
        wanted = expected_url.rstrip("/") + POSTCALL_PATH
        if url.rstrip("/") != wanted:
            return Finding(name, FAILED, f"{label}, not {public_url(wanted)}",
                           f"ElevenLabs → Settings → Webhooks: set the URL of this webhook to {public_url(wanted)}")
    elif not urlsplit(url).path.rstrip("/").endswith(POSTCALL_PATH):
        return Finding(name, FAILED, f"{label}: not this service's {POSTCALL_PATH}",
                       "ElevenLabs → Settings → Webhooks: point the selected webhook at https://SERVICE/post-call")
    return Finding(name, OK, label)


def _enabled_finding(webhook: dict[str, Any]) -> Finding:
    name = "post-call webhook: enabled"
    code, when = webhook.get("most_recent_failure_error_code"), webhook.get("most_recent_failure_timestamp")
    last = "no failure recorded"
    if code is not None or when is not None:
        moment = (datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
                  if isinstance(when, (int, float)) else "an unknown time")
        last = f"last failure: HTTP {code if code is not None else '?'} at {moment}"
    disabled, auto_disabled = webhook.get("is_disabled"), webhook.get("is_auto_disabled")
    if auto_disabled is True:
        return Finding(name, FAILED, f"ElevenLabs disabled it after repeated failures ({last})",
                       "make the URL answer 200 (doctor --service-url), then re-enable the webhook in ElevenLabs → "
                       "Settings → Webhooks")
    if disabled is True:
        return Finding(name, FAILED, f"disabled by a user ({last})", "ElevenLabs → Settings → Webhooks: enable it")
    if not isinstance(disabled, bool) or not isinstance(auto_disabled, bool):
        return Finding(name, UNKNOWN, f"ElevenLabs did not report is_disabled / is_auto_disabled ({last})",
                       "check the webhook in ElevenLabs → Settings → Webhooks")
    return Finding(name, OK, f"enabled; {last}")


def _events_finding(events: Any) -> Finding:
    name = "post-call webhook: events"
    fix = ("ElevenLabs → Agents → Settings → Post-call webhook events: transcript and call initiation failure, "
           "not audio")
    if not isinstance(events, list):
        return Finding(name, UNKNOWN, "ElevenLabs did not report the events sent to it", fix)
    missing = [e for e in REQUIRED_EVENTS if e not in events]
    listed = ", ".join(str(e) for e in events) or "none"
    if missing:
        return Finding(name, FAILED, f"{listed}: without {', '.join(missing)} the clones of such calls wait for the TTL", fix)
    if "audio" in events:
        return Finding(name, WARNING, f"{listed}: audio events carry the whole call and only cost bandwidth (docs/connecting-elevenlabs.md)", fix)
    return Finding(name, OK, listed)
