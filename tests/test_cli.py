"""`python -m precall send/post-call`: what it sends is what ElevenLabs would send."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from elevenlabs.errors import BadRequestError
from elevenlabs.webhooks_custom import WebhooksClient

from precall.signature import verify
from sandbox.processes import ROOT, send_json
from tests.conftest import SECRET


class _Capture(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def log_message(self, *args) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, dict(self.headers), body))
        send_json(self, 200, {"status": "success"})


@pytest.fixture
def capture():
    _Capture.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "ELEVENLABS_WEBHOOK_SECRET": f"{SECRET},older-secret"}
    return subprocess.run([sys.executable, "-m", "precall", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_cli_json_webhook_is_accepted_by_the_official_sdk_and_by_the_service(capture, audio_files):
    result = run_cli("send", str(audio_files["mp3_cbr"]), "--name", "Ivan", "--dob", "11.12.2007",
                     "--conversation-id", "conv_cli1", "--agent-id", "agent_x", "--url", capture)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "success"}
    [(path, headers, body)] = _Capture.seen
    assert path == "/webhook" and headers["Content-Type"] == "application/json"
    event = WebhooksClient(client_wrapper=None).construct_event(body.decode(), headers["ElevenLabs-Signature"], SECRET)
    assert event["conversation_id"] == "conv_cli1" and event["caller_metadata"] == {"name": "Ivan", "date_of_birth": "11.12.2007"}
    assert verify(body, headers["ElevenLabs-Signature"], (SECRET,), time.time(), 1800)
    with pytest.raises(BadRequestError):  # signed with the first secret only
        WebhooksClient(client_wrapper=None).construct_event(body.decode(), headers["ElevenLabs-Signature"], "older-secret")


def test_cli_multipart_webhook_and_post_call_are_signed_over_the_raw_body(capture, audio_files):
    assert run_cli("send", str(audio_files["wav_pcm16"]), "--multipart", "--url", capture).returncode == 0
    assert run_cli("post-call", "conv_cli2", "--type", "call_initiation_failure", "--url", capture).returncode == 0
    (path1, headers1, body1), (path2, headers2, body2) = _Capture.seen
    assert path1 == "/webhook" and headers1["Content-Type"].startswith("multipart/form-data; boundary=")
    assert audio_files["wav_pcm16"].read_bytes() in body1
    assert verify(body1, headers1["ElevenLabs-Signature"], (SECRET,), time.time(), 1800)
    assert path2 == "/post-call"
    assert json.loads(body2)["type"] == "call_initiation_failure" and json.loads(body2)["data"]["conversation_id"] == "conv_cli2"
    WebhooksClient(client_wrapper=None).construct_event(body2.decode(), headers2["ElevenLabs-Signature"], SECRET)


def test_cli_help_and_unreachable_service():
    for args in (["--help"], ["send", "--help"], ["post-call", "--help"]):
        assert run_cli(*args).returncode == 0
    assert "the secret to send (default: INIT_WEBHOOK_SECRET" in " ".join(run_cli("init", "--help").stdout.split())
    assert "the conversation whose call ended" in run_cli("post-call", "--help").stdout
    doctor_help = run_cli("doctor", "--help").stdout
    assert "--agent-id" in doctor_help and "--agent " not in doctor_help  # one name; the old one still works, unlisted
    down = run_cli("post-call", "conv_x", "--url", "http://127.0.0.1:9")
    assert down.returncode == 2 and "is the service running" in down.stderr


def test_cli_init_sends_what_elevenlabs_sends_with_the_header_secret(capture):
    env_secret = {"INIT_WEBHOOK_SECRET": "init-new,init-old", "INIT_WEBHOOK_HEADER": "X-Init-Auth"}
    result = subprocess.run([sys.executable, "-m", "precall", "init", "--call-sid", "CA42", "--caller-id", "+31612345678",
                             "--agent-id", "agent_x", "--url", capture], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={"PATH": os.environ["PATH"], **env_secret})
    assert result.returncode == 0, result.stderr
    [(path, headers, body)] = _Capture.seen
    assert path == "/conversation-init" and headers["X-Init-Auth"] == "init-new"
    assert json.loads(body) == {"caller_id": "+31612345678", "agent_id": "agent_x", "called_number": "+31201234567",
                                "call_sid": "CA42"}
    assert "ElevenLabs-Signature" not in headers  # ElevenLabs signs no initiation webhook


def test_cli_send_with_a_call_sid_and_post_call_that_names_only_the_call_sid(capture, audio_files):
    assert run_cli("send", str(audio_files["wav_pcm16"]), "--call-sid", "CA77", "--caller-id", "+3161", "--url", capture).returncode == 0
    assert run_cli("post-call", "conv_el_9", "--call-sid", "CA77", "--url", capture).returncode == 0
    (_, _, sample), (_, _, ended) = _Capture.seen
    document = json.loads(sample)
    assert document["call_sid"] == "CA77" and document["caller_id"] == "+3161" and "conversation_id" not in document
    assert json.loads(ended)["data"]["metadata"]["phone_call"]["call_sid"] == "CA77"


class _WrongService(BaseHTTPRequestHandler):
    """Some other server at --url: a big HTML page that echoes what it got, as a 400."""

    def log_message(self, *args) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        page = b"<!doctype html><title>400 Bad Request</title><p>" + body * 3 + b"</p>"
        self.send_response(400)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)


class _Slow(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        return

    def do_POST(self) -> None:
        time.sleep(3)


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def mistakes(tmp_path, audio_files):
    (tmp_path / "empty.wav").write_bytes(b"")
    with open(tmp_path / "huge.wav", "wb") as huge:  # 11.5 MB: over the 10 MiB default
        huge.truncate(11_500_000)
    wrong, wrong_url = serve(_WrongService)
    slow, slow_url = serve(_Slow)
    sample = str(audio_files["wav_pcm16"])
    yield {
        "missing file": (["send", str(tmp_path / "nope.wav")], "nope.wav: no such file"),
        "a directory": (["send", str(tmp_path)], "is a directory: give an audio file"),
        "an empty file": (["send", str(tmp_path / "empty.wav")], "is empty"),
        "a file over the size limit": (["send", str(tmp_path / "huge.wav")],
                                       "is 11.0 MiB; the service takes samples up to 10.0 MiB (MAX_SAMPLE_BYTES)"),
        "a URL without http://": (["post-call", "conv_x", "--url", "127.0.0.1:8080"],
                                  "is not an http(s) URL: write it with http:// or https:// (http://127.0.0.1:8080)"),
        "another service at the URL": (["send", sample, "--url", wrong_url],
                                       "answered 400 with text/html, not this service's JSON: is --url the precall_webhook"),
        "a service that never answers": (["post-call", "conv_x", "--url", slow_url, "--timeout", "0.5"],
                                         "did not answer within 0.5 s"),
        "no secret": (["post-call", "conv_x", "--secret", ""], "no secret: set ELEVENLABS_WEBHOOK_SECRET or pass --secret"),
        "a malformed secret reference": (["post-call", "conv_x", "--secret", "sm://a/b"],
                                         "cannot read ELEVENLABS_WEBHOOK_SECRET from Secret Manager"),
    }
    wrong.shutdown()
    slow.shutdown()


MISTAKES = ["missing file", "a directory", "an empty file", "a file over the size limit", "a URL without http://",
            "another service at the URL", "a service that never answers", "no secret", "a malformed secret reference"]


@pytest.mark.parametrize("mistake", MISTAKES)
def test_cli_answers_an_ordinary_mistake_with_one_line_that_says_what_to_do(mistake, mistakes):
    args, expected = mistakes[mistake]
    env = {"PATH": os.environ["PATH"]} if mistake == "no secret" else None
    result = subprocess.run([sys.executable, "-m", "precall", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=env or {"PATH": os.environ["PATH"], "ELEVENLABS_WEBHOOK_SECRET": SECRET})
    assert result.returncode == 2
    assert result.stdout == ""  # nothing dumped: no page, no traceback
    [line] = result.stderr.splitlines()
    assert line.startswith(f"python -m precall {args[0]}: ") and expected in line, line


def test_cli_prints_the_services_error_answer_and_a_hint_on_what_to_do():
    with ThreadingHTTPServer(("127.0.0.1", 0), _Refusing) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        result = run_cli("post-call", "conv_x", "--url", f"http://127.0.0.1:{server.server_address[1]}")
        server.shutdown()
    assert result.returncode == 1
    assert json.loads(result.stdout)["error_code"] == "INVALID_SIGNATURE"
    assert result.stderr.strip() == ("hint: the secret differs from the service's: set the one it uses (ELEVENLABS_WEBHOOK_SECRET, "
                                     "or INIT_WEBHOOK_SECRET and INIT_WEBHOOK_HEADER for init) or pass --secret")


class _Refusing(BaseHTTPRequestHandler):
    """The service with another secret: 401 INVALID_SIGNATURE in its JSON error shape."""

    def log_message(self, *args) -> None:
        return

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        send_json(self, 401, {"status": "error", "error_code": "INVALID_SIGNATURE",
                              "error_message": "Signature does not match", "conversation_id": None})


def test_check_sample_prints_each_measure_beside_its_threshold_and_exits_by_the_verdict(audio_files):
    accepted = run_cli("check-sample", "samples/sample.wav")
    assert accepted.returncode == 0 and "verdict: accepted" in accepted.stdout, accepted.stdout + accepted.stderr
    assert "speech" in accepted.stdout and "at least 2 s" in accepted.stdout
    refused = run_cli("check-sample", str(audio_files["hold_music"]), "--json")
    assert refused.returncode == 1, refused.stderr
    answer = json.loads(refused.stdout)
    assert answer["verdict"] == "refused" and answer["quality"]["reasons"] == ["too_little_speech"]
    not_audio = run_cli("check-sample", "README.md")
    assert not_audio.returncode == 1 and "UNSUPPORTED_AUDIO_FORMAT" in not_audio.stdout
    missing = run_cli("check-sample", "no-such-file.wav")
    assert missing.returncode == 2 and "no such file" in missing.stderr
