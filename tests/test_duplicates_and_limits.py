"""One clone per conversation, and room made when the account is full."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import (
    AGENT_ID,
    BOTH_MODES,
    InBackground,
    in_parallel,
    json_body,
    log_events,
    post_signed,
    seed_clone,
    wait_until,
)
from voiceclone.clones import Clone

pytestmark = pytest.mark.parametrize("fake_mode", BOTH_MODES)


def test_redelivered_webhook_returns_the_same_clone(client, fake, audio_files):
    body = json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_dup")
    first = post_signed(client, "/webhook", body).get_json()
    second = post_signed(client, "/webhook", body).get_json()
    assert first["voice_id"] == second["voice_id"] and first["voice_name"] == second["voice_name"]
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 1


def test_redelivery_to_another_instance_answers_the_first_clone_and_discards_its_own(make_client, fake, audio_files):
    body = json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_other")
    first = post_signed(make_client(), "/webhook", body).get_json()
    # A fresh instance: empty memory. Its look-up runs beside its own clone (not before it, to keep the
    # first-seen call fast), finds the first clone, and the second one is deleted at once.
    second = post_signed(make_client(), "/webhook", body).get_json()
    assert second["voice_id"] == first["voice_id"]
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 2
    assert [v["voice_id"] for v in fake.cloned_voices() if v["name"].endswith("_other")] == [first["voice_id"]]
    [delete] = fake.requests_to("DELETE", r"/v1/voices/.*")
    assert delete.path != f"/v1/voices/{first['voice_id']}"


def test_concurrent_duplicates_create_one_clone(client, fake, audio_files):
    fake.latency = 0.3
    body = json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_race")
    results: list[dict] = []
    lock = threading.Lock()

    def call() -> None:
        answer = post_signed(client, "/webhook", body).get_json()
        with lock:
            results.append(answer)

    in_parallel(lambda _: call(), range(5))
    assert len({r["voice_id"] for r in results}) == 1 and all(r["status"] == "success" for r in results)
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 1


def test_voice_limit_frees_the_oldest_finished_clone_and_retries_once(client, fake, audio_files):
    old = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)
    user_voice = fake.add_voice("My narrator", created_at_unix=int(old.timestamp()) - 10_000)
    live = seed_clone(fake, "conv_live", old - timedelta(seconds=5))
    finished = seed_clone(fake, "conv_done", old)
    fake.voice_limit = fake.custom_voice_count()  # full
    fake.set_conversation("conv_live", "in-progress")
    fake.set_conversation("conv_done", "done")
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_new"))
    assert response.status_code == 200, response.get_json()
    assert finished not in fake.voices
    assert user_voice in fake.voices and live in fake.voices
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 2
    assert [r.path for r in fake.requests_to("DELETE", r"/v1/voices/.*")] == [f"/v1/voices/{finished}"]


def test_voice_limit_with_nothing_to_free_is_422_and_deletes_nothing(client, fake, audio_files):
    user_voice = fake.add_voice("My narrator", labels={"conversation_id": "conv_full"})
    fake.voice_limit = fake.custom_voice_count()
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_full"))
    assert response.status_code == 422
    assert response.get_json()["error_code"] == "VOICE_CLONING_FAILED"
    assert "maximum amount of custom voices" in response.get_json()["error_message"]
    assert user_voice in fake.voices and fake.requests_to("DELETE", r"/v1/voices/.*") == []


def test_elevenlabs_refusal_is_422_with_its_reason(client, fake, audio_files):
    fake.inject("POST", "/v1/voices/add", status=400, body=fake.error("invalid_audio", "Voice sample quality too low"))
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes()))
    assert response.status_code == 422
    assert response.get_json() == {"status": "error", "error_code": "VOICE_CLONING_FAILED",
                                   "error_message": "ElevenLabs could not clone the voice: Voice sample quality too low",
                                   "conversation_id": "conv_abc123xyz"}


def test_deadline_running_out_is_504_upstream_timeout(make_client, fake, audio_files):
    client = make_client(REQUEST_DEADLINE_SECONDS="1")
    fake.inject("POST", "/v1/voices/add", delay=3)
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes()))
    assert response.status_code == 504
    assert response.get_json()["error_code"] == "UPSTREAM_TIMEOUT"


def test_clone_answer_without_voice_id_is_422(client, fake, audio_files):
    fake.inject("POST", "/v1/voices/add", status=200, body=["not", "an", "object"])
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes()))
    assert response.status_code == 422
    assert response.get_json()["error_message"] == "ElevenLabs could not clone the voice: ElevenLabs returned no voice_id"


def test_unexpected_failure_is_500_internal_error_without_details(make_client, fake, audio_files, tmp_path, capsys):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    client = make_client(DEBUG_SAMPLE_DIR=str(not_a_directory))  # a misconfiguration the code does not expect
    response = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_boom"))
    assert response.status_code == 500
    assert response.get_json() == {"status": "error", "error_code": "INTERNAL_ERROR", "error_message": "Internal error",
                                   "conversation_id": "conv_boom"}
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(line["event_type"] == "internal_error" and line["error_type"] == "FileExistsError" for line in logged)


def test_a_first_seen_webhook_clones_without_waiting_for_the_duplicate_look_up(client, fake, audio_files):
    release, answers = threading.Event(), []
    fake.inject("GET", "/v2/voices", until=release, status=200, body={"voices": [], "has_more": False, "next_page_token": None})
    body = json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_fast")
    call = InBackground(lambda: answers.append(post_signed(client, "/webhook", body)))
    try:
        # The clone reaches ElevenLabs while the look-up is held unanswered (a clone that waited for it
        # would only come after the request deadline, 20 s).
        assert wait_until(lambda: fake.requests_to("POST", "/v1/voices/add"), timeout=10)
        assert fake.requests_to("GET", "/v2/voices")
    finally:
        release.set()
        call.join()
    assert answers[0].status_code == 200


@pytest.mark.parametrize("apart", [0.0, 0.25], ids=["same-moment", "250ms-apart"])
def test_one_webhook_at_two_instances_leaves_one_clone_named_by_both_answers_and_the_agent(make_client, fake,
                                                                                          audio_files, apart):
    """Each instance's own look-up runs before the other's clone exists (cloning takes 1 s here, seconds
    in reality; listing voices 0.3 s): after its add each looks again, and the newer clone yields to the
    older at once."""
    fake.endpoint_latency = {("POST", "/v1/voices/add"): 1.0, ("GET", "/v2/voices"): 0.3}
    body = json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_twins")
    instances = [make_client(), make_client()]
    answers: dict[int, dict] = {}

    def call(index: int) -> None:
        time.sleep(apart * index)
        answers[index] = post_signed(instances[index], "/webhook", body).get_json()

    in_parallel(call, range(2))
    assert len(fake.requests_to("POST", "/v1/voices/add")) == 2  # both did clone
    left = [v["voice_id"] for v in fake.cloned_voices() if v["name"].endswith("_twins")]
    assert len(left) == 1, left
    assert answers[0]["voice_id"] == answers[1]["voice_id"] == left[0]
    assert fake.agents[AGENT_ID]["conversation_config"]["tts"]["voice_id"] == left[0]


def test_a_twin_whose_second_patch_fails_keeps_its_clone_so_the_agent_never_names_a_deleted_voice(
        make_client, fake, audio_files):
    """`patch` mode, one webhook at two instances at once: each PATCHes the agent with its own clone; the
    one whose clone is newer PATCHes again with the older. Here the newer clone's PATCH lands last and
    that second PATCH fails: the agent still names the newer clone, which must stay (deleted with the call)."""
    fake.endpoint_latency = {("POST", "/v1/voices/add"): 1.0, ("GET", "/v2/voices"): 0.3}
    holds = [threading.Event(), threading.Event()]
    for hold in holds:  # the first two PATCHes, one each, held until released in a chosen order
        fake.inject("PATCH", r"/v1/convai/agents/.*", until=hold)
    body = json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="conv_twinfail")
    instances = [make_client(), make_client()]
    runner = InBackground(lambda: in_parallel(lambda i: post_signed(instances[i], "/webhook", body), range(2)))
    try:
        assert wait_until(lambda: len(fake.requests_to("PATCH", r"/v1/convai/agents/.*")) == 2, timeout=15)
        assert wait_until(lambda: len(fake.requests_to("GET", "/v2/voices")) >= 4, timeout=15)  # both looked again
        patched = [r.json["conversation_config"]["tts"]["voice_id"] for r in fake.requests_to("PATCH", r"/v1/convai/agents/.*")]
        clones = [Clone.from_voice(v) for v in fake.cloned_voices() if v["voice_id"] in patched]
        older, newer = sorted(clones, key=lambda c: (c.created_at, c.voice_id))
        fake.inject("PATCH", r"/v1/convai/agents/.*", status=400)  # the newer clone's second PATCH
        holds[patched.index(older.voice_id)].set()
        assert wait_until(lambda: fake.agents[AGENT_ID]["conversation_config"]["tts"]["voice_id"] == older.voice_id, timeout=10)
        holds[patched.index(newer.voice_id)].set()
    finally:
        for hold in holds:
            hold.set()
        runner.join()
    assert len(fake.requests_to("PATCH", r"/v1/convai/agents/.*")) == 3
    agent_voice = fake.agents[AGENT_ID]["conversation_config"]["tts"]["voice_id"]
    assert agent_voice == newer.voice_id and agent_voice in fake.voices


def test_without_a_patch_the_twin_look_up_does_not_hold_the_answer_and_the_losing_instance_points_at_the_older(
        make_client, fake, audio_files, capsys):
    """`override` mode: the answer comes once the clone is made (the listing after the add is not waited
    for); a moment later the instance whose clone is newer answers `/conversation-init` with the
    older one. Its own clone is not deleted at once (it was answered), only with the call."""
    fake.endpoint_latency = {("POST", "/v1/voices/add"): 1.0, ("GET", "/v2/voices"): 0.8}
    env = {"AGENT_UPDATE_MODE": "override", "INIT_WEBHOOK_SECRET": "init-secret", "ELEVENLABS_AGENT_ID": AGENT_ID}
    fake.agents[AGENT_ID]["platform_settings"] = {"overrides": {
        "enable_conversation_initiation_client_data_from_webhook": True,
        "conversation_config_override": {"agent": {"first_message": True}, "tts": {"voice_id": True}}}}
    document = json.loads(json_body(audio_files["wav_pcm16"].read_bytes(), conversation_id="x"))
    del document["conversation_id"]
    document["call_sid"] = "CAtwins0000000000000000000000000"
    body = json.dumps(document).encode()
    instances = [make_client(**env), make_client(**env)]
    answers: dict[int, dict] = {}

    def call(index: int) -> None:
        answers[index] = post_signed(instances[index], "/webhook", body).get_json()

    in_parallel(call, range(2))
    # Each answered with its own clone: neither waited for the listing after its add.
    made = sorted({answer["voice_id"] for answer in answers.values()})
    assert len(made) == 2 and len(fake.requests_to("POST", "/v1/voices/add")) == 2 and all(v in fake.voices for v in made)
    older, newer = (c.voice_id for c in sorted((Clone.from_voice(fake.voices[v]) for v in made),
                                               key=lambda c: (c.created_at, c.voice_id)))

    def init_voice(instance) -> str:
        answer = instance.post("/conversation-init", headers={"Content-Type": "application/json", "X-Precall-Secret": "init-secret"},
                               data=json.dumps({"caller_id": "+31612345678", "agent_id": AGENT_ID, "called_number": "+31201234567",
                                                "call_sid": document["call_sid"]}).encode()).get_json()
        return answer["conversation_config_override"]["tts"]["voice_id"]

    assert wait_until(lambda: all(init_voice(instance) == older for instance in instances), timeout=10)
    assert all(voice_id in fake.voices for voice_id in made)  # neither deleted before the call ends
    captured = capsys.readouterr()
    logs = captured.out + captured.err
    # Each clone is logged as made once: the newer one is superseded, not a second "made" duplicate.
    assert sorted(line["voice_id"] for line in log_events(logs, "voice_clone_success")) == made
    assert [(line["voice_id"], line["kept_voice_id"]) for line in log_events(logs, "voice_clone_superseded")] == [(newer, older)]
    assert log_events(logs, "voice_clone_duplicate") == []


def test_a_reused_clone_whose_maker_died_before_publishing_is_still_deleted_after_the_call(client, fake, audio_files):
    """Found by the soak: an instance killed right after its clone was made never published voice.created;
    the sender's retry reused that clone, and with no post-call webhook it waited for the TTL."""
    earlier = seed_clone(fake, "conv_orphan", datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=30))
    fake.set_conversation("conv_orphan", "done")  # the call is over; its post-call webhook never comes
    answer = post_signed(client, "/webhook", json_body(audio_files["wav_pcm16"].read_bytes(),
                                                       conversation_id="conv_orphan")).get_json()
    assert answer["voice_id"] == earlier
    assert wait_until(lambda: earlier not in fake.voices, timeout=20)
