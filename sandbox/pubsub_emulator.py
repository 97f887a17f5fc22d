"""The real Pub/Sub emulator (`gcloud beta emulators pubsub start`) and the topology on it.

Used by the lifecycle tests and by the local stack (`scripts/dev.py`). `create_topology`
mirrors what `deploy/setup.sh` creates in Google Cloud: topic, dead-letter topic, push
subscription with ack deadline, retry policy and max delivery attempts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests


def emulator_available() -> str | None:
    """None if the emulator can run here, else the reason it cannot."""
    if shutil.which("gcloud") is None:
        return "gcloud is not installed (needs google-cloud-cli and google-cloud-cli-pubsub-emulator)"
    if shutil.which("java") is None:
        return "java is not installed (the Pub/Sub emulator needs a JRE)"
    return None


class PubSubEmulator:
    """The emulator on `port`. Its output goes to `log_dir/pubsub-emulator.log` (`make run` keeps it with
    the run's other logs), else to `pubsub-emulator-PORT.log` under TMPDIR."""

    def __init__(self, port: int, project: str = "test-project", data_dir: Path | None = None,
                 log_dir: Path | None = None) -> None:
        self.host = f"127.0.0.1:{port}"
        self.project = project
        self._data_dir = data_dir
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = (Path(log_dir) / "pubsub-emulator.log" if log_dir is not None
                         else Path(os.environ.get("TMPDIR", "/tmp")) / f"pubsub-emulator-{port}.log")

    def start(self, timeout: float = 90.0) -> PubSubEmulator:
        command = ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={self.host}", f"--project={self.project}"]
        if self._data_dir is not None:
            command.append(f"--data-dir={self._data_dir}")
        self._process = subprocess.Popen(command, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
                                         start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._process.poll() is not None:
                raise RuntimeError(f"Pub/Sub emulator exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if requests.get(f"http://{self.host}/", timeout=1).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError("Pub/Sub emulator did not start")

    def pause(self) -> None:
        """Stall it (SIGSTOP to gcloud and its Java server): connections are accepted by the kernel and
        then nothing answers, as a Pub/Sub that hangs rather than refuses."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        if self._process is not None:
            os.killpg(self._process.pid, sig)

    def stop(self) -> None:
        """Stop gcloud and the Java server it started (same process group)."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            os.killpg(self._process.pid, signal.SIGCONT)  # a paused one acts on SIGTERM only once running
            self._process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._process = None


@dataclass(frozen=True)
class Topology:
    topic: str
    subscription: str
    dead_letter_topic: str
    dead_letter_subscription: str


def create_topology(project: str, name: str, push_endpoint: str, max_delivery_attempts: int = 5,
                    min_backoff_seconds: int = 10, max_backoff_seconds: int = 600, ack_deadline_seconds: int = 60) -> Topology:
    """Topic + dead-letter topic (with a pull subscription to inspect it) + push subscription.
    Uses PUBSUB_EMULATOR_HOST from the environment."""
    from google.cloud import pubsub_v1
    from google.protobuf import duration_pb2

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topology = Topology(
        topic=publisher.topic_path(project, name),
        subscription=subscriber.subscription_path(project, f"{name}-cleanup-push"),
        dead_letter_topic=publisher.topic_path(project, f"{name}-dead-letter"),
        dead_letter_subscription=subscriber.subscription_path(project, f"{name}-dead-letter-pull"),
    )
    publisher.create_topic(name=topology.topic)
    publisher.create_topic(name=topology.dead_letter_topic)
    subscriber.create_subscription(request={"name": topology.dead_letter_subscription, "topic": topology.dead_letter_topic})
    subscriber.create_subscription(request={
        "name": topology.subscription,
        "topic": topology.topic,
        "push_config": {"push_endpoint": push_endpoint},
        "ack_deadline_seconds": ack_deadline_seconds,
        "dead_letter_policy": {"dead_letter_topic": topology.dead_letter_topic,
                               "max_delivery_attempts": max_delivery_attempts},
        "retry_policy": {"minimum_backoff": duration_pb2.Duration(seconds=min_backoff_seconds),
                         "maximum_backoff": duration_pb2.Duration(seconds=max_backoff_seconds)},
    })
    subscriber.close()
    return topology
