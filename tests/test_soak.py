"""The soak, short and seeded (`make soak` runs 500 calls): 30 calls (one-step, two-step and phone calls
through the local Twilio) through the real services on both event paths while ElevenLabs and Twilio fail at
random and every service is killed with SIGKILL and restarted; afterwards no clone of the service is left
and every check of `bench/soak.py` holds."""

from __future__ import annotations

import os

import pytest

from bench.soak import SoakConfig, run_soak
from sandbox.pubsub_emulator import emulator_available

SEED = int(os.environ.get("SOAK_SEED", "7"))


@pytest.fixture
def event_paths(request) -> tuple[tuple[str, ...], object]:
    """Both paths where the Pub/Sub emulator runs (the suite's own emulator), else the local queue only."""
    if emulator_available() is None or os.environ.get("REQUIRE_PUBSUB_EMULATOR") == "1":
        return ("pubsub", "local"), request.getfixturevalue("pubsub_emulator")
    return ("local",), None


def test_thirty_calls_under_faults_and_kills_leave_no_clone_and_no_caller_gets_anothers(event_paths, tmp_path):
    paths, emulator = event_paths
    figures = run_soak(SoakConfig(calls=30, seed=SEED, waves=3, wave_gap=3.0, live_seconds=(0.3, 2.0), fault_rate=0.08,
                                  drain_seconds=60, sweep_seconds=60, paths=paths, log_dir=tmp_path / "soak"),
                       emulator)
    assert figures["failures"] == [], f"replay: SOAK_SEED={SEED}; {figures}"
    assert figures["clones"]["made"] > 0 and figures["clones"]["left"] == 0
    assert sum(figures["restarts"].values()) == 2 * len(paths)  # each service of each path was killed once
    assert sum(figures["faults"].values()) > 0
    assert figures["telephony"]["outcomes"].get("clone", 0) > 0  # phone callers heard the agent in their own voice
