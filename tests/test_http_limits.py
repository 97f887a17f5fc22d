"""Hostile traffic (docs/design.md) on the real server started with the plain functions-framework command: nothing a client sends before any
signature check costs more than a bounded amount (body size, stalls, request line, headers, framing)."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from sandbox.processes import FunctionServer, tree_pids, tree_rss_bytes
from serving import CLIENT_STALL_SECONDS
from tests.conftest import InBackground, in_parallel, json_body, log_events, signature_header, wait_until


@pytest.fixture
def server(real_server):
    return real_server(MAX_SAMPLE_BYTES="100000")


def connect(server: FunctionServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """One whole response (Content-Length or chunked), or what came before the server closed."""
    data = b""
    while True:
        head, _, body = data.partition(b"\r\n\r\n")
        if _:
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if (length is not None and len(body) >= length) or body.endswith(b"0\r\n\r\n"):
                return data
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


def accepted_connections(server: FunctionServer) -> int:
    """Established TCP connections to the server's port held by its processes (accepted, not queued)."""
    inodes = set()
    for pid in tree_pids(server.process.pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == server.port and fields[9] in inodes:
                count += 1
    return count


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0


def test_a_declared_200_mib_body_is_refused_413_without_being_read(server):
    before = tree_rss_bytes(server.process.pid)
    sock = connect(server)
    started = time.monotonic()
    sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 209715200\r\n\r\n" + b"{" * 1000)
    response = read_response(sock)
    elapsed = time.monotonic() - started
    sock.close()
    assert status_of(response) == 413 and b'"SAMPLE_TOO_LARGE"' in response, response[:300]
    assert b"(MAX_SAMPLE_BYTES=100000, base64-encoded, plus 64 KiB)" in response  # the setting to raise
    assert elapsed < 2, elapsed  # answered before the body, which never comes
    assert tree_rss_bytes(server.process.pid) - before < 20 * 2**20


def test_a_chunked_body_is_refused_once_it_passes_the_limit(server):
    sock = connect(server)
    sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"A" * 65536
    try:
        for _ in range(64):  # 4 MiB offered, far past the ~200 KB limit
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server stopped listening once it had seen enough
    response = read_response(sock)
    sock.close()
    assert status_of(response) == 413 and b"MAX_SAMPLE_BYTES=100000" in response, response[:300]


def test_stalled_clients_do_not_keep_healthz_waiting_and_are_cut_off(server):
    stalled = []
    for index in range(64):  # far more than the 8 threads a plain functions-framework gets on 2 CPUs
        sock = connect(server)
        if index % 2:
            sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Le")  # mid-headers
        else:
            sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"con")  # mid-body
        stalled.append(sock)
    # Every one taken in by the server (an accepted socket belongs to its process), none just queued.
    assert wait_until(lambda: accepted_connections(server) >= len(stalled), timeout=15), accepted_connections(server)
    started = time.monotonic()
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    assert time.monotonic() - started < 2
    # Each is answered 4xx or closed within two stall periods (the request, then gunicorn's graceful close).
    open_sockets = {sock: b"" for sock in stalled}
    end = time.monotonic() + 2 * CLIENT_STALL_SECONDS + 8
    while open_sockets and time.monotonic() < end:
        readable, _, _ = select.select(list(open_sockets), [], [], 1.0)
        for sock in readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                open_sockets[sock] += chunk
            else:
                response = open_sockets.pop(sock)
                assert response == b"" or 400 <= status_of(response) < 500, response[:200]
                sock.close()
    assert not open_sockets, f"{len(open_sockets)} stalled clients still connected"
    logs = server.logs()
    assert '"internal_error"' not in logs
    assert all(line.startswith("{") for line in logs.splitlines() if line.strip()), logs[-2000:]


def test_an_overlong_request_line_and_too_many_headers_are_refused(server):
    for request in (b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(300)) + b"\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n"):
        sock = connect(server)
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_response(sock)
        sock.close()
        assert 400 <= status_of(response) < 500, response[:200]


def test_malformed_framing_is_a_4xx(server):
    for request in (b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n",
                    b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                    b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n0123456789"):
        sock = connect(server)
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        response = read_response(sock)
        sock.close()
        assert 400 <= status_of(response) < 500, (request[:80], response[:300])


def test_a_body_shorter_than_declared_is_a_4xx_not_a_500(server):
    sock = connect(server)
    sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"a\": 1")
    sock.shutdown(socket.SHUT_WR)  # the client gives up half way
    response = read_response(sock)
    sock.close()
    assert status_of(response) == 0 or 400 <= status_of(response) < 500, response[:300]  # 0: the server may just close
    if status_of(response):  # answered by the service: its line about it is through the output pipe
        assert wait_until(lambda: log_events(server.logs(), "webhook_error"), timeout=10)
    assert not log_events(server.logs(), "internal_error")


def test_many_calls_are_in_flight_at_once_on_the_plain_command(real_server, fake, audio_files):
    """64 calls held unanswered at the stand-in ElevenLabs at the same moment, while /healthz still
    answers: a server that took them one at a time (or 8 at a time, plain functions-framework's
    threads on 2 CPUs) could never have them all there at once. Proven by overlap, not by timing."""
    server = real_server(REQUEST_DEADLINE_SECONDS="120")  # held calls must not run out of time on a slow machine
    calls, release, statuses = 64, threading.Event(), []
    fake.inject("POST", "/v1/voices/add", until=release, times=calls)
    fake.voice_limit += calls  # room in the account for every clone
    sample = audio_files["mp3_cbr"].read_bytes()

    def call(index: int) -> None:
        body = json_body(sample, conversation_id=f"conv_many{index:03d}")
        statuses.append(requests.post(server.url + "/webhook", data=body, timeout=60, headers={
            "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body)}).status_code)

    callers = InBackground(lambda: in_parallel(call, range(calls)))
    try:
        assert wait_until(lambda: len(fake.requests_to("POST", "/v1/voices/add")) == calls, timeout=60), \
            f"only {len(fake.requests_to('POST', '/v1/voices/add'))} of {calls} calls in flight together"
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    finally:
        release.set()
        callers.join()
    assert statuses == [200] * calls
