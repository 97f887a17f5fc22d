"""Developer CLI: send signed webhooks to a running service, exactly as ElevenLabs would.

  python -m precall send SAMPLE.wav --name Ivan [--dob 11.12.2007] [--call-sid CA..] [--caller-id +31..] [--multipart]
  python -m precall init --call-sid CA.. [--caller-id +31..]      (ElevenLabs' conversation-initiation webhook)
  python -m precall post-call CONVERSATION_ID [--call-sid CA..] [--type post_call_transcription]

All take --url (default http://127.0.0.1:8080). `send` and `post-call` sign with
ELEVENLABS_WEBHOOK_SECRET (the first one if several; `sm://` references are resolved) or --secret;
`init` sends INIT_WEBHOOK_SECRET (or --secret) in the INIT_WEBHOOK_HEADER header, as ElevenLabs does.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from voiceclone.config import DEFAULT_INIT_WEBHOOK_HEADER
from voiceclone.secret_manager import SecretResolver

from .postcall import CALL_END_EVENT_TYPES
from .signature import SIGNATURE_HEADER, sign

DEFAULT_URL = "http://127.0.0.1:8080"


def _secret(args: argparse.Namespace, variable: str = "ELEVENLABS_WEBHOOK_SECRET") -> str:
    raw = args.secret or os.environ.get(variable, "")
    if not raw:
        raise SystemExit(f"no secret: set {variable} or pass --secret")
    resolved = SecretResolver(os.environ.get("GOOGLE_CLOUD_PROJECT")).resolve(raw.strip())
    return resolved.split(",")[0].strip()


def build_precall(sample: bytes, filename: str, conversation_id: str | None, agent_id: str | None, name: str | None,
                  dob: str | None, multipart: bool, call_sid: str | None = None,
                  caller_id: str | None = None) -> tuple[bytes, str]:
    """The request body the sending side posts to `/webhook`, and its Content-Type."""
    metadata = {k: v for k, v in (("name", name), ("date_of_birth", dob)) if v}
    linked = {k: v for k, v in (("conversation_id", conversation_id), ("agent_id", agent_id), ("call_sid", call_sid),
                                ("caller_id", caller_id)) if v}
    if multipart:
        fields: dict[str, str] = {**linked, "caller_metadata": json.dumps(metadata)}
        prepared = requests.Request("POST", "http://localhost/webhook", data=fields,
                                    files={"voice_sample": (filename, sample, "application/octet-stream")}).prepare()
        return prepared.body, prepared.headers["Content-Type"]
    document: dict[str, Any] = {**linked, "voice_sample": {"data": base64.b64encode(sample).decode(), "filename": filename},
                                "caller_metadata": metadata}
    return json.dumps(document).encode(), "application/json"


def _post(url: str, body: bytes, content_type: str, secret: str, timeout: float,
          headers: dict[str, str] | None = None) -> requests.Response:
    headers = headers or {SIGNATURE_HEADER: sign(body, secret, int(time.time()))}
    headers["Content-Type"] = content_type
    done = threading.Event()
    if sys.stderr.isatty():
        threading.Thread(target=_progress, args=(done, url), daemon=True).start()
    try:
        return requests.post(url, data=body, headers=headers, timeout=timeout)
    finally:
        done.set()


def _progress(done: threading.Event, url: str) -> None:
    started = time.monotonic()
    while not done.wait(0.2):
        print(f"\r  waiting for {url} ... {time.monotonic() - started:4.1f} s", end="", file=sys.stderr, flush=True)
    print("\r" + " " * 72 + "\r", end="", file=sys.stderr, flush=True)


def _print(response: requests.Response) -> int:
    try:
        print(json.dumps(response.json(), indent=2, ensure_ascii=False))
    except ValueError:
        print(response.text)
    return 0 if response.ok else 1


def cmd_send(args: argparse.Namespace) -> int:
    path = Path(args.sample)
    conversation_id = args.conversation_id or (None if args.call_sid else f"conv_{uuid.uuid4().hex[:12]}")
    body, content_type = build_precall(path.read_bytes(), path.name, conversation_id, args.agent_id, args.name, args.dob,
                                       args.multipart, args.call_sid, args.caller_id)
    return _print(_post(args.url.rstrip("/") + "/webhook", body, content_type, _secret(args), args.timeout))


def cmd_init(args: argparse.Namespace) -> int:
    """What ElevenLabs sends when a Twilio or SIP call reaches the agent (SPEC 4.6)."""
    body = json.dumps({"caller_id": args.caller_id or "", "agent_id": args.agent_id or "",
                       "called_number": args.called_number, "call_sid": args.call_sid}).encode()
    header = os.environ.get("INIT_WEBHOOK_HEADER", "").strip() or DEFAULT_INIT_WEBHOOK_HEADER
    secret = _secret(args, "INIT_WEBHOOK_SECRET").split(",")[0].strip()
    return _print(_post(args.url.rstrip("/") + "/conversation-init", body, "application/json", secret, args.timeout,
                        headers={header: secret}))


def cmd_post_call(args: argparse.Namespace) -> int:
    data: dict[str, Any] = {"conversation_id": args.conversation_id, "agent_id": args.agent_id, "status": "done"}
    if args.call_sid:
        data["metadata"] = {"phone_call": {"type": "twilio", "direction": "inbound", "call_sid": args.call_sid}}
        data["conversation_initiation_client_data"] = {"dynamic_variables": {"system__call_sid": args.call_sid}}
    body = json.dumps({"type": args.type, "event_timestamp": int(time.time()), "data": data}).encode()
    return _print(_post(args.url.rstrip("/") + "/post-call", body, "application/json", _secret(args), args.timeout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precall", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--url", default=os.environ.get("PRECALL_URL", DEFAULT_URL), help=f"service base URL (default {DEFAULT_URL})")
        sub.add_argument("--secret", help="webhook secret (default: ELEVENLABS_WEBHOOK_SECRET)")
        sub.add_argument("--agent-id", default=os.environ.get("ELEVENLABS_AGENT_ID"), help="agent id (default: ELEVENLABS_AGENT_ID)")
        sub.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the answer")

    send = commands.add_parser("send", help="send a signed pre-call webhook with a voice sample")
    send.add_argument("sample", help="audio file (WAV, MP3 or OGG)")
    send.add_argument("--name", help="caller name")
    send.add_argument("--dob", help="caller date of birth")
    send.add_argument("--conversation-id", help="default: a new conv_... id")
    send.add_argument("--multipart", action="store_true", help="multipart/form-data instead of JSON")
    send.add_argument("--call-sid", help="the call's Twilio CallSid / SIP X-CALL-ID (two-step flow)")
    send.add_argument("--caller-id", help="the caller's phone number (kept only as a keyed hash)")
    common(send)
    send.set_defaults(func=cmd_send)

    init = commands.add_parser("init", help="send ElevenLabs' conversation-initiation webhook for a call")
    init.add_argument("--call-sid", required=True, help="the call's CallSid (as given to `send --call-sid`)")
    init.add_argument("--caller-id", help="the caller's phone number")
    init.add_argument("--called-number", default="+31201234567", help="the number that was called")
    common(init)
    init.set_defaults(func=cmd_init)

    post_call = commands.add_parser("post-call", help="send a signed post-call webhook (the call ended)")
    post_call.add_argument("conversation_id")
    post_call.add_argument("--type", default="post_call_transcription", choices=CALL_END_EVENT_TYPES)
    post_call.add_argument("--call-sid", help="the call's CallSid, reported as ElevenLabs does (metadata.phone_call)")
    common(post_call)
    post_call.set_defaults(func=cmd_post_call)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except requests.ConnectionError:
        print(f"could not connect to {args.url}: is the service running (make run)?", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
