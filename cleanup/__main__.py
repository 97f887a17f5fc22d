"""Operator CLI for this service's clones in the ElevenLabs account. Reads the same environment as
the service (ELEVENLABS_API_KEY, ELEVENLABS_BASE_URL, VOICE_CLONE_TTL_SECONDS; `sm://` references work);
next to a running `make run`, what this shell leaves unset comes from its state file (.dev/stack.json).

  python -m cleanup status [--json]   each clone with its age, its call's state and whether it is
                                      overdue (older than the TTL), and the account's voice slots
  python -m cleanup sweep [--apply]   the overdue clones; --apply deletes them
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any

from voiceclone.clones import CloneInventory
from voiceclone import dev_stack
from voiceclone.config import ConfigError, Settings, load_settings
from voiceclone.deadline import Deadline, DeadlineExceeded
from voiceclone.elevenlabs_client import ElevenLabsClient, ElevenLabsError
from voiceclone.logs import configure_logging

from .handler import CleanupHandler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cleanup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="this service's clones, their calls, overdue ones, voice slots")
    status.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    status.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for all ElevenLabs requests")
    sweep = commands.add_parser("sweep", help="find clones older than the TTL (dry run unless --apply)")
    sweep.add_argument("--apply", action="store_true", help="delete them (default: only list them)")
    sweep.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for the whole sweep")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(os.environ, require_webhook_secret=False)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    # stdout carries the report; the service's log lines go to stderr (status: only problems).
    configure_logging(settings.log_level if args.command == "sweep" else _at_least_warning(settings.log_level), sys.stderr)
    client = ElevenLabsClient(settings.elevenlabs_base_url, settings.elevenlabs_api_key)
    deadline = Deadline(args.timeout)
    try:
        if args.command == "status":
            report = status_report(settings, client, deadline)
            print(json.dumps(report, indent=2) if args.json else render(report))
        else:
            found = CleanupHandler.for_settings(settings, client).sweep(deadline, apply=args.apply)
            print(json.dumps({"applied": args.apply, "ttl_seconds": settings.voice_clone_ttl_seconds,
                              "expired_clones": found}, indent=2))
    except ElevenLabsError as error:
        print(f"python -m cleanup {args.command}: {_explain(error, settings)}", file=sys.stderr)
        return 1
    except DeadlineExceeded:
        print(f"python -m cleanup {args.command}: ElevenLabs at {settings.elevenlabs_base_url} did not answer within "
              f"{args.timeout:g} s; try again or raise --timeout", file=sys.stderr)
        return 1
    return 0


def status_report(settings: Settings, client: ElevenLabsClient, deadline: Deadline) -> dict[str, Any]:
    """What `status` shows, as data: the account's slots and each clone of this service."""
    now = datetime.now(timezone.utc)
    inventory = CloneInventory(client, settings.voice_clone_ttl_seconds, lambda: now)
    clones = sorted(inventory.all(deadline), key=lambda c: c.created_at or now)
    rows = []
    for clone in clones:
        age = clone.age_seconds(now)
        call = client.get_conversation_status(clone.conversation_id, deadline) if clone.conversation_id else None
        rows.append({"voice_id": clone.voice_id, "voice_name": clone.name, "conversation_id": clone.conversation_id,
                     "created_at": clone.created_at.isoformat() if clone.created_at else None,
                     "age_seconds": None if age is None else round(age), "call_status": call or "unknown",
                     "overdue": inventory.is_expired(clone)})
    report: dict[str, Any] = {"elevenlabs_base_url": settings.elevenlabs_base_url,
                              "ttl_seconds": settings.voice_clone_ttl_seconds, "clones": rows}
    try:
        subscription = client.get_subscription(deadline)
        report.update(voice_slots_used=subscription.get("voice_slots_used"), voice_limit=subscription.get("voice_limit"))
    except ElevenLabsError as error:  # a key without `user_read` can still list and delete voices
        report.update(voice_slots_used=None, voice_limit=None, voice_slots_error=error.message)
    return report


def render(report: dict[str, Any]) -> str:
    """The report as a person reads it: a summary line, then one row per clone, oldest first."""
    used, limit = report["voice_slots_used"], report["voice_limit"]
    slots = (f"{used} / {limit} used" if used is not None and limit else
             f"unknown ({report.get('voice_slots_error', 'not reported')})")
    clones = report["clones"]
    overdue = sum(1 for c in clones if c["overdue"])
    lines = [f"ElevenLabs {report['elevenlabs_base_url']}: voice slots {slots}",
             f"this service's clones: {len(clones)}, overdue (older than {report['ttl_seconds']} s): {overdue}"]
    if clones:
        lines.append(f"{'VOICE ID':<22} {'AGE':>9}  {'CALL':<12} {'OVERDUE':<8} CONVERSATION")
        lines += [f"{c['voice_id']:<22} {_duration(c['age_seconds']):>9}  {c['call_status']:<12} "
                  f"{'yes' if c['overdue'] else 'no':<8} {c['conversation_id'] or '-'}" for c in clones]
    if overdue:
        lines.append("overdue clones are deleted by the next sweep; now: python -m cleanup sweep --apply")
    if any(c["call_status"] == "unknown" for c in clones):
        lines.append("CALL unknown: ElevenLabs has no conversation with that id (not started yet, or a call sid)")
    return "\n".join(lines)


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    hours, rest = divmod(max(seconds, 0), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _explain(error: ElevenLabsError, settings: Settings) -> str:
    """One line that says what went wrong and what to do."""
    if error.status is None:
        return f"could not reach ElevenLabs at {settings.elevenlabs_base_url}: {error.message} (check ELEVENLABS_BASE_URL)"
    if error.status == 401:
        return f"ElevenLabs refused the API key (401 {error.code}): check ELEVENLABS_API_KEY"
    return f"ElevenLabs answered {error.status} {error.code or ''}: {error.message}".replace("  ", " ")


def _at_least_warning(level: str) -> str:
    return level if logging.getLevelName(level) >= logging.WARNING else "WARNING"


if __name__ == "__main__":
    dev_stack.adopt_for_command()  # settings of a running `make run` beside it, where the shell sets none
    sys.exit(main())
