"""`make run`'s state file as the operator commands read it: what the shell leaves unset is taken from a
live stack, settings that belong together are taken together or not at all, a dead stack is ignored."""

from __future__ import annotations

import json
import subprocess
import sys

from voiceclone import dev_stack

SANDBOX = {"PRECALL_URL": "http://127.0.0.1:8080", "ELEVENLABS_API_KEY": "sandbox",
           "ELEVENLABS_BASE_URL": "http://127.0.0.1:40000", "ELEVENLABS_AGENT_ID": "agent_local_sandbox",
           "ELEVENLABS_WEBHOOK_SECRET": "local-dev-webhook-secret", "INIT_WEBHOOK_SECRET": "local-dev-init-secret"}


def stack_file(tmp_path, settings=SANDBOX):
    path = tmp_path / ".dev" / "stack.json"
    assert dev_stack.write(path, {"precall_url": settings["PRECALL_URL"], "settings": settings}, create=True)
    return path


def test_a_shell_with_nothing_set_takes_the_running_stacks_settings(tmp_path):
    env = {dev_stack.STATE_FILE_VARIABLE: str(stack_file(tmp_path))}
    state = dev_stack.adopt(env)
    assert state is not None and state["precall_url"] == SANDBOX["PRECALL_URL"]
    assert {name: env[name] for name in SANDBOX} == SANDBOX


def test_a_key_exported_in_the_shell_is_never_paired_with_the_sandboxs_url_or_agent(tmp_path):
    env = {dev_stack.STATE_FILE_VARIABLE: str(stack_file(tmp_path)), "ELEVENLABS_API_KEY": "sk_real"}
    dev_stack.adopt(env)
    assert env["ELEVENLABS_API_KEY"] == "sk_real"
    assert "ELEVENLABS_BASE_URL" not in env and "ELEVENLABS_AGENT_ID" not in env
    assert env["PRECALL_URL"] == SANDBOX["PRECALL_URL"]  # settings of their own are still taken


def test_a_stack_whose_process_is_gone_is_ignored(tmp_path):
    path = stack_file(tmp_path)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({**json.loads(path.read_text()), "pid": int(finished.stdout)}))
    env = {dev_stack.STATE_FILE_VARIABLE: str(path)}
    assert dev_stack.adopt(env) is None and set(env) == {dev_stack.STATE_FILE_VARIABLE}


def test_the_file_is_private_rewritten_only_while_it_exists_and_removed_only_by_its_writer(tmp_path):
    path = stack_file(tmp_path)
    assert path.stat().st_mode & 0o077 == 0  # it holds the sandbox's secrets
    assert dev_stack.write(path, {"ready": True}, create=False)
    path.unlink()  # what make does when it is interrupted
    assert not dev_stack.write(path, {"ready": True}, create=False) and not path.exists()
    path.write_text(json.dumps({"pid": 1}))  # another stack's
    dev_stack.remove(path)
    assert path.exists()
