"""Operator CLI: `python -m cleanup sweep [--apply]` lists (and with --apply deletes) every clone
of this service older than VOICE_CLONE_TTL_SECONDS. Reads the same environment as the service."""

from __future__ import annotations

import argparse
import json
import os
import sys

from voiceclone.config import ConfigError, load_settings
from voiceclone.deadline import Deadline
from voiceclone.elevenlabs_client import ElevenLabsClient
from voiceclone.logs import configure_logging

from .handler import CleanupHandler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cleanup", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("sweep", help="find clones older than the TTL (dry run unless --apply)")
    sweep.add_argument("--apply", action="store_true", help="delete them (default: only list them)")
    sweep.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for the whole sweep")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(os.environ, require_webhook_secret=False)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, sys.stderr)  # stdout carries the report
    handler = CleanupHandler.for_settings(settings, ElevenLabsClient(settings.elevenlabs_base_url, settings.elevenlabs_api_key))
    found = handler.sweep(Deadline(args.timeout), apply=args.apply)
    print(json.dumps({"applied": args.apply, "ttl_seconds": settings.voice_clone_ttl_seconds,
                      "expired_clones": found}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
