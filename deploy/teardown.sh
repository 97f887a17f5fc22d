#!/usr/bin/env bash
# Remove everything deploy/setup.sh created, newest first (what produces events before what consumes
# them), so nothing is left running or billing. Asks first unless --yes.
#
#   deploy/teardown.sh [--project P] [--region R] [--yes] [--keep-secrets]
#
# Before: make sure no call is live and run `python -m cleanup status` with the production key:
# clones still in the ElevenLabs account are not touched here (python -m cleanup sweep --apply
# deletes the overdue ones). --keep-secrets keeps the secrets (for a later setup.sh).
# Services, names and the region are read from the same variables as setup.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

PROJECT_ID=${PROJECT_ID:-}
REGION=${REGION:-europe-west4}
REPOSITORY=${REPOSITORY:-precall}
TOPIC=${TOPIC:-voice-events}
DEAD_LETTER_TOPIC=${DEAD_LETTER_TOPIC:-voice-events-dead-letter}
SUBSCRIPTION=${SUBSCRIPTION:-voice-events-cleanup}
WEBHOOK_SERVICE=${WEBHOOK_SERVICE:-precall-webhook}
CLEANUP_SERVICE=${CLEANUP_SERVICE:-precall-cleanup}
API_KEY_SECRET=${API_KEY_SECRET:-elevenlabs-api-key}
WEBHOOK_SECRET_NAME=${WEBHOOK_SECRET_NAME:-elevenlabs-webhook-secret}
INIT_SECRET_NAME=${INIT_SECRET_NAME:-precall-init-webhook-secret}
TWILIO_SECRET_NAME=${TWILIO_SECRET_NAME:-twilio-auth-token}
ASSUME_YES=false
KEEP_SECRETS=false

while [ $# -gt 0 ]; do
  case "$1" in
    --project) PROJECT_ID=$2; shift 2 ;;
    --region) REGION=$2; shift 2 ;;
    --yes) ASSUME_YES=true; shift ;;
    --keep-secrets) KEEP_SECRETS=true; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see deploy/teardown.sh --help)" >&2; exit 2 ;;
  esac
done
[ -n "$PROJECT_ID" ] || PROJECT_ID=$(gcloud config get project 2>/dev/null || true)
[ -n "$PROJECT_ID" ] || { echo "set PROJECT_ID or pass --project" >&2; exit 2; }
BUILD_BUCKET=${BUILD_BUCKET:-${PROJECT_ID}-precall-builds}
BUILD_SA="precall-build@${PROJECT_ID}.iam.gserviceaccount.com"
G=(gcloud --project "$PROJECT_ID" --quiet)

if [ "$ASSUME_YES" = false ]; then
  echo "This deletes the pre-call services, topics, subscriptions (and their undelivered messages), sweep job,"
  echo "images, build sources, metrics, dashboard, alert policies$([ "$KEEP_SECRETS" = true ] || echo ', secrets')"
  echo "and service accounts in project $PROJECT_ID ($REGION)."
  read -r -p "Type the project id to go on: " answer
  [ "$answer" = "$PROJECT_ID" ] || { echo "nothing deleted" >&2; exit 1; }
fi

step() { printf '\n== %s\n' "$*"; }
gone() {  # a deletion that may find nothing to delete (a rerun, or a partial setup)
  "${G[@]}" "$@" >/dev/null 2>&1 || echo "  (not found: ${*:1:4})"
}
json_field() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

step "Sweep job, subscriptions, topics"
gone scheduler jobs delete precall-voice-sweep --location="$REGION"
gone pubsub subscriptions delete "$SUBSCRIPTION"
gone pubsub subscriptions delete "${DEAD_LETTER_TOPIC}-hold"
gone pubsub topics delete "$TOPIC"
gone pubsub topics delete "$DEAD_LETTER_TOPIC"

step "Cloud Run services"
gone run services delete "$WEBHOOK_SERVICE" --region="$REGION"
gone run services delete "$CLEANUP_SERVICE" --region="$REGION"

step "Alert policies, dashboard, log-based metrics"
for file in "$HERE"/alerts/*.json; do
  name=$(json_field "$file" displayName)
  for policy in $("${G[@]}" alpha monitoring policies list --filter="displayName=\"$name\"" --format='value(name)'); do
    gone alpha monitoring policies delete "$policy"
  done
done
dashboard_name=$(json_field "$HERE/dashboard.json" displayName)
for dashboard in $("${G[@]}" monitoring dashboards list --filter="displayName=\"$dashboard_name\"" --format='value(name)'); do
  gone monitoring dashboards delete "$dashboard"
done
for file in "$HERE"/metrics/*.yaml; do
  gone logging metrics delete "$(basename "$file" .yaml)"
done

step "Images, build sources and the build identity's project roles"
gone artifacts repositories delete "$REPOSITORY" --location="$REGION"
gone storage rm --recursive "gs://$BUILD_BUCKET"
for role in roles/logging.logWriter roles/run.developer; do
  gone projects remove-iam-policy-binding "$PROJECT_ID" --member="serviceAccount:$BUILD_SA" --role="$role" --condition=None
done

if [ "$KEEP_SECRETS" = false ]; then
  step "Secrets"
  for secret in "$API_KEY_SECRET" "$WEBHOOK_SECRET_NAME" "$INIT_SECRET_NAME" "$TWILIO_SECRET_NAME"; do
    gone secrets delete "$secret"
  done
fi

step "Service accounts"
for sa in precall-webhook precall-cleanup precall-push precall-build; do
  gone iam service-accounts delete "${sa}@${PROJECT_ID}.iam.gserviceaccount.com"
done

step "Done. Left alone: enabled APIs, email notification channels, and the clones and webhooks in ElevenLabs"
echo "  (delete the post-call and initiation webhooks there, or they keep calling a URL that no longer exists)."
