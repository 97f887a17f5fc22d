"""Telephony benchmark: how long a caller waits on hold. Prints numbers, asserts nothing.

End to end over HTTP: the local Twilio places real calls (signed webhooks, the recording served at
its media URL, the call update received) to the real functions-framework server, against the
local ElevenLabs. The caller's wait is from the end of the recording (the recording callback is
sent at once) to the agent's TwiML reaching Twilio (the call update), read off the simulated call.

1. one call with realistic latencies (media fetch 150 ms, clone 1500 ms, register-call 300 ms, call
   update 200 ms) over their sum, the part no implementation can avoid (goal <= 1.05x);
2. the same at zero latency: milliseconds above zero (goal <= 150 ms);
3. 32 simultaneous calls on one instance with the realistic latencies: each call's wait over the
   single call's (goal <= 1.2x).

Run: `.venv/bin/python bench/bench_telephony.py [--calls 32] [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.elevenlabs_server import TWILIO_AUDIO_FORMAT, FakeElevenLabs  # noqa: E402
from sandbox.processes import FunctionServer  # noqa: E402
from sandbox.twilio_server import Caller, FakeTwilio, SimulatedCall  # noqa: E402

API_KEY, SECRET, AGENT = "bench-key", "bench-secret", "agent_bench"
PUBLIC = "https://precall.bench.example"
SAMPLE = (ROOT / "samples" / "sample.wav").read_bytes()
MEDIA, CLONE, REGISTER, UPDATE = 0.150, 1.500, 0.300, 0.200


def set_latency(fake: FakeElevenLabs, twilio: FakeTwilio, realistic: bool) -> float:
    """Set the stand-ins' latencies; returns their sum on a caller's path."""
    scale = 1.0 if realistic else 0.0
    fake.endpoint_latency = {("POST", "/v1/voices/add"): CLONE * scale,
                             ("POST", "/v1/convai/twilio/register-call"): REGISTER * scale}
    twilio.media_latency, twilio.update_latency = MEDIA * scale, UPDATE * scale
    return (MEDIA + CLONE + REGISTER + UPDATE) * scale


def wait_of(call: SimulatedCall) -> float:
    spoke, updated = call.first("spoke"), call.first("updated")
    if spoke is None or updated is None or "connected" not in call.kinds():
        raise RuntimeError(f"the call did not go as expected: {call.kinds()}")
    return updated.at - spoke.at


def place(twilio: FakeTwilio, server: FunctionServer, count: int) -> list[float]:
    calls: list[SimulatedCall] = []
    lock = threading.Lock()

    def one(name: str) -> None:
        call = twilio.place_call(Caller(caller_name=name, speech=[SAMPLE], talk_seconds=0.0), PUBLIC, server.url)
        with lock:
            calls.append(call)

    threads = [threading.Thread(target=one, args=(f"Caller{i}",)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for call in calls:
        if not call.done.wait(60):
            raise RuntimeError("a call did not end within 60 s")
    return [wait_of(call) for call in calls]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    fake = FakeElevenLabs(api_key=API_KEY, record_file_bytes=False).start()
    fake.voice_limit = 10_000
    fake.add_agent(AGENT, audio_format=TWILIO_AUDIO_FORMAT, allow_first_message=True, allow_voice=True)
    twilio = FakeTwilio(callback_delay=0.0).start()
    env = {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_WEBHOOK_SECRET": SECRET, "ELEVENLABS_BASE_URL": fake.url,
           "ELEVENLABS_AGENT_ID": AGENT, "TWILIO_ACCOUNT_SID": twilio.account_sid, "TWILIO_AUTH_TOKEN": twilio.auth_token,
           "TWILIO_API_BASE_URL": twilio.url, "PUBLIC_BASE_URL": PUBLIC, "TWILIO_HOLD_SECONDS": "25",
           "VOICE_CLONE_AUTO_DELETE": "true"}
    server = FunctionServer("precall_webhook", env).start()
    try:
        set_latency(fake, twilio, realistic=False)
        place(twilio, server, 2)  # warm: connections, caches, threads
        zero = [place(twilio, server, 1)[0] for _ in range(args.repeats)]
        floor = set_latency(fake, twilio, realistic=True)
        single = [place(twilio, server, 1)[0] for _ in range(args.repeats)]
        burst = place(twilio, server, args.calls)
    finally:
        server.stop()
        twilio.stop()
        fake.stop()
    single_median = statistics.median(single)
    print(f"caller's wait, end of recording -> agent TwiML at Twilio (median of {args.repeats})")
    print(f"  zero latency:      {statistics.median(zero) * 1000:7.1f} ms above zero   (goal <= 150 ms)  "
          f"[min {min(zero) * 1000:.1f}, max {max(zero) * 1000:.1f}]")
    print(f"  realistic latency: {single_median * 1000:7.1f} ms over {floor * 1000:.0f} ms unavoidable = "
          f"{single_median / floor:.3f}x   (goal <= 1.05x)")
    print(f"  {args.calls} simultaneous:   median {statistics.median(burst) * 1000:.1f} ms, worst "
          f"{max(burst) * 1000:.1f} ms = {max(burst) / single_median:.3f}x the single call   (goal <= 1.2x)")


if __name__ == "__main__":
    main()
