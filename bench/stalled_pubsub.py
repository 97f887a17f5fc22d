"""What a hanging Pub/Sub costs a pre-call answer: answer times with the emulator running, then with it
stopped (SIGSTOP: connections open, nothing answers), and whether each call's `voice.created` landed.

    .venv/bin/python bench/stalled_pubsub.py [--calls 5]

Prints one line per phase (p50 / max answer time, events landed). Needs gcloud's Pub/Sub emulator.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from precall.signature import sign  # noqa: E402
from sandbox.elevenlabs_server import FakeElevenLabs  # noqa: E402
from sandbox.processes import FunctionServer, free_port  # noqa: E402
from sandbox.pubsub_emulator import PubSubEmulator  # noqa: E402

SECRET = "bench-secret"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    import os

    logs = Path(tempfile.mkdtemp(prefix="stalled-pubsub-"))
    fake = FakeElevenLabs(api_key="k", auto_create_agents=True).start()
    emulator = PubSubEmulator(free_port(), project="bench", log_dir=logs).start()
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic, subscription = publisher.topic_path("bench", "events"), subscriber.subscription_path("bench", "events-pull")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(request={"name": subscription, "topic": topic})
    server = FunctionServer("precall_webhook", {
        "ELEVENLABS_API_KEY": "k", "ELEVENLABS_BASE_URL": fake.url, "ELEVENLABS_WEBHOOK_SECRET": SECRET,
        "ELEVENLABS_AGENT_ID": "agent_bench", "VOICE_EVENTS_TOPIC": topic, "PUBSUB_EMULATOR_HOST": emulator.host,
    }, log_dir=logs).start()
    sample = (ROOT / "samples" / "sample.wav").read_bytes()
    try:
        for phase in ("running", "stalled"):
            if phase == "stalled":
                emulator.pause()
            times = []
            for n in range(args.calls):
                body = json.dumps({"conversation_id": f"conv_{phase}_{n}", "voice_sample": {
                    "data": __import__("base64").b64encode(sample).decode()}}).encode()
                started = time.monotonic()
                answer = requests.post(server.url + "/webhook", data=body, timeout=60, headers={
                    "Content-Type": "application/json", "ElevenLabs-Signature": sign(body, SECRET, int(time.time()))})
                times.append(time.monotonic() - started)
                assert answer.status_code == 200, answer.text
            emulator.resume()
            time.sleep(6)  # past the publisher's own 5 s timeout: whatever will land has landed
            pulled = subscriber.pull(request={"subscription": subscription, "max_messages": 100}, timeout=10)
            landed = sum(1 for m in pulled.received_messages if f'"conv_{phase}_' in m.message.data.decode())
            if pulled.received_messages:
                subscriber.acknowledge(request={"subscription": subscription,
                                                "ack_ids": [m.ack_id for m in pulled.received_messages]})
            print(f"pubsub {phase:8} answer p50 {statistics.median(times) * 1000:6.0f} ms  max {max(times) * 1000:6.0f} ms"
                  f"  events landed {landed}/{args.calls}", flush=True)
    finally:
        emulator.resume()
        server.stop()
        emulator.stop()
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
