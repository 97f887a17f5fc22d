"""The whole pipeline on this machine, in one command (`make run`).

Starts, on loopback: the local ElevenLabs API in sandbox mode when ELEVENLABS_API_KEY is unset
(the real API otherwise), the Pub/Sub emulator with topic, dead-letter topic and push
subscription when gcloud is installed (else the in-process event queue), `cleanup_voices` and
`precall_webhook` under functions-framework. Prints the URLs and a CLI command to try.
Ctrl-C (or SIGTERM) stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.elevenlabs_server import FakeElevenLabs  # noqa: E402
from sandbox.processes import FunctionServer, free_port  # noqa: E402
from sandbox.pubsub_emulator import PubSubEmulator, create_topology, emulator_available  # noqa: E402

LOCAL_WEBHOOK_SECRET = "local-dev-webhook-secret"
LOCAL_INIT_SECRET = "local-dev-init-secret"
SANDBOX_API_KEY = "sandbox"
SANDBOX_AGENT_ID = "agent_local_sandbox"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8080)), help="precall_webhook port")
    parser.add_argument("--cleanup-port", type=int, default=8081, help="cleanup_voices port")
    parser.add_argument("--no-emulator", action="store_true", help="use the in-process event queue even if gcloud is here")
    args = parser.parse_args()

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    started: list = []
    try:
        env = _base_env(started)
        emulator_reason = "disabled by --no-emulator" if args.no_emulator else emulator_available()
        cleanup = FunctionServer("cleanup_voices", env, signature_type="cloudevent", port=args.cleanup_port)
        started.append(cleanup)
        cleanup.start(ready_path="/")
        if emulator_reason is None:
            emulator = PubSubEmulator(free_port(), project="local-project")
            started.append(emulator)
            emulator.start()
            os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
            topology = create_topology("local-project", f"voice-events-{uuid.uuid4().hex[:6]}", cleanup.url + "/")
            env.update(PUBSUB_EMULATOR_HOST=emulator.host, GOOGLE_CLOUD_PROJECT="local-project",
                       VOICE_EVENTS_TOPIC=topology.topic)
            events_line = f"Pub/Sub emulator at {emulator.host}, topic {topology.topic} pushing to cleanup_voices"
        else:
            events_line = f"in-process event queue (Pub/Sub emulator not used: {emulator_reason})"
        webhook = FunctionServer("precall_webhook", env, port=args.port)
        started.append(webhook)
        webhook.start()

        print(f"precall_webhook  {webhook.url}/webhook   {webhook.url}/conversation-init   {webhook.url}/post-call   "
              f"{webhook.url}/healthz")
        print(f"cleanup_voices   {cleanup.url}/")
        print(f"events           {events_line}")
        print(f"logs             {webhook.log_path}  {cleanup.log_path}")
        secret = LOCAL_WEBHOOK_SECRET if env["ELEVENLABS_WEBHOOK_SECRET"] == LOCAL_WEBHOOK_SECRET else "$ELEVENLABS_WEBHOOK_SECRET"
        init_secret = LOCAL_INIT_SECRET if env["INIT_WEBHOOK_SECRET"] == LOCAL_INIT_SECRET else "$INIT_WEBHOOK_SECRET"
        print(f"try              ELEVENLABS_WEBHOOK_SECRET={secret} .venv/bin/python -m precall send SAMPLE.wav "
              f"--name Ivan --url {webhook.url}")
        print(f"two-step         ... send SAMPLE.wav --name Ivan --call-sid CA123 --url {webhook.url}, then "
              f"INIT_WEBHOOK_SECRET={init_secret} .venv/bin/python -m precall init --call-sid CA123 --url {webhook.url}")
        print("READY (Ctrl-C stops everything)", flush=True)
        while not stopping.wait(0.5):
            for server in (webhook, cleanup):
                if server.process.poll() is not None:
                    print(f"{server.target} exited; see {server.log_path}", file=sys.stderr)
                    return 1
        return 0
    finally:
        for thing in reversed(started):
            thing.stop()
        print("stopped", flush=True)


def _base_env(started: list) -> dict[str, str]:
    env = {"ELEVENLABS_WEBHOOK_SECRET": os.environ.get("ELEVENLABS_WEBHOOK_SECRET") or LOCAL_WEBHOOK_SECRET,
           "INIT_WEBHOOK_SECRET": os.environ.get("INIT_WEBHOOK_SECRET") or LOCAL_INIT_SECRET,
           "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO")}
    if os.environ.get("ELEVENLABS_API_KEY"):
        print("live mode: using the real ElevenLabs API with your ELEVENLABS_API_KEY")
        return env
    fake = FakeElevenLabs(api_key=SANDBOX_API_KEY, auto_create_agents=True, record_file_bytes=False)
    started.append(fake)
    fake.start()
    print(f"sandbox mode: no ELEVENLABS_API_KEY, so the local ElevenLabs test server at {fake.url} plays ElevenLabs")
    env.update(ELEVENLABS_API_KEY=SANDBOX_API_KEY, ELEVENLABS_BASE_URL=fake.url,
               ELEVENLABS_AGENT_ID=os.environ.get("ELEVENLABS_AGENT_ID") or SANDBOX_AGENT_ID)
    return env


if __name__ == "__main__":
    sys.exit(main())
