"""`post_call_audio` of any size (docs/api.md): a 50 MB chunked event through the real server is
acknowledged `200` with the signature computed as it streams and the server's memory flat."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator

import requests

from sandbox.processes import tree_rss_bytes
from tests.conftest import AGENT_ID, SECRET, log_events, wait_until

AUDIO_BYTES = 50 * 1024 * 1024
CHUNK = 256 * 1024


def audio_event_chunks(conversation_id: str) -> Iterator[bytes]:
    """The event as ElevenLabs streams it: JSON around one huge base64 string, made on the fly."""
    yield (b'{"type": "post_call_audio", "event_timestamp": 1, "data": {"agent_id": "' + AGENT_ID.encode()
           + b'", "conversation_id": "' + conversation_id.encode() + b'", "full_audio": "')
    block = b"QUJD" * (CHUNK // 4)
    for _ in range(AUDIO_BYTES // CHUNK):
        yield block
    yield b'"}}'


def signature_for(conversation_id: str, timestamp: int, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode(), hashlib.sha256)
    for chunk in audio_event_chunks(conversation_id):
        mac.update(chunk)
    return f"t={timestamp},v0={mac.hexdigest()}"


def test_a_50_mb_chunked_post_call_audio_is_acknowledged_with_flat_memory(real_server, fake):
    server = real_server()
    requests.get(server.url + "/healthz", timeout=5)
    baseline = tree_rss_bytes(server.process.pid)
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_bytes(server.process.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    timestamp = int(time.time())
    try:
        response = requests.post(server.url + "/post-call", data=audio_event_chunks("conv_audio_50mb"), timeout=120,
                                 headers={"Content-Type": "application/json",
                                          "ElevenLabs-Signature": signature_for("conv_audio_50mb", timestamp)})
    finally:
        done.set()
        sampler.join()
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted", "conversation_id": "conv_audio_50mb"}
    growth = peak[0] - baseline
    print(f"50 MB post_call_audio: RSS {baseline / 2**20:.0f} MiB -> peak {peak[0] / 2**20:.0f} MiB")
    assert growth < 16 * 2**20, f"server memory grew by {growth / 2**20:.1f} MiB for a 50 MB event"
    assert wait_until(lambda: log_events(server.logs(), "post_call_received"), timeout=10)


def test_a_50_mb_post_call_audio_with_a_wrong_signature_is_refused(real_server, fake):
    server = real_server()
    response = requests.post(server.url + "/post-call", data=audio_event_chunks("conv_forged"), timeout=120,
                             headers={"Content-Type": "application/json",
                                      "ElevenLabs-Signature": signature_for("conv_forged", int(time.time()), "wrong")})
    assert response.status_code == 401 and response.json()["error_code"] == "INVALID_SIGNATURE"
    # The refusal's line is through the output pipe; nothing was accepted before it.
    assert wait_until(lambda: log_events(server.logs(), "webhook_error", error_code="INVALID_SIGNATURE"), timeout=10)
    assert not log_events(server.logs(), "post_call_received")
