"""Deployment files checked against the code: cloudbuild.yaml, Dockerfile, shell scripts."""

from __future__ import annotations

import ast
import base64
import json
import re
import shutil
import subprocess
import venv

import pytest
import requests
import yaml

from sandbox.processes import ROOT, free_port, wait_for_http
from tests.conftest import API_KEY, wait_until
from voiceclone.config import ENVIRONMENT_VARIABLES

SHELL_SCRIPTS = ["deploy/setup.sh", "scripts/bootstrap.sh", ".ci/run"]
# Read by functions-framework itself, not by the service's settings.
FRAMEWORK_VARIABLES = {"FUNCTION_TARGET", "PORT", "THREADS"}


def main_targets() -> set[str]:
    tree = ast.parse((ROOT / "main.py").read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any("functions_framework" in ast.unparse(d) for d in node.decorator_list)}


def cloudbuild() -> dict:
    return yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())


def deploy_steps() -> list[list[str]]:
    return [step["args"] for step in cloudbuild()["steps"] if step["args"][:2] == ["run", "deploy"]]


def flag_values(args: list[str], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]


def test_main_exposes_the_two_spec_targets():
    assert main_targets() == {"precall_webhook", "cleanup_voices"}


def test_cloudbuild_deploys_both_targets_and_sets_only_variables_the_service_reads():
    steps = deploy_steps()
    targets, names = set(), set()
    for args in steps:
        for assignment in ",".join(flag_values(args, "--set-env-vars")).split(","):
            key, _, value = assignment.partition("=")
            names.add(key)
            if key == "FUNCTION_TARGET":
                targets.add(value)
        names.update(a.split("=", 1)[0] for a in ",".join(flag_values(args, "--set-secrets")).split(","))
    assert targets == main_targets()
    assert names <= set(ENVIRONMENT_VARIABLES) | FRAMEWORK_VARIABLES, names - set(ENVIRONMENT_VARIABLES)


def test_webhook_is_public_and_cleanup_private_with_least_secrets():
    by_target = {flag_values(a, "--set-env-vars")[0].split(",")[0].split("=")[1]: a for a in deploy_steps()}
    assert "--allow-unauthenticated" in by_target["precall_webhook"]
    assert "--no-allow-unauthenticated" in by_target["cleanup_voices"]
    assert "ELEVENLABS_WEBHOOK_SECRET" not in ",".join(flag_values(by_target["cleanup_voices"], "--set-secrets"))


def test_cloudbuild_substitutions_are_all_declared():
    text = (ROOT / "cloudbuild.yaml").read_text()
    used = set(re.findall(r"\$\{(_[A-Z_]+)\}", text))
    assert used <= set(cloudbuild()["substitutions"]), used - set(cloudbuild()["substitutions"])


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud not installed: cannot check its flags")
def test_every_gcloud_run_deploy_flag_exists_in_this_gcloud():
    help_text = subprocess.run(["gcloud", "run", "deploy", "--help"], capture_output=True, text=True, timeout=120).stdout
    for args in deploy_steps():
        for flag in {a.split("=", 1)[0] for a in args if a.startswith("--")}:
            assert re.search(re.escape(flag) + r"\b", help_text), flag


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_scripts_parse_and_pass_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(ROOT / script)]).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (scripts/bootstrap.sh installs it)")
    result = subprocess.run(["shellcheck", str(ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in ENVIRONMENT_VARIABLES if f"`{name}`" not in readme]
    assert missing == []


def test_config_reads_no_variable_missing_from_the_documented_list():
    source = (ROOT / "voiceclone" / "config.py").read_text()
    read = set(re.findall(r'env(?:\.get)?\(\s*"([A-Z][A-Z0-9_]+)"|_\w+\(env, "([A-Z][A-Z0-9_]+)"', source))
    names = {a or b for a, b in read}
    assert names and names <= set(ENVIRONMENT_VARIABLES), names - set(ENVIRONMENT_VARIABLES)


def dockerfile() -> tuple[dict[str, str], list[str], list[str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    copies: list[str] = []
    command: list[str] = []
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if not parts:
            continue
        if parts[0] == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", parts[1])))
        elif parts[0] == "COPY":
            copies.append(parts[1].split()[0])
        elif parts[0] == "CMD":
            command = json.loads(parts[1])
    return env, copies, command


@pytest.fixture(scope="module")
def image_like_dir(tmp_path_factory):
    """The image's /app and its Python, without Docker: COPY'd files and a clean venv with requirements.txt."""
    env, copies, command = dockerfile()
    app = tmp_path_factory.mktemp("image") / "app"
    app.mkdir()
    for source in copies:
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, app / source.rstrip("/"), ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, app / path.name)
    env_dir = app.parent / "venv"
    venv.create(env_dir, with_pip=True)
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-r", str(app / "requirements.txt")], check=True, timeout=600)
    return app, env_dir, env, command


def run_container_command(image_like_dir, extra_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    app, env_dir, image_env, command = image_like_dir
    port = free_port()
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(app), **image_env, "PORT": str(port), **extra_env}
    process = subprocess.Popen(command, cwd=app, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


def test_container_command_serves_the_webhook_from_a_clean_venv(image_like_dir, fake):
    assert dockerfile()[2] == ["functions-framework"]
    process, url = run_container_command(image_like_dir, {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_WEBHOOK_SECRET": "s",
                                                          "ELEVENLABS_BASE_URL": fake.url})
    try:
        wait_for_http(url + "/healthz", process, timeout=60)
        assert requests.get(url + "/healthz", timeout=5).json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_container_command_runs_cleanup_as_a_cloudevent_target(image_like_dir, fake):
    voice_id = fake.add_voice("X_Clone_1", labels={"source": "precall-webhook", "type": "instant_clone",
                                                  "conversation_id": "conv_img", "created_at": "2020-01-01T00:00:00Z"})
    process, url = run_container_command(image_like_dir, {"FUNCTION_TARGET": "cleanup_voices", "ELEVENLABS_API_KEY": API_KEY,
                                                          "ELEVENLABS_BASE_URL": fake.url})
    try:
        wait_for_http(url + "/", process, timeout=60)
        push = {"subscription": "projects/p/subscriptions/s", "message": {
            "data": base64.b64encode(json.dumps({"event_type": "call.ended", "conversation_id": "conv_img"}).encode()).decode(),
            "attributes": {"event_type": "call.ended"}, "messageId": "1", "publishTime": "2026-01-01T00:00:00Z"}}
        response = requests.post(url + "/", json=push, timeout=30)
        assert response.status_code == 200
        assert wait_until(lambda: voice_id not in fake.voices, timeout=10)
    finally:
        process.terminate()
        process.wait(timeout=10)
