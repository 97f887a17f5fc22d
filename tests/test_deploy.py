"""Deployment files checked against the code: cloudbuild.yaml, Dockerfile, shell scripts."""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import shutil
import subprocess
import venv

import pytest
import requests
import yaml

from sandbox.processes import ROOT, free_port, wait_for_http
from sandbox.twilio_server import SANDBOX_ACCOUNT_SID, FakeTwilio
from tests.conftest import API_KEY, SECRET, json_body, signature_header, wait_until
from tests.gcloud_cli import (
    calls_of,
    flag,
    problems_with,
    documented_gcloud_commands,
    run_with_fake_gcloud,
    sdk_root,
    without_globals,
)
from voiceclone.config import ENVIRONMENT_VARIABLES

SHELL_SCRIPTS = ["deploy/setup.sh", "deploy/deploy_services.sh", "deploy/teardown.sh", "scripts/bootstrap.sh", ".ci/run"]
# Read by functions-framework itself, not by the service's settings.
FRAMEWORK_VARIABLES = {"FUNCTION_TARGET", "PORT", "THREADS"}
SECRET_VALUES = {"ELEVENLABS_API_KEY": "sk_new_api_key_value", "ELEVENLABS_WEBHOOK_SECRET": "wsec_new_webhook_value"}
needs_gcloud = pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud not installed: cannot check commands")


def main_targets() -> set[str]:
    tree = ast.parse((ROOT / "main.py").read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any("functions_framework" in ast.unparse(d) for d in node.decorator_list)}


def cloudbuild() -> dict:
    return yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())


def cloud_build_env(**substitutions: str) -> dict[str, str]:
    """The deploy step's environment as Cloud Build makes it: its `env` with the substitutions filled in."""
    config = cloudbuild()
    values = {**config["substitutions"], **substitutions, "PROJECT_ID": "my-project", "BUILD_ID": "b1"}
    [step] = [s for s in config["steps"] if s["id"] == "deploy"]
    assert step["entrypoint"] == "bash" and step["args"] == ["deploy/deploy_services.sh"]
    fill = lambda text: re.sub(r"\$\{?(_?[A-Z_]+)\}?", lambda m: values[m.group(1)], text)
    return dict(fill(item).split("=", 1) for item in step["env"])


def deploy_calls(tmp_path, state: str, **substitutions: str) -> dict[str, list[str]]:
    """`gcloud run deploy` as Cloud Build's deploy step runs it, by FUNCTION_TARGET."""
    result, calls = run_with_fake_gcloud(["bash", "deploy/deploy_services.sh"], tmp_path, state,
                                         cloud_build_env(**substitutions))
    assert result.returncode == 0, result.stderr
    deploys = calls_of(calls, "run", "deploy")
    return {env_vars(c)["FUNCTION_TARGET"]: c for c in deploys}


def env_vars(call: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in (flag(call, "--update-env-vars") or "").split(",") if item)


def setup(tmp_path, state: str, *args: str, **env: str):
    return run_with_fake_gcloud(["bash", "deploy/setup.sh", "--region", "europe-west1", *args], tmp_path, state,
                                {"ELEVENLABS_API_KEY": "old-value", "ELEVENLABS_AGENT_ID": "agent_x", **env})


def test_main_exposes_the_two_targets():
    assert main_targets() == {"precall_webhook", "cleanup_voices"}


@needs_gcloud
def test_first_deploy_runs_both_targets_sized_by_default_with_only_variables_the_service_reads(tmp_path):
    deploys = deploy_calls(tmp_path, "fresh", _AGENT_ID="agent_x", _AGENT_UPDATE_MODE="override")
    assert set(deploys) == main_targets()
    for call in deploys.values():
        names = set(env_vars(call)) | {item.split("=", 1)[0] for item in flag(call, "--update-secrets").split(",")}
        assert names <= set(ENVIRONMENT_VARIABLES) | FRAMEWORK_VARIABLES, names - set(ENVIRONMENT_VARIABLES)
        assert env_vars(call)["ELEVENLABS_AGENT_ID"] == "agent_x"  # cleanup's sweep checks the agent's webhook too
    webhook, cleanup = deploys["precall_webhook"], deploys["cleanup_voices"]
    assert [flag(webhook, f) for f in ("--min-instances", "--max-instances", "--cpu", "--memory", "--concurrency")] == \
        ["1", "10", "2", "1Gi", "32"]
    assert [flag(cleanup, f) for f in ("--min-instances", "--max-instances", "--cpu", "--memory", "--concurrency")] == \
        ["0", "3", "1", "512Mi", "8"]
    assert env_vars(webhook)["AGENT_UPDATE_MODE"] == "override"
    # Cloud Run routes the first call only once /healthz says the Pub/Sub client is warm (docs/design.md).
    assert "httpGet.path=/healthz" in flag(webhook, "--startup-probe") and flag(cleanup, "--startup-probe") is None
    assert flag(webhook, "--image") == "europe-west4-docker.pkg.dev/my-project/precall/precall-voice-clone:b1"
    assert "ELEVENLABS_WEBHOOK_SECRET" in flag(webhook, "--update-secrets")
    assert flag(cleanup, "--update-secrets") == "ELEVENLABS_API_KEY=elevenlabs-api-key:latest"  # least secrets


@needs_gcloud
def test_a_redeploy_changes_no_setting_or_size_it_was_not_given(tmp_path):
    kept = deploy_calls(tmp_path, "existing")
    for call in kept.values():
        assert not {"ELEVENLABS_AGENT_ID", "AGENT_UPDATE_MODE"} & set(env_vars(call))
        assert not [a for a in call if a.startswith(("--min-instances", "--max-instances", "--cpu=", "--memory", "--concurrency"))]
        assert "--set-env-vars" not in " ".join(call)  # --set-env-vars would drop settings made by hand
    changed = deploy_calls(tmp_path, "existing", _WEBHOOK_MIN_INSTANCES="0", _WEBHOOK_CONCURRENCY="80")
    webhook = changed["precall_webhook"]
    assert flag(webhook, "--min-instances") == "0" and flag(webhook, "--max-instances") is None
    assert flag(webhook, "--concurrency") == "80" and "--concurrency" not in " ".join(changed["cleanup_voices"])


@needs_gcloud
def test_deploys_leave_access_to_setup_and_setup_makes_only_the_webhook_public(tmp_path):
    for call in deploy_calls(tmp_path, "fresh").values():  # the build identity cannot (and need not) change IAM
        assert not [a for a in call if "allow-unauthenticated" in a or "invoker-iam-check" in a]
    result, calls = setup(tmp_path, "existing")
    assert result.returncode == 0, result.stderr
    [public] = [c for c in calls_of(calls, "run", "services", "update") if "--no-invoker-iam-check" in c]
    assert public[3] == "precall-webhook"
    [invoker] = calls_of(calls, "run", "services", "add-iam-policy-binding")
    assert invoker[3] == "precall-cleanup" and flag(invoker, "--member") == "serviceAccount:precall-push@my-project.iam.gserviceaccount.com"


def test_cloudbuild_substitutions_are_all_declared_and_used():
    text = (ROOT / "cloudbuild.yaml").read_text()
    used = set(re.findall(r"\$\{(_[A-Z_]+)\}", text))
    assert used == set(cloudbuild()["substitutions"])


@needs_gcloud
@pytest.mark.parametrize("state", ["fresh", "existing"])
def test_every_gcloud_call_of_setup_exists_in_this_gcloud(tmp_path, state):
    result, calls = setup(tmp_path, state, ALERT_EMAIL="ops@example.com")
    assert result.returncode == 0, result.stderr
    assert len(calls) > 40
    assert [p for call in calls for p in problems_with(call)] == []


@needs_gcloud
def test_setup_on_a_fresh_project_creates_everything_with_least_privilege(tmp_path):
    result, calls = setup(tmp_path, "fresh", ELEVENLABS_API_KEY=SECRET_VALUES["ELEVENLABS_API_KEY"])
    assert result.returncode == 0, result.stderr
    assert SECRET_VALUES["ELEVENLABS_API_KEY"] not in result.stdout + result.stderr  # never printed
    roles = [(c[2] if c[1] == "add-iam-policy-binding" else c[3], flag(c, "--member"), flag(c, "--role"))
             for c in map(without_globals, calls) if "add-iam-policy-binding" in c]
    assert not [r for r in roles if r[2] in ("roles/run.admin", "roles/owner", "roles/editor")]
    project_roles = {(member, role) for where, member, role in roles if where == "my-project"}
    assert project_roles == {("serviceAccount:precall-build@my-project.iam.gserviceaccount.com", "roles/logging.logWriter"),
                             ("serviceAccount:precall-build@my-project.iam.gserviceaccount.com", "roles/run.developer")}
    [build] = calls_of(calls, "builds", "submit")
    assert flag(build, "--region") == "europe-west1" and "_REGION=europe-west1" in flag(build, "--substitutions")
    assert flag(build, "--service-account") == "projects/my-project/serviceAccounts/precall-build@my-project.iam.gserviceaccount.com"
    assert "_AGENT_ID=agent_x" in flag(build, "--substitutions")
    created = {c[3] for c in calls_of(calls, "logging", "metrics", "create")}
    assert created == {p.stem for p in (ROOT / "deploy" / "metrics").glob("*.yaml")}
    assert len(calls_of(calls, "alpha", "monitoring", "policies", "create")) == len(list((ROOT / "deploy" / "alerts").glob("*.json")))
    assert len(calls_of(calls, "monitoring", "dashboards", "create")) == 1
    [policy] = calls_of(calls, "artifacts", "repositories", "set-cleanup-policies")
    assert "--no-dry-run" in policy
    # ElevenLabs makes its webhook secret only once the URL exists: a temporary one, and what to do next.
    assert [c[2] for c in calls_of(calls, "secrets", "create")] == ["elevenlabs-api-key", "elevenlabs-webhook-secret",
                                                                     "precall-init-webhook-secret"]
    assert "NEXT: the webhook secret is a temporary one" in result.stdout


@needs_gcloud
def test_setup_rerun_updates_in_place_and_adds_a_secret_version_only_for_a_changed_value(tmp_path):
    result, calls = setup(tmp_path, "existing", ELEVENLABS_WEBHOOK_SECRET=SECRET_VALUES["ELEVENLABS_WEBHOOK_SECRET"])
    assert result.returncode == 0, result.stderr
    assert [c for c in map(without_globals, calls) if "create" in c] == []
    assert [c[3] for c in calls_of(calls, "secrets", "versions", "add")] == ["elevenlabs-webhook-secret"]
    assert len(calls_of(calls, "logging", "metrics", "update")) == len(list((ROOT / "deploy" / "metrics").glob("*.yaml")))
    assert len(calls_of(calls, "alpha", "monitoring", "policies", "update")) == len(list((ROOT / "deploy" / "alerts").glob("*.json")))
    assert "NEXT" not in result.stdout


@needs_gcloud
def test_setup_without_a_build_rolls_the_services_onto_a_changed_secret(tmp_path):
    result, calls = setup(tmp_path, "existing", "--skip-build", ELEVENLABS_API_KEY="sk_rotated")
    assert result.returncode == 0, result.stderr
    assert calls_of(calls, "builds", "submit") == []
    rolled = [c[3] for c in calls_of(calls, "run", "services", "update") if flag(c, "--update-labels")]
    assert rolled == ["precall-webhook", "precall-cleanup"]


TWILIO_TOKEN = "twilio_token_never_printed"
SERVICE_URL = "https://precall-webhook-abc.a.run.app"  # what the fake gcloud answers for the webhook's URL


@needs_gcloud
def test_setup_with_twilio_stores_the_token_sets_the_service_and_prints_the_urls_to_paste(tmp_path):
    result, calls = setup(tmp_path, "fresh", TWILIO_ACCOUNT_SID=SANDBOX_ACCOUNT_SID, TWILIO_AUTH_TOKEN=TWILIO_TOKEN)
    assert result.returncode == 0, result.stderr
    assert TWILIO_TOKEN not in result.stdout + result.stderr and not [c for c in calls if TWILIO_TOKEN in " ".join(c)]
    assert "twilio-auth-token" in [c[2] for c in calls_of(calls, "secrets", "create")]
    [access] = [c for c in calls_of(calls, "secrets", "add-iam-policy-binding") if c[2] == "twilio-auth-token"]
    assert flag(access, "--member") == "serviceAccount:precall-webhook@my-project.iam.gserviceaccount.com"
    [front] = [c for c in calls_of(calls, "run", "services", "update") if flag(c, "--update-secrets")]
    assert front[3] == "precall-webhook"
    assert env_vars(["--update-env-vars=" + flag(front, "--update-env-vars")]) == {
        "TWILIO_ACCOUNT_SID": SANDBOX_ACCOUNT_SID, "PUBLIC_BASE_URL": SERVICE_URL}
    assert flag(front, "--update-secrets") == "TWILIO_AUTH_TOKEN=twilio-auth-token:latest"
    assert f"A call comes in, Webhook:  {SERVICE_URL}/twilio/voice" in result.stdout
    assert f"Call status changes:       {SERVICE_URL}/twilio/status" in result.stdout
    assert [p for call in calls for p in problems_with(call)] == []


@needs_gcloud
def test_setup_without_twilio_leaves_the_telephony_front_alone(tmp_path):
    result, calls = setup(tmp_path, "existing")
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if "twilio-auth-token" in " ".join(c) or "TWILIO" in " ".join(c)]
    assert "/twilio/voice" not in result.stdout


@needs_gcloud
def test_setup_adds_a_twilio_token_version_only_when_the_token_changed(tmp_path):
    same, calls = setup(tmp_path, "existing", TWILIO_ACCOUNT_SID=SANDBOX_ACCOUNT_SID, TWILIO_AUTH_TOKEN="old-value")
    assert same.returncode == 0, same.stderr
    assert calls_of(calls, "secrets", "versions", "add") == []
    changed, calls = setup(tmp_path, "existing", TWILIO_ACCOUNT_SID=SANDBOX_ACCOUNT_SID, TWILIO_AUTH_TOKEN=TWILIO_TOKEN)
    assert changed.returncode == 0, changed.stderr
    assert [c[3] for c in calls_of(calls, "secrets", "versions", "add")] == ["twilio-auth-token"]


@pytest.fixture
def twilio_account():
    """The local Twilio whose auth token is what the fake gcloud's Secret Manager holds ("old-value")."""
    server = FakeTwilio(auth_token="old-value").start()
    yield server
    server.stop()


@needs_gcloud
def test_setup_with_a_twilio_number_points_it_at_the_service_through_twilios_api(tmp_path, twilio_account):
    other = twilio_account.add_number("+31207654321", "https://elsewhere.example.com/voice", "")
    sid = twilio_account.add_number("+31201234567", "https://old-ivr.example.com/answer", "")
    twilio_account.numbers[sid]["voice_method"] = "GET"
    # No TWILIO_AUTH_TOKEN here: setup reads it from Secret Manager to call Twilio.
    result, _ = setup(tmp_path, "existing", "--skip-build", "--twilio-number", "+31201234567",
                      TWILIO_ACCOUNT_SID=twilio_account.account_sid, TWILIO_API_BASE_URL=twilio_account.url)
    assert result.returncode == 0, result.stderr
    number = twilio_account.numbers[sid]
    assert (number["voice_url"], number["voice_method"], number["status_callback"], number["status_callback_method"]) == \
        (SERVICE_URL + "/twilio/voice", "POST", SERVICE_URL + "/twilio/status", "POST")
    assert twilio_account.numbers[other]["voice_url"] == "https://elsewhere.example.com/voice"  # only the one named
    assert all(r.headers["authorization"].startswith("Basic ") for r in twilio_account.requests)
    assert f"Twilio number +31201234567 ({sid}) now sends calls to the service" in result.stdout
    assert "old-value" not in result.stdout + result.stderr


@needs_gcloud
def test_setup_with_a_number_the_account_does_not_have_fails_naming_it(tmp_path, twilio_account):
    result, _ = setup(tmp_path, "existing", "--skip-build", "--twilio-number", "+31200000000",
                      TWILIO_ACCOUNT_SID=twilio_account.account_sid, TWILIO_API_BASE_URL=twilio_account.url)
    assert result.returncode == 1 and "has no number +31200000000" in result.stderr


@pytest.mark.parametrize("args, env, named", [
    (["--twilio-number", "+31201234567"], {}, "--twilio-number needs TWILIO_ACCOUNT_SID"),
    ([], {"TWILIO_ACCOUNT_SID": "AC123"}, "TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits"),
    (["--redeploy"], {"TWILIO_ACCOUNT_SID": SANDBOX_ACCOUNT_SID}, "without --redeploy"),
])
def test_setup_refuses_a_twilio_setting_it_cannot_use_before_touching_anything(tmp_path, args, env, named):
    result, calls = setup(tmp_path, "existing", *args, **env)
    assert result.returncode == 2 and named in result.stderr
    assert [without_globals(c)[:2] for c in calls] == [["config", "get"]] or calls == []


@needs_gcloud
def test_redeploy_builds_in_the_region_and_touches_nothing_else(tmp_path):
    result, calls = run_with_fake_gcloud(["bash", "deploy/setup.sh", "--project", "p1", "--region", "us-east1", "--redeploy"],
                                         tmp_path, "existing")
    assert result.returncode == 0, result.stderr
    assert [without_globals(c)[:2] for c in calls] == [["projects", "describe"], ["builds", "submit"]]
    build = without_globals(calls[-1])
    assert flag(build, "--region") == "us-east1" and "_REGION=us-east1" in flag(build, "--substitutions")
    assert "_AGENT_ID=," in flag(build, "--substitutions")  # empty: the running service keeps its agent
    assert [p for call in calls for p in problems_with(call)] == []


@needs_gcloud
@pytest.mark.parametrize("state", ["fresh", "existing"])
def test_teardown_deletes_what_setup_creates_with_commands_this_gcloud_has(tmp_path, state):
    result, calls = run_with_fake_gcloud(["bash", "deploy/teardown.sh", "--region", "europe-west1"], tmp_path, state,
                                         stdin="my-project\n")
    assert result.returncode == 0, result.stderr
    assert [p for call in calls for p in problems_with(call)] == []
    deleted = {tuple(c[:2]) + (c[3],) for c in map(without_globals, calls) if len(c) > 3 and c[2] == "delete"}
    for service in ("precall-webhook", "precall-cleanup"):
        assert ("run", "services", service) in deleted
    metrics = {c[3] for c in calls_of(calls, "logging", "metrics", "delete")}
    assert metrics == {p.stem for p in (ROOT / "deploy" / "metrics").glob("*.yaml")}
    assert len(calls_of(calls, "iam", "service-accounts", "delete")) == 4


def test_teardown_deletes_nothing_without_the_project_id_typed(tmp_path):
    result, calls = run_with_fake_gcloud(["bash", "deploy/teardown.sh"], tmp_path, "existing", stdin="oops\n")
    assert result.returncode == 1 and "nothing deleted" in result.stderr
    assert [c for c in calls if "delete" in c] == []


@needs_gcloud
def test_every_gcloud_command_in_the_docs_exists_in_this_gcloud():
    commands = documented_gcloud_commands()
    assert len(commands) > 15
    assert {p for command in commands for p in problems_with(command)} == set()


@needs_gcloud
def test_metrics_dashboard_alerts_and_cleanup_policies_parse_as_this_gclouds_api_messages():
    deploy = ROOT / "deploy"
    items = [{"kind": "LogMetric", "name": p.name, "data": yaml.safe_load(p.read_text())} for p in (deploy / "metrics").glob("*.yaml")]
    items += [{"kind": "AlertPolicy", "name": p.name, "data": json.loads(p.read_text())} for p in (deploy / "alerts").glob("*.json")]
    items += [{"kind": "Dashboard", "name": "dashboard.json", "data": json.loads((deploy / "dashboard.json").read_text())},
              {"kind": "Lifecycle", "name": "build-source-lifecycle.json",
               "data": json.loads((deploy / "build-source-lifecycle.json").read_text())},
              {"kind": "CleanupPolicy", "name": "artifact-cleanup-policy.json", "path": str(deploy / "artifact-cleanup-policy.json")}]
    broken = dict(items[0], name="a misspelt field", data={**items[0]["data"], "filtr": "x"})
    python = subprocess.run(["gcloud", "info", "--format=value(basic.python_location)"], capture_output=True, text=True,
                            timeout=120).stdout.strip()
    result = subprocess.run([python, str(ROOT / "tests" / "gcloud_schema_check.py"), str(sdk_root() / "lib")],
                            input=json.dumps(items + [broken]), capture_output=True, text=True, timeout=120,
                            env={"PATH": os.environ["PATH"], "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"})
    assert result.returncode == 0, result.stderr
    problems = json.loads(result.stdout)
    assert len(problems) == 1 and problems[0].startswith("a misspelt field")  # the checker does catch mistakes


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_scripts_parse_and_pass_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(ROOT / script)]).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (scripts/bootstrap.sh installs it)")
    result = subprocess.run(["shellcheck", str(ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


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


def test_the_image_carries_only_the_service():
    _, copies, _ = dockerfile()
    assert copies and not [c for c in copies if c.split("/")[0] in ("samples", "tests", "deploy", "sandbox", "scripts", "bench")]


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


def stop(process: subprocess.Popen) -> None:
    """Stop the container command as Cloud Run does: SIGTERM, then SIGKILL after its 10 s grace (a
    fresh-clone CI run saw a graceful stop take longer; the test is about serving, not stopping)."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.mark.timeout(900)  # its setup pip-installs requirements.txt into a new venv
def test_container_command_serves_the_webhook_from_a_clean_venv(image_like_dir, fake, audio_files):
    assert dockerfile()[2] == ["functions-framework"]
    process, url = run_container_command(image_like_dir, {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_WEBHOOK_SECRET": SECRET,
                                                          "ELEVENLABS_BASE_URL": fake.url})
    try:
        wait_for_http(url + "/healthz", process, timeout=60)
        health = requests.get(url + "/healthz", timeout=5)
        # The image's defaults: the documented update mode, the in-process queue until a topic is set.
        assert (health.status_code, health.json()) == (200, {"status": "ok", "agent_update_mode": "patch", "events": "local"})
        body = json_body(audio_files["mp3_cbr"].read_bytes(), conversation_id="conv_image")
        response = requests.post(url + "/webhook", data=body, timeout=30, headers={
            "Content-Type": "application/json", "ElevenLabs-Signature": signature_header(body)})
        assert response.status_code == 200, response.text
        assert response.json()["voice_id"] in fake.voices  # the whole call path works with only requirements.txt
    finally:
        stop(process)


@pytest.mark.timeout(900)  # may be the first to build the image-like venv
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
        stop(process)
