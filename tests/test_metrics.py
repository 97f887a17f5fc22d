"""The metrics, dashboard and alerts `deploy/setup.sh` creates, checked against what the service really
logs: the service runs (in-process, against the local ElevenLabs) through a success, a failed agent
update, a failed clone, a bad signature, a post-call deletion and a sweep, and (functions-framework,
the local Twilio) through three phone calls: one in the caller's voice, one refused consent, one whose
clone ElevenLabs refuses; its stdout lines, shaped as
Cloud Run stores them, must be matched by every log-based metric's filter; the dashboard and the alert
policies may only use metrics that setup creates, with labels those metrics have."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.processes import FunctionServer
from sandbox.twilio_server import Caller, FakeTwilio
from tests.conftest import json_body, post_call_body, post_signed, seed_clone, wait_until
from tests.gcloud_cli import documented_gcloud_commands
from tests.log_filter import FilterSyntaxError, field, log_entry, matches
from tests.telephony_stack import SAMPLE, dial, log_lines, telephony_agent
from tests.telephony_stack import service_env as telephony_env

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
METRICS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((DEPLOY / "metrics").glob("*.yaml"))}
DASHBOARD = json.loads((DEPLOY / "dashboard.json").read_text())
ALERTS = {p.name: json.loads(p.read_text()) for p in sorted((DEPLOY / "alerts").glob("*.json"))}
USER_METRIC = "logging.googleapis.com/user/"
# Google's own metrics the dashboard and alerts may use besides the log-based ones.
BUILT_IN = {"run.googleapis.com/request_count", "run.googleapis.com/container/instance_count",
            "pubsub.googleapis.com/subscription/dead_letter_message_count"}
DISTRIBUTION_ALIGNERS = {"ALIGN_DELTA", "ALIGN_MEAN", "ALIGN_SUM", "ALIGN_COUNT"} | {f"ALIGN_PERCENTILE_{p}" for p in (5, 50, 95, 99)}
COUNTER_ALIGNERS = {"ALIGN_DELTA", "ALIGN_RATE", "ALIGN_SUM", "ALIGN_MAX", "ALIGN_MEAN"}
_captured: list[dict[str, Any]] | None = None


def run_the_service(make_client, fake, audio_files, capsys) -> list[dict[str, Any]]:
    """Each path whose log lines a metric counts, through the real app; its stdout as log entries."""
    client = make_client()
    sample = audio_files["wav_pcm16"].read_bytes()
    assert post_signed(client, "/webhook", json_body(sample, conversation_id="conv_m_ok")).status_code == 200
    fake.inject("PATCH", r"/v1/convai/agents/.*", status=404, body=fake.error("agent_not_found", "Agent not found"))
    assert post_signed(client, "/webhook", json_body(sample, conversation_id="conv_m_patch")).json["agent_updated"] is False
    fake.inject("POST", "/v1/voices/add", status=400, body=fake.error("invalid_sample", "The sample could not be used"))
    assert post_signed(client, "/webhook", json_body(sample, conversation_id="conv_m_fail")).status_code == 422
    assert post_signed(client, "/webhook", json_body(sample), secret="not-the-secret").status_code == 401
    music = audio_files["hold_music"].read_bytes()  # refused by the quality gate
    assert post_signed(client, "/webhook", json_body(music, conversation_id="conv_m_music")).status_code == 422
    voice_id = next(v["voice_id"] for v in fake.cloned_voices() if v["name"].endswith("_ok"))
    assert post_signed(client, "/post-call", post_call_body("conv_m_ok", event_timestamp=1)).status_code == 200
    assert wait_until(lambda: voice_id not in fake.voices, timeout=20)
    seed_clone(fake, "conv_m_old", datetime.now(timezone.utc) - timedelta(hours=5))
    disabled = fake.add_workspace_webhook("https://precall.example/post-call", is_disabled=True)
    with fake.lock:
        fake.convai_settings["webhooks"]["post_call_webhook_id"] = disabled
    sys.modules["main"].runtime().cleanup.handle({"event_type": "sweep"})  # as Cloud Scheduler's message does
    lines = capsys.readouterr().out.splitlines() + run_the_telephony_front(fake)
    return [entry for entry in (log_entry(line, "precall-webhook") for line in lines) if entry is not None]


def run_the_telephony_front(fake) -> list[str]:
    """Three Twilio calls through the real server: in the caller's voice, consent refused, clone refused."""
    twilio = FakeTwilio().start()
    telephony_agent(fake)
    server = FunctionServer("precall_webhook", telephony_env(fake, twilio)).start()
    try:
        dial(twilio, server, Caller(speech=[SAMPLE]))
        dial(twilio, server, Caller(digits="2", speech=[SAMPLE]))
        fake.inject("POST", "/v1/voices/add", status=400, body=fake.error("invalid_sample", "The sample could not be used"))
        dial(twilio, server, Caller(speech=[SAMPLE]))
        wait_until(lambda: len(log_lines(server, "twilio_call_connected")) == 3
                   and len(log_lines(server, "twilio_recording_deleted")) >= 1)
        return server.logs().splitlines()
    finally:
        server.stop()
        twilio.stop()


@pytest.fixture
def service_logs(make_client, fake, audio_files, capsys) -> list[dict[str, Any]]:
    global _captured
    if _captured is None:  # once per session: every metric reads the same real output
        _captured = run_the_service(make_client, fake, audio_files, capsys)
    return _captured


def extracted_field(extractor: str) -> str:
    match = re.fullmatch(r"EXTRACT\(([\w.]+)\)", extractor)
    assert match, f"not a plain EXTRACT(field): {extractor}"
    return match.group(1)


def named_event_types(filter_text: str) -> set[str]:
    clause = re.search(r'jsonPayload\.event_type=(\([^)]*\)|"[^"]*")', filter_text)
    return set(re.findall(r'"([^"]+)"', clause.group(1))) if clause else set()


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_counts_log_lines_the_service_really_writes(name, service_logs):
    metric = METRICS[name]
    matched = [entry for entry in service_logs if matches(metric["filter"], entry)]
    assert matched, f"{name}: its filter matches none of the {len(service_logs)} lines the service wrote"
    if named_event_types(metric["filter"]):
        assert {field(e, "jsonPayload.event_type") for e in matched} <= named_event_types(metric["filter"])
    if "valueExtractor" in metric:
        values = [field(e, extracted_field(metric["valueExtractor"])) for e in matched]
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values), values
    for label, extractor in metric.get("labelExtractors", {}).items():
        assert any(field(e, extracted_field(extractor)) not in (None, "") for e in matched), f"{name}: label {label} always empty"


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_is_declared_consistently(name):
    metric, descriptor = METRICS[name], METRICS[name]["metricDescriptor"]
    assert metric["description"] and descriptor["metricKind"] == "DELTA"
    assert {label["key"] for label in descriptor.get("labels", [])} == set(metric.get("labelExtractors", {}))
    distribution = descriptor["valueType"] == "DISTRIBUTION"
    assert distribution == ("valueExtractor" in metric) == ("bucketOptions" in metric)
    assert distribution or descriptor["valueType"] == "INT64"
    assert 'resource.type="cloud_run_revision"' in metric["filter"]


def monitoring_references(document: Any) -> list[tuple[str, set[str]]]:
    """(metric type, labels it names) for every Monitoring filter and aggregation in a dashboard or policy."""
    found: list[tuple[str, set[str]]] = []

    def walk(node: Any, labels_in_scope: set[str]) -> None:
        if isinstance(node, dict):
            here = set(labels_in_scope)
            for key in ("aggregation", "aggregations", "denominatorAggregations"):
                for aggregation in ([node[key]] if isinstance(node.get(key), dict) else node.get(key, [])):
                    here |= {re.sub(r'metric\.labels?\."?([\w]+)"?', r"\1", g) for g in aggregation.get("groupByFields", [])
                             if g.startswith("metric.")}
            for key in ("filter", "denominatorFilter"):
                if isinstance(node.get(key), str):
                    [metric_type] = re.findall(r'metric\.type="([^"]+)"', node[key])
                    named = set(re.findall(r'metric\.labels?\."?(\w+)"?\s*!?=', node[key]))
                    found.append((metric_type, named | here))
            for value in node.values():
                walk(value, here)
        elif isinstance(node, list):
            for value in node:
                walk(value, labels_in_scope)

    walk(document, set())
    return found


def assert_only_created_metrics(references: list[tuple[str, set[str]]]) -> set[str]:
    used = set()
    for metric_type, labels in references:
        if metric_type in BUILT_IN:
            continue
        assert metric_type.startswith(USER_METRIC), metric_type
        name = metric_type[len(USER_METRIC):]
        assert name in METRICS, f"{name} is not created by deploy/setup.sh (deploy/metrics/)"
        assert labels <= set(METRICS[name].get("labelExtractors", {})), (name, labels)
        used.add(name)
    return used


def test_the_dashboard_shows_only_metrics_setup_creates_and_all_of_them():
    references = monitoring_references(DASHBOARD)
    assert len(references) >= len(METRICS)
    assert assert_only_created_metrics(references) == set(METRICS)
    titles = [tile["widget"]["title"] for tile in DASHBOARD["mosaicLayout"]["tiles"]]
    assert len(titles) == len(set(titles))
    for title in ("Clone success rate", "Pre-call processing time", "Agent update success rate (patch mode)",
                  "Warnings and errors by type", "ElevenLabs API response time (p95) by endpoint",
                  "Twilio caller's wait on hold (end of recording to connected)", "Twilio fallbacks by reason"):
        assert title in titles  # the panels an operator looks at first


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_each_alert_policy_uses_created_metrics_with_aligners_their_kind_allows(name):
    policy = ALERTS[name]
    assert policy["displayName"].startswith("Pre-call: ") and policy["documentation"]["content"]
    assert_only_created_metrics(monitoring_references(policy))
    for condition in policy["conditions"]:
        threshold = condition["conditionThreshold"]
        [metric_type] = re.findall(r'metric\.type="([^"]+)"', threshold["filter"])
        metric = METRICS.get(metric_type.removeprefix(USER_METRIC))
        aggregations = threshold["aggregations"] + threshold.get("denominatorAggregations", [])
        allowed = DISTRIBUTION_ALIGNERS if metric and metric["metricDescriptor"]["valueType"] == "DISTRIBUTION" else COUNTER_ALIGNERS
        assert {a["perSeriesAligner"] for a in aggregations} <= allowed
        assert len({a["alignmentPeriod"] for a in aggregations}) == 1  # a ratio needs one period on both sides
        assert ("denominatorFilter" in threshold) == ("denominatorAggregations" in threshold)
        assert threshold["comparison"] == "COMPARISON_GT" and re.fullmatch(r"\d+s", threshold["duration"])


def test_the_alerts_cover_overdue_clones_full_slots_and_the_error_rate():
    used = {metric_type.removeprefix(USER_METRIC) for policy in ALERTS.values()
            for metric_type, _ in monitoring_references(policy)}
    assert {"precall_clones_overdue", "precall_voice_slots_used", "precall_voice_limit", "precall_voice_clones",
            "run.googleapis.com/request_count", "precall_postcall_webhook_unhealthy", "precall_twilio_calls_connected"} <= used


def metric_points(name: str, entries: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The label values a log-based metric records for the lines its filter matches (EXTRACT of a JSON
    boolean gives "true" / "false")."""
    metric = METRICS[name]
    points = []
    for entry in (e for e in entries if matches(metric["filter"], e)):
        values = {label: field(entry, extracted_field(extractor)) for label, extractor in metric["labelExtractors"].items()}
        points.append({k: ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in values.items()})
    return points


def selected(monitoring_filter: str, points: list[dict[str, str]]) -> list[dict[str, str]]:
    conditions = re.findall(r'metric\.label\."(\w+)"(!?=)"([^"]*)"', monitoring_filter)
    return [p for p in points if all((p.get(k) == v) == (op == "=") for k, op, v in conditions)]


def test_the_own_voice_alert_counts_consented_calls_connected_without_their_clone(service_logs):
    [condition] = ALERTS["twilio-own-voice-fallbacks.json"]["conditions"]
    threshold = condition["conditionThreshold"]
    points = metric_points("precall_twilio_calls_connected", service_logs)
    assert sorted((p["via"], p["clone_used"]) for p in points) == [("consent_refused", "false"), ("recording", "false"),
                                                                  ("recording", "true")]
    numerator, denominator = selected(threshold["filter"], points), selected(threshold["denominatorFilter"], points)
    assert (len(numerator), len(denominator)) == (1, 2)  # the refusal is the caller's choice, not counted
    assert len(numerator) / len(denominator) > threshold["thresholdValue"] == 0.1
    fallbacks = {p["reason"] for p in metric_points("precall_twilio_fallbacks", service_logs)}
    assert {"consent_refused", "clone_failed"} <= fallbacks
    waits = [field(e, "jsonPayload.wait_ms") for e in service_logs if matches(METRICS["precall_twilio_wait_time"]["filter"], e)]
    assert len(waits) == 2 and all(w >= 0 for w in waits)


def test_the_documented_log_queries_parse_and_name_events_the_service_writes(service_logs):
    queries = [c[2] for c in documented_gcloud_commands() if c[:2] == ["logging", "read"]]
    assert len(queries) >= 5
    written = {field(e, "jsonPayload.event_type") for e in service_logs}
    for query in queries:
        matches(query, service_logs[0])  # parses
        assert named_event_types(query) <= written | {"voice_delete_failed"}, query


def test_the_filter_evaluator_reads_cloud_loggings_subset_and_refuses_the_rest():
    entry = log_entry(json.dumps({"severity": "WARNING", "message": "m", "event_type": "webhook_error", "http_status": 401,
                                  "existed": True, "time": "2026-01-01T00:00:00+00:00"}), "precall-webhook")
    assert entry["jsonPayload"].keys() == {"message", "event_type", "http_status", "existed"}
    assert matches('jsonPayload.event_type=("a" OR "webhook_error") AND severity>=WARNING', entry)
    assert not matches("severity>=ERROR", entry)
    # OR binds tighter than AND in Cloud Logging: this is (a OR b) AND c, which is false here
    assert not matches('jsonPayload.event_type="webhook_error" OR jsonPayload.http_status>=400 AND jsonPayload.existed=false',
                       entry)
    assert matches('jsonPayload.event_type="WEBHOOK_ERROR" jsonPayload.existed=true', entry)  # strings ignore case
    assert matches("jsonPayload.http_status:* NOT jsonPayload.reason:*", entry)
    for unsupported in ('jsonPayload.message:"substring"', "jsonPayload.x=~\"re\"", "jsonPayload.event_type=bare"):
        with pytest.raises(FilterSyntaxError):
            matches(unsupported, entry)
