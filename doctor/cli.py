"""`python -m doctor` (also `python -m precall doctor`, `make doctor`): prove a real ElevenLabs account, agent,
Twilio number and deployment are ready before the first call.

  python -m doctor [--agent-id ID] [--service-url URL] [--twilio-number +31...] [--probe-labels]
                   [--slot-margin N] [--json]

Reads the service's own configuration from this machine's environment (env vars, `sm://` references:
`load_settings`; next to `make run`, its stack) and checks,
against ELEVENLABS_BASE_URL: the key, cloning (plan, voice slots, additions), this service's clones,
the agent (overrides, initiation webhook), its dynamic variables, the post-call webhook, the Pub/Sub
topic (with VOICE_EVENTS_TOPIC), the deployment end to end (with --service-url), with TWILIO_ACCOUNT_SID
the telephony front (Twilio credentials, the number's voice URL and status callback against
PUBLIC_BASE_URL or --service-url, the agent's ulaw_8000 audio and overrides) and, opt-in, what
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
import sys
from collections.abc import Mapping

from voiceclone import dev_stack
from voiceclone.config import ConfigError, Settings, load_settings
from voiceclone.logs import configure_logging
from voiceclone.naming import ID_PATTERN
from voiceclone.readiness import public_url

from . import checks
from .checkup import Doctor, Options

_PHONE_NUMBER = re.compile(r"\+[1-9][0-9]{6,14}")


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
    parser.add_argument("--twilio-number", help="with TWILIO_ACCOUNT_SID: the Twilio number (E.164, e.g. +3120…) whose "
                        "voice URL and status callback to check (default: the account's one number, or those that "
                        "already point here)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for the ElevenLabs reads")
    parser.add_argument("--json", action="store_true", help="print only a JSON document on stdout")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")


def run(args: argparse.Namespace) -> int:
    """Run the checklist and print it (`python -m doctor`, and `python -m precall doctor` dispatches here)."""
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
    number = re.sub(r"[\s().-]", "", args.twilio_number) if args.twilio_number else None
    if number is not None and not _PHONE_NUMBER.fullmatch(number):
        raise ConfigError("--twilio-number", "must be an E.164 number: + and the country code, e.g. +31201234567")
    if number is not None and not settings.telephony_enabled:
        raise ConfigError("--twilio-number", "needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (the telephony front's account)")
    return settings, Options(agent_id, args.service_url.rstrip("/") if args.service_url else None, args.probe_labels,
                             args.slot_margin, args.timeout, number)


def _beside_make_run() -> bool:
    """Whether this command took its settings from a running `make run` (voiceclone/dev_stack.py)."""
    return dev_stack.read(dev_stack.state_path(os.environ)) is not None and "PRECALL_URL" in os.environ


def _usage_error(args: argparse.Namespace, message: str) -> int:
    print(message, file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": False, "exit_code": 2, "error": message, "checks": []}, indent=2))
    return 2
