"""Developer CLI: send signed webhooks to a running service, exactly as ElevenLabs would.

  python -m precall send SAMPLE.wav --name Ivan [--dob 11.12.2007] [--call-sid CA..] [--caller-id +31..] [--multipart]
  python -m precall init --call-sid CA.. [--caller-id +31..]      (ElevenLabs' conversation-initiation webhook)
  python -m precall post-call CONVERSATION_ID [--call-sid CA..] [--type post_call_transcription]
  python -m precall doctor [--agent-id ID] [--service-url URL] [--twilio-number +31...] [--json]   (= python -m doctor)
  python -m precall dial SAMPLE.wav [--name Ivan] [--press 1] [--twilio-url URL]   (a simulated phone call, make run)
  python -m precall check-sample FILE [--json]   (the quality gate's measures and verdict, no service needed)

All take --url (default: PRECALL_URL, else http://127.0.0.1:8080). `send` and `post-call` sign with
ELEVENLABS_WEBHOOK_SECRET (the first one if several; `sm://` references are resolved) or --secret;
`init` sends INIT_WEBHOOK_SECRET (or --secret) in the INIT_WEBHOOK_HEADER header, as ElevenLabs does.
Next to a running `make run`, settings this shell leaves unset come from its state file
(.dev/stack.json, or PRECALL_STACK_FILE): no exports needed. The routes and fields: docs/api.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from voiceclone import dev_stack
from voiceclone.config import DEFAULT_INIT_WEBHOOK_HEADER, Settings
from voiceclone.secret_manager import SecretResolver

from doctor import cli as doctor
from telephony.dial import DEFAULT_TWILIO_URL, dial

from voiceclone.errors import ServiceError

from . import audio, quality
from .postcall import CALL_END_EVENT_TYPES
from .signature import SIGNATURE_HEADER, sign

DEFAULT_URL = "http://127.0.0.1:8080"
SAMPLE = "samples/sample.wav"
# What to do about each error code the service answers with (its JSON is printed as well).
HINTS = {
    "INVALID_SIGNATURE": "the secret differs from the service's: set the one it uses (ELEVENLABS_WEBHOOK_SECRET, "
                         "or INIT_WEBHOOK_SECRET and INIT_WEBHOOK_HEADER for init) or pass --secret",
    "SIGNATURE_EXPIRED": "this machine's clock is off from the service's: sync it (timedatectl, ntp)",
    "SAMPLE_TOO_LARGE": "the service's MAX_SAMPLE_BYTES is smaller than this sample: send a shorter recording",
    "SAMPLE_TOO_SHORT": "record more speech: at least the service's MIN_SAMPLE_SECONDS (3 s by default)",
    "UNSUPPORTED_AUDIO_FORMAT": "send WAV, MP3 or Ogg (Vorbis/Opus), e.g. ffmpeg -i in.m4a out.wav",
    "INVALID_AUDIO": "the file does not decode as audio: check it plays (ffplay FILE)",
    "SAMPLE_QUALITY_TOO_LOW": "see \"reasons\" and \"quality\"; `python -m precall check-sample FILE` shows the same "
                              "measures with their thresholds (docs/quality-gate.md)",
    "NOT_FOUND": "this service has no such route: is --url the precall_webhook service (make run's first URL)?",
}


class UsageError(Exception):
    """An ordinary mistake; the message says what to do. Printed as one line, never a traceback."""


def _secret(args: argparse.Namespace, variable: str = "ELEVENLABS_WEBHOOK_SECRET") -> str:
    raw = args.secret or os.environ.get(variable, "")
    if not raw:
        raise UsageError(f"no secret: set {variable} or pass --secret")
    try:
        resolved = SecretResolver(os.environ.get("GOOGLE_CLOUD_PROJECT")).resolve(raw.strip())
    except Exception as error:  # noqa: BLE001 - a bad reference, no credentials, no access: all one line
        raise UsageError(f"cannot read {variable} from Secret Manager ({type(error).__name__}): check the reference "
                         "and `gcloud auth application-default login`, or give the value itself") from None
    return resolved.split(",")[0].strip()


def _read_sample(name: str) -> bytes:
    """The sample's bytes, or a UsageError that names the problem before anything is sent."""
    path = Path(name)
    if path.is_dir():
        raise UsageError(f"{name} is a directory: give an audio file (WAV, MP3 or Ogg), e.g. {SAMPLE}")
    limit = _max_sample_bytes()
    try:
        size = path.stat().st_size
        if size > limit:  # checked before reading: the file may be huge
            raise UsageError(f"{name} is {size / 2**20:.1f} MiB; the service takes samples up to {limit / 2**20:.1f} MiB "
                             "(MAX_SAMPLE_BYTES): send a shorter recording (a clone needs 3 s to a minute of speech)")
        sample = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file; give a WAV, MP3 or Ogg recording, e.g. {SAMPLE}") from None
    except OSError as error:
        raise UsageError(f"cannot read {name}: {error.strerror}") from None
    if not sample:
        raise UsageError(f"{name} is empty: give a recording of a few seconds of speech")
    return sample


def _max_sample_bytes() -> int:
    """The service's limit as this shell sets it (MAX_SAMPLE_BYTES), else its default."""
    value = os.environ.get("MAX_SAMPLE_BYTES", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else Settings.max_sample_bytes


def _service_url(url: str) -> str:
    if not re.match(r"^https?://[^/\s]+", url):
        suggestion = f" (http://{url})" if "://" not in url else ""
        raise UsageError(f"--url {url} is not an http(s) URL: write it with http:// or https://{suggestion}")
    return url.rstrip("/")


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
    """This service's JSON answer (and for an error, one hint line on what to do). Anything else means
    --url names some other server: one line saying so, never its whole page."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or (not response.ok and "error_code" not in answer):
        kind = response.headers.get("Content-Type", "no content type").split(";")[0]
        raise UsageError(f"{response.url} answered {response.status_code} with {kind}, not this service's JSON: "
                         "is --url the precall_webhook service (make run prints it; cleanup_voices is the other one)?")
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    if not response.ok:
        code = answer.get("error_code")
        print(f"hint: {HINTS.get(code, 'see error_message above')}", file=sys.stderr)
    return 0 if response.ok else 1


def cmd_send(args: argparse.Namespace) -> int:
    sample = _read_sample(args.sample)
    conversation_id = args.conversation_id or (None if args.call_sid else f"conv_{uuid.uuid4().hex[:12]}")
    body, content_type = build_precall(sample, Path(args.sample).name, conversation_id, args.agent_id, args.name, args.dob,
                                       args.multipart, args.call_sid, args.caller_id)
    return _print(_post(_service_url(args.url) + "/webhook", body, content_type, _secret(args), args.timeout))


def cmd_init(args: argparse.Namespace) -> int:
    """What ElevenLabs sends when a Twilio or SIP call reaches the agent (docs/api.md, `/conversation-init`)."""
    body = json.dumps({"caller_id": args.caller_id or "", "agent_id": args.agent_id or "",
                       "called_number": args.called_number, "call_sid": args.call_sid}).encode()
    header = os.environ.get("INIT_WEBHOOK_HEADER", "").strip() or DEFAULT_INIT_WEBHOOK_HEADER
    secret = _secret(args, "INIT_WEBHOOK_SECRET").split(",")[0].strip()
    return _print(_post(_service_url(args.url) + "/conversation-init", body, "application/json", secret, args.timeout,
                        headers={header: secret}))


def cmd_post_call(args: argparse.Namespace) -> int:
    data: dict[str, Any] = {"conversation_id": args.conversation_id, "agent_id": args.agent_id, "status": "done"}
    if args.call_sid:
        data["metadata"] = {"phone_call": {"type": "twilio", "direction": "inbound", "call_sid": args.call_sid}}
        data["conversation_initiation_client_data"] = {"dynamic_variables": {"system__call_sid": args.call_sid}}
    body = json.dumps({"type": args.type, "event_timestamp": int(time.time()), "data": data}).encode()
    return _print(_post(_service_url(args.url) + "/post-call", body, "application/json", _secret(args), args.timeout))


def cmd_dial(args: argparse.Namespace) -> int:
    sample = Path(args.sample)
    if not sample.is_file():
        raise UsageError(f"{sample} is not a file")
    target = args.twilio_url.rstrip("/")
    try:
        return dial(target, sample, caller_name=args.name or None, digits=args.press or None, service_url=args.url,
                    talk_seconds=args.talk_seconds, timeout=args.timeout)
    except requests.ConnectionError:
        raise UsageError(f"could not reach the local Twilio at {target}: start make run and use the --twilio-url "
                         "it prints") from None
    except requests.HTTPError as error:
        raise UsageError(f"the local Twilio at {target} refused the call ({error.response.status_code}): "
                         "is --twilio-url make run's local Twilio?") from None


def _env_seconds(variable: str, default: float) -> float:
    raw = os.environ.get(variable, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise UsageError(f"{variable}={raw!r} is not a number of seconds") from None


def cmd_check_sample(args: argparse.Namespace) -> int:
    """What the service's quality gate measures in FILE, each measure beside its threshold, and the
    verdict: the same decode and the same code as the service. Exit 0 accepted, 1 refused."""
    sample = _read_sample(args.sample)
    min_speech = _env_seconds("MIN_SPEECH_SECONDS", 2.0) if args.min_speech_seconds is None else args.min_speech_seconds
    try:
        fmt = audio.sniff_format(sample)
        probe = audio.probe(sample, fmt, _env_seconds("MIN_SAMPLE_SECONDS", 3.0), keep_seconds=quality.FIRST_WINDOW_SECONDS)
    except ServiceError as error:
        print(f"{args.sample}: refused before the quality gate: {error.code} ({error.message})")
        return 1
    report = quality.assess(probe.samples, probe.sample_rate, min_speech,
                            lambda: (audio.continued(sample, fmt, probe, quality.MAX_ANALYSED_SECONDS), probe.sample_rate))
    if args.json:
        print(json.dumps({"file": args.sample, "format": fmt.name, "sample_rate": probe.sample_rate,
                          "verdict": "refused" if report.reasons else "accepted", "quality": report.as_dict()}, indent=2))
        return 1 if report.reasons else 0
    print(f"{args.sample}: {fmt.name}, {probe.sample_rate} Hz, {probe.channels} channel(s); "
          f"first {report.analysed_seconds:g} s measured")
    for label, value, limit, reason, failed in _check_rows(report, min_speech):
        print(f"  {label:17} {value:>12}   {limit:24} {reason if failed else 'ok'}")
    print(f"verdict: {'refused: ' + ', '.join(report.reasons) if report.reasons else 'accepted'}")
    return 1 if report.reasons else 0


def _check_rows(report: quality.QualityReport, min_speech: float) -> list[tuple[str, str, str, str, bool]]:
    """Label, value, threshold, the reason it gives, and whether this row fails."""
    def number(value: float | None, unit: str) -> str:
        return "-" if value is None else f"{value:g} {unit}"

    level, snr = report.speech_level_dbfs, report.snr_db
    return [
        ("speech", number(report.speech_seconds, "s"), f"at least {min_speech:g} s", "too_little_speech",
         report.speech_seconds < min_speech),
        ("keypad tones", str(report.keypad_tones), "none", "keypad_tones", report.keypad_tones > 0),
        ("clipped", number(report.clipped_percent, "%"), f"at most {quality.MAX_CLIPPED_PERCENT:g} %", "clipped",
         report.clipped_percent > quality.MAX_CLIPPED_PERCENT),
        ("speech level", number(level, "dBFS"), f"at least {quality.MIN_SPEECH_LEVEL_DBFS:g} dBFS", "too_quiet",
         level is not None and level < quality.MIN_SPEECH_LEVEL_DBFS),
        ("signal/noise", number(snr, "dB"), f"at least {quality.MIN_SNR_DB:g} dB", "too_noisy",
         snr is not None and snr < quality.MIN_SNR_DB),
        ("loud non-speech", number(report.loud_other_seconds, "s"), f"at most {quality.MAX_LOUD_OTHER_SECONDS:g} s",
         "too_noisy", report.loud_other_seconds > quality.MAX_LOUD_OTHER_SECONDS),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precall", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser, secret: str = "ELEVENLABS_WEBHOOK_SECRET") -> None:
        sub.add_argument("--url", default=os.environ.get("PRECALL_URL", DEFAULT_URL),
                         help=f"precall_webhook's base URL (default: PRECALL_URL, else {DEFAULT_URL})")
        sub.add_argument("--secret", help=f"the secret to send (default: {secret})")
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
    common(init, "INIT_WEBHOOK_SECRET, in the INIT_WEBHOOK_HEADER header")
    init.set_defaults(func=cmd_init)

    post_call = commands.add_parser("post-call", help="send a signed post-call webhook (the call ended)")
    post_call.add_argument("conversation_id", help="the conversation whose call ended (as given to send --conversation-id)")
    post_call.add_argument("--type", default="post_call_transcription", choices=CALL_END_EVENT_TYPES)
    post_call.add_argument("--call-sid", help="the call's CallSid, reported as ElevenLabs does (metadata.phone_call)")
    common(post_call)
    post_call.set_defaults(func=cmd_post_call)

    checkup = commands.add_parser("doctor", help="prove the ElevenLabs account, agent, Twilio number and deployment are ready",
                                  description=doctor.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    doctor.add_arguments(checkup)
    checkup.set_defaults(func=doctor.run)

    phone = commands.add_parser("dial", help="place a simulated phone call through the local Twilio (make run)")
    phone.add_argument("sample", help="WAV the caller speaks at the beep")
    phone.add_argument("--name", default="Ivan", help="the caller's name as Twilio's caller-name lookup gives it")
    phone.add_argument("--press", default="1", help="key pressed at the consent question ('' for none)")
    phone.add_argument("--twilio-url", default=os.environ.get("TWILIO_API_BASE_URL", DEFAULT_TWILIO_URL),
                       help=f"the local Twilio (default: TWILIO_API_BASE_URL or {DEFAULT_TWILIO_URL})")
    phone.add_argument("--url", default=os.environ.get("PRECALL_URL"), help="the service (default: the one make run started)")
    phone.add_argument("--talk-seconds", type=float, default=2.0, help="time with the agent before hanging up")
    phone.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the call to end")
    phone.set_defaults(func=cmd_dial)


    check = commands.add_parser("check-sample", help="measure a local audio file as the quality gate does (no service)",
                                description=cmd_check_sample.__doc__)
    check.add_argument("sample", help="audio file (WAV, MP3 or OGG)")
    check.add_argument("--min-speech-seconds", type=float, help="default: MIN_SPEECH_SECONDS, else 2")
    check.add_argument("--json", action="store_true", help="the measures as JSON")
    check.set_defaults(func=cmd_check_sample)

    args = parser.parse_args(argv)
    target = getattr(args, "url", None) or getattr(args, "service_url", None) or getattr(args, "twilio_url", None) or "the service"
    try:
        return args.func(args)
    except UsageError as error:
        print(f"python -m precall {args.command}: {error}", file=sys.stderr)
        return 2
    except requests.ConnectionError:
        print(f"python -m precall {args.command}: could not connect to {target}: is the service running (make run)?",
              file=sys.stderr)
        return 2
    except requests.Timeout:
        print(f"python -m precall {args.command}: {target} did not answer within {args.timeout:g} s: is it the service, "
              "and is it up? (raise --timeout for a slow link)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    dev_stack.adopt_for_command()  # settings of a running `make run` beside it, where the shell sets none
    sys.exit(main())
