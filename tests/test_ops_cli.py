"""`python -m cleanup status` and `sweep` as an operator runs them against an account: what is there,
how old, whether its call is live, what is overdue, the voice slots; mistakes as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from sandbox.processes import ROOT
from tests.conftest import API_KEY, seed_clone


@pytest.fixture
def account(fake):
    """An account with an overdue clone (its call unknown to ElevenLabs), a fresh one whose call is live,
    and a voice of the user's own; the CLI configured as the service is."""
    now = datetime.now(timezone.utc)
    old = seed_clone(fake, "conv_ops_old", now - timedelta(hours=3))
    live = seed_clone(fake, "conv_ops_live", now - timedelta(minutes=4))
    fake.set_conversation("conv_ops_live", "in-progress")
    fake.add_voice("My narrator", labels={"accent": "british"})
    fake.voice_limit = 10
    return {"old": old, "live": live, "env": {"PATH": os.environ["PATH"], "ELEVENLABS_API_KEY": API_KEY,
                                              "ELEVENLABS_BASE_URL": fake.url}}


def cleanup_cli(account: dict, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cleanup", *args], cwd=ROOT, env={**account["env"], **env},
                          capture_output=True, text=True, timeout=60)


def test_status_lists_this_services_clones_with_age_call_state_overdue_and_the_slots(account):
    result = cleanup_cli(account, "status")
    assert result.returncode == 0 and result.stderr == ""
    out = result.stdout.splitlines()
    assert out[0].endswith("voice slots 3 / 10 used")
    assert out[1] == "this service's clones: 2, overdue (older than 7200 s): 1"
    rows = {line.split()[0]: line.split()[1:] for line in out[3:5]}
    assert rows[account["old"]][0].startswith("3:00:0") and rows[account["old"]][1:] == ["unknown", "yes", "conv_ops_old"]
    assert rows[account["live"]][1:] == ["in-progress", "no", "conv_ops_live"]
    assert "python -m cleanup sweep --apply" in out[5]  # what to do about the overdue one


def test_status_as_json_for_scripts_and_the_ttl_from_the_environment(account):
    result = cleanup_cli(account, "status", "--json", VOICE_CLONE_TTL_SECONDS="120")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert (report["voice_slots_used"], report["voice_limit"], report["ttl_seconds"]) == (3, 10, 120)
    by_id = {c["voice_id"]: c for c in report["clones"]}
    assert set(by_id) == {account["old"], account["live"]}  # the user's own voice is not ours
    assert by_id[account["live"]]["overdue"] is True and by_id[account["live"]]["call_status"] == "in-progress"
    assert 230 <= by_id[account["live"]]["age_seconds"] <= 300


def test_status_still_lists_clones_when_the_key_may_not_read_the_subscription(account, fake):
    fake.missing_permissions = {"user_read"}
    result = cleanup_cli(account, "status")
    out = result.stdout
    assert result.returncode == 0 and "voice slots unknown (" in out and account["old"] in out


def test_sweep_lists_then_deletes_only_the_overdue_clones(account, fake):
    dry = cleanup_cli(account, "sweep")
    assert [c["voice_id"] for c in json.loads(dry.stdout)["expired_clones"]] == [account["old"]]
    assert account["old"] in fake.voices  # a dry run
    assert cleanup_cli(account, "sweep", "--apply").returncode == 0
    assert account["old"] not in fake.voices and account["live"] in fake.voices


@pytest.mark.parametrize("command", ["status", "sweep"])
def test_a_wrong_key_or_address_is_one_line_that_names_the_setting(account, command):
    refused = cleanup_cli(account, command, ELEVENLABS_API_KEY="sk_wrong")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines()[-1] == (
        f"python -m cleanup {command}: ElevenLabs refused the API key (401 invalid_api_key): check ELEVENLABS_API_KEY")
    unreachable = cleanup_cli(account, command, "--timeout", "5", ELEVENLABS_BASE_URL="http://127.0.0.1:9")
    assert unreachable.returncode == 1
    line = unreachable.stderr.strip().splitlines()[-1]
    assert line.startswith(f"python -m cleanup {command}: could not reach ElevenLabs at http://127.0.0.1:9")
    assert line.endswith("(check ELEVENLABS_BASE_URL)")
