"""How the real server (the plain functions-framework command) receives bodies, keeps memory and says it is ready:
a body of declared length goes straight from the socket into the service's buffer, whatever pieces
it arrives in, and the connection still serves what follows it; large buffers are handed back once
the instance idles; `/healthz` answers once the worker's Pub/Sub connection is up."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest
import requests

from sandbox.processes import free_port, tree_rss_bytes
from sandbox.pubsub_emulator import create_topology
from serving.memory import HeapTrimmer
from tests.audio_fixtures import id3v2_tag
from tests.conftest import InBackground, in_parallel, json_body, signature_header, wait_until
from voiceclone.pools import start_threads


@pytest.fixture
def server(real_server):
    return real_server(VOICE_CLONE_AUTO_DELETE="false")


def settled_rss(pid: int) -> int:
    """The process tree's resident memory once it has stopped shrinking (the heap trimmer has run)."""
    readings = [tree_rss_bytes(pid)]

    def steady() -> bool:
        readings.append(tree_rss_bytes(pid))
        return abs(readings[-1] - readings[-2]) < 2 * 2**20
    assert wait_until(steady, timeout=20, interval=0.5), readings
    return readings[-1]


def signed_request(body: bytes, path: str = "/webhook") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"ElevenLabs-Signature: {signature_header(body)}\r\n\r\n").encode() + body


def responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """`count` responses (status, body) read off one connection, each framed by its Content-Length."""
    data, found = b"", []
    while len(found) < count:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if separator:
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
            if len(rest) >= length:
                found.append((int(head.split(b" ", 2)[1]), rest[:length]))
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(found)} responses"
        data += chunk
    return found


def test_a_body_arriving_in_pieces_is_received_whole_and_the_pipelined_request_behind_it_is_answered(server, audio_files):
    body = json_body(audio_files["mp3_cbr"].read_bytes(), conversation_id="conv_pieces01")
    request = signed_request(body)
    head_and_start, rest = request[:len(request) - len(body) + 700], request[len(request) - len(body) + 700:]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head_and_start)  # gunicorn reads these body bytes ahead, with the headers
        pieces = [rest[start:start + 20_000] for start in range(0, len(rest), 20_000)]
        pieces[-1] += b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"  # pipelined behind the body
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.005)
        (status, answer), (health_status, _) = responses(sock, 2)
    assert status == 200, answer[:300]
    assert json.loads(answer)["voice_id"]
    assert health_status == 200


def test_a_chunked_body_is_still_read_by_gunicorn(server, audio_files):
    body = json_body(audio_files["mp3_cbr"].read_bytes(), conversation_id="conv_chunked01")
    response = requests.post(f"{server.url}/webhook", data=iter([body[:1000], body[1000:]]), timeout=30, headers={
        "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body)})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["voice_id"]


def test_large_buffers_are_handed_back_once_the_instance_idles(server, audio_files):
    # 8 MB of ID3 tag (like embedded cover art) before a real MP3: an 11 MB body, an 8 MB sample.
    sample = id3v2_tag(8_000_000) + audio_files["mp3_cbr"].read_bytes()
    bodies = [json_body(sample, conversation_id=f"conv_burst{index:02d}") for index in range(7)]

    def post(body: bytes) -> None:
        response = requests.post(f"{server.url}/webhook", data=body, timeout=60, headers={
            "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body)})
        assert response.status_code == 200, response.text[:300]

    post(bodies.pop())
    idle = settled_rss(server.process.pid)  # the first call's buffers are handed back too
    in_parallel(post, bodies)
    # Six calls held about 6 x 27 MB; once the instance idles, it is back near its idle size.
    assert wait_until(lambda: tree_rss_bytes(server.process.pid) - idle < 40 * 2**20, timeout=30)


@pytest.mark.timeout(180)  # 17 calls of 11 MB, then the wait for the memory
def test_a_large_burst_is_given_back_even_while_calls_keep_the_instance_busy(real_server, fake, audio_files):
    server = real_server(VOICE_CLONE_AUTO_DELETE="false", REQUEST_DEADLINE_SECONDS="120")  # the held call outlives the test
    sample = id3v2_tag(8_000_000) + audio_files["mp3_cbr"].read_bytes()
    bodies = [json_body(sample, conversation_id=f"conv_busy{index:02d}") for index in range(17)]
    held = json_body(audio_files["mp3_cbr"].read_bytes(), conversation_id="conv_held01")

    def post(body: bytes) -> None:
        response = requests.post(f"{server.url}/webhook", data=body, timeout=120, headers={
            "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body)})
        assert response.status_code == 200, response.text[:300]

    post(bodies.pop())
    idle = settled_rss(server.process.pid)
    adds_before = len(fake.requests_to("POST", "/v1/voices/add"))
    release = threading.Event()
    fake.inject("POST", "/v1/voices/add", until=release)  # the next clone waits for us: a call stays in flight
    holder = InBackground(lambda: post(held))
    try:
        assert wait_until(lambda: len(fake.requests_to("POST", "/v1/voices/add")) > adds_before, timeout=30)
        in_parallel(post, bodies)
        # 16 calls held up to 16 x 27 MB, far more than the heap keeps free for reuse (64 MiB): that is
        # given back although the held call means the instance is never idle.
        peak = tree_rss_bytes(server.process.pid) - idle
        back = wait_until(lambda: tree_rss_bytes(server.process.pid) - idle < 100 * 2**20, timeout=30)
        assert back, f"{peak >> 20} MiB over idle after the burst, {(tree_rss_bytes(server.process.pid) - idle) >> 20} MiB now"
        assert holder.is_alive()  # still busy while the memory came back
    finally:
        release.set()
        holder.join()


def established_connections(pid: int, remote_port: int) -> int:
    """Established TCP connections of `pid` and its children to local port `remote_port`."""
    pids = [pid, *(int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split())]
    inodes = set()
    for process in pids:
        for fd in os.listdir(f"/proc/{process}/fd"):
            try:
                target = os.readlink(f"/proc/{process}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    lines = [line for table in ("/proc/net/tcp", "/proc/net/tcp6") for line in open(table).read().splitlines()[1:]]
    for line in lines:  # the emulator may be reached over IPv4 or IPv6
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if inode in inodes and state == "01" and int(remote.split(":")[1], 16) == remote_port:
            count += 1
    return count


@pytest.mark.emulator
def test_healthz_answers_once_the_worker_is_connected_to_pubsub(real_server, pubsub_emulator):
    topology = create_topology(pubsub_emulator.project, "ready-check", "http://127.0.0.1:9/")
    server = real_server(PUBSUB_EMULATOR_HOST=pubsub_emulator.host, GOOGLE_CLOUD_PROJECT=pubsub_emulator.project,
                         VOICE_EVENTS_TOPIC=topology.topic)  # returns at /healthz 200
    assert established_connections(server.process.pid, int(pubsub_emulator.host.rsplit(":", 1)[1])) >= 1


def test_healthz_still_answers_when_pubsub_cannot_be_reached(real_server):
    server = real_server(PUBSUB_EMULATOR_HOST=f"127.0.0.1:{free_port()}", GOOGLE_CLOUD_PROJECT="p",
                         VOICE_EVENTS_TOPIC="projects/p/topics/t")
    response = requests.get(f"{server.url}/healthz", timeout=10)
    assert response.status_code == 200 and response.json()["events"] == "pubsub"


def test_a_pool_holds_its_threads_before_the_first_burst():
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=40)
    start_threads(pool, 64)  # more than the pool may hold: capped at its maximum
    assert wait_until(lambda: len(pool._threads) == 40, timeout=10, interval=0.01)
    assert pool.submit(lambda: "still serves").result(timeout=5) == "still serves"
    pool.shutdown()


def test_the_worker_starts_its_request_and_side_threads_right_after_start_up(server):
    worker = int(open(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read().split()[0])
    # 256 gunicorn request threads (THREADS' default) and 256 pre-call side threads, before any call.
    assert wait_until(lambda: len(os.listdir(f"/proc/{worker}/task")) >= 512, timeout=10)


class TestHeapTrimmer:
    """Negative checks wait for the trimmer's own loop to have looked several times (it asks how much
    lies free on each round), never for a fixed time."""

    @staticmethod
    def trimmer(idle_seconds: float = 0.05, free: int = 0) -> tuple[HeapTrimmer, list[float], list[float]]:
        trims: list[float] = []
        checks: list[float] = []

        def free_bytes() -> int:
            checks.append(time.monotonic())
            return free
        return HeapTrimmer(lambda: trims.append(time.monotonic()), free_bytes, idle_seconds, keep_free_bytes=100), trims, checks

    def test_trims_once_after_requests_then_quiet(self):
        trimmer, trims, checks = self.trimmer()
        for _ in range(3):
            trimmer.started()
            trimmer.finished()
        assert wait_until(lambda: trims, timeout=5, interval=0.01)
        rounds = len(checks)
        assert wait_until(lambda: len(checks) >= rounds + 3, timeout=5, interval=0.01)
        assert len(trims) == 1

    def test_never_trims_while_a_request_is_in_flight(self):
        trimmer, trims, checks = self.trimmer()
        trimmer.started()
        trimmer.started()
        trimmer.finished()
        assert wait_until(lambda: len(checks) >= 3, timeout=5, interval=0.01)
        assert trims == []
        finished_at = time.monotonic()
        trimmer.finished()
        assert wait_until(lambda: trims, timeout=5, interval=0.01)
        assert trims[0] - finished_at >= 0.05

    def test_trims_again_after_the_next_idle_spell(self):
        trimmer, trims, _ = self.trimmer()
        trimmer.started()
        trimmer.finished()
        assert wait_until(lambda: len(trims) == 1, timeout=5, interval=0.01)
        trimmer.started()
        trimmer.finished()
        assert wait_until(lambda: len(trims) == 2, timeout=5, interval=0.01)

    def test_trims_while_busy_once_too_much_lies_free(self):
        trimmer, trims, _ = self.trimmer(free=101)
        trimmer.started()  # never finishes: the instance is never idle
        assert wait_until(lambda: len(trims) >= 2, timeout=5, interval=0.01)

    def test_keeps_free_memory_within_the_bound_while_busy(self):
        trimmer, trims, checks = self.trimmer(free=100)
        trimmer.started()
        assert wait_until(lambda: len(checks) >= 3, timeout=5, interval=0.01)
        assert trims == []

    def test_the_wsgi_wrapper_counts_a_request_that_raises(self):
        trimmer, trims, _ = self.trimmer()

        def failing_app(environ, start_response):
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            trimmer.serving(failing_app)({}, lambda *args: None)
        assert wait_until(lambda: trims, timeout=5, interval=0.01)
