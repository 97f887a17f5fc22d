#!/usr/bin/env bash
# Google Cloud setup, deploy and redeploy of the pre-call voice-clone service. Idempotent: rerun it
# whenever a setting, a size or a secret changes.
#
#   ELEVENLABS_API_KEY=sk_... ELEVENLABS_AGENT_ID=agent_... [ELEVENLABS_WEBHOOK_SECRET=wsec_...] \
#     [AGENT_UPDATE_MODE=override] [INIT_WEBHOOK_SECRET=...] [ALERT_EMAIL=ops@example.com] \
#     [WEBHOOK_MIN_INSTANCES=1] [WEBHOOK_MAX_INSTANCES=10] [WEBHOOK_CPU=2] [WEBHOOK_MEMORY=1Gi] \
#     [WEBHOOK_CONCURRENCY=32] [CLEANUP_MIN_INSTANCES=0] [CLEANUP_MAX_INSTANCES=3] [CLEANUP_...] \
#     deploy/setup.sh [--project P] [--region R] [--skip-build | --redeploy]
#
#   --redeploy    build and deploy the code only (plus any setting or size given); nothing else
#   --skip-build  everything but the build (infrastructure, access, lifecycle, monitoring)
#
# Creates or updates, each only when missing or changed: the APIs; the Artifact Registry repository
# with a cleanup policy; a bucket for build sources; the secrets (a new version only when a value
# changed; the initiation-webhook secret, and on a first run without ELEVENLABS_WEBHOOK_SECRET a
# temporary webhook secret, are generated); four service accounts with least privilege (webhook,
# cleanup, push identity, build); the topics; the build (cloudbuild.yaml, as the build account);
# public access to the webhook only; the push subscription, the dead-letter hold subscription and
# the sweep job; log-based metrics, the dashboard and alert policies (deploy/metrics, dashboard.json, alerts).
# Sizes and settings not given keep what the services have. Never prints a secret.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")

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
SWEEP_SCHEDULE=${SWEEP_SCHEDULE:-*/30 * * * *}
MODE=all

while [ $# -gt 0 ]; do
  case "$1" in
    --project) PROJECT_ID=$2; shift 2 ;;
    --region) REGION=$2; shift 2 ;;
    --skip-build) MODE=infrastructure; shift ;;
    --redeploy) MODE=redeploy; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see deploy/setup.sh --help)" >&2; exit 2 ;;
  esac
done
[ -n "$PROJECT_ID" ] || PROJECT_ID=$(gcloud config get project 2>/dev/null || true)
[ -n "$PROJECT_ID" ] || { echo "set PROJECT_ID, pass --project, or run: gcloud config set project MY_PROJECT" >&2; exit 2; }

G=(gcloud --project "$PROJECT_ID" --quiet)
PROJECT_NUMBER=$("${G[@]}" projects describe "$PROJECT_ID" --format='value(projectNumber)')
WEBHOOK_SA="precall-webhook@${PROJECT_ID}.iam.gserviceaccount.com"
CLEANUP_SA="precall-cleanup@${PROJECT_ID}.iam.gserviceaccount.com"
PUSH_SA="precall-push@${PROJECT_ID}.iam.gserviceaccount.com"
BUILD_SA="precall-build@${PROJECT_ID}.iam.gserviceaccount.com"
PUBSUB_AGENT="service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
BUILD_BUCKET=${BUILD_BUCKET:-${PROJECT_ID}-precall-builds}
SECRETS_CHANGED=false
GENERATED_WEBHOOK_SECRET=false

step() { printf '\n== %s\n' "$*"; }

ensure_secret() {  # name, the environment variable with its value; a new version only when the value changed
  local name=$1 value=${!2:-}
  if "${G[@]}" secrets describe "$name" >/dev/null 2>&1; then
    [ -z "$value" ] && return 0
    [ "$("${G[@]}" secrets versions access latest --secret="$name" 2>/dev/null || true)" = "$value" ] && return 0
    printf '%s' "$value" | "${G[@]}" secrets versions add "$name" --data-file=- >/dev/null
    SECRETS_CHANGED=true
    echo "  $name: new version added"
  else
    [ -n "$value" ] || { echo "secret $name does not exist: set $2 to create it" >&2; exit 2; }
    printf '%s' "$value" | "${G[@]}" secrets create "$name" --replication-policy=automatic --data-file=- >/dev/null
    echo "  $name: created"
  fi
}

random_secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

ensure_sa() {  # short name, display name
  "${G[@]}" iam service-accounts describe "$1@${PROJECT_ID}.iam.gserviceaccount.com" >/dev/null 2>&1 \
    || "${G[@]}" iam service-accounts create "$1" --display-name="$2" >/dev/null
}

ensure_topic() {
  "${G[@]}" pubsub topics describe "$1" >/dev/null 2>&1 || "${G[@]}" pubsub topics create "$1" >/dev/null
}

# Dashboard and alert files name the default services and subscription; use the configured ones.
render() {
  sed -e "s/precall-webhook/${WEBHOOK_SERVICE}/g" -e "s/precall-cleanup/${CLEANUP_SERVICE}/g" \
      -e "s/voice-events-cleanup/${SUBSCRIPTION}/g" "$1"
}

json_field() {  # file, top-level string field
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

build_and_deploy() {
  step "Build and deploy (cloudbuild.yaml) as $BUILD_SA"
  local substitutions
  substitutions="_REGION=${REGION},_REPOSITORY=${REPOSITORY},_TOPIC=${TOPIC},_WEBHOOK_SERVICE=${WEBHOOK_SERVICE}"
  substitutions+=",_CLEANUP_SERVICE=${CLEANUP_SERVICE},_API_KEY_SECRET=${API_KEY_SECRET},_WEBHOOK_SECRET_NAME=${WEBHOOK_SECRET_NAME}"
  substitutions+=",_INIT_SECRET_NAME=${INIT_SECRET_NAME},_AGENT_ID=${ELEVENLABS_AGENT_ID:-},_AGENT_UPDATE_MODE=${AGENT_UPDATE_MODE:-}"
  local size
  for size in MIN_INSTANCES MAX_INSTANCES CPU MEMORY CONCURRENCY; do
    local webhook="WEBHOOK_$size" cleanup="CLEANUP_$size"
    substitutions+=",_WEBHOOK_${size}=${!webhook:-},_CLEANUP_${size}=${!cleanup:-}"
  done
  "${G[@]}" builds submit "$ROOT" --config="$ROOT/cloudbuild.yaml" --region="$REGION" \
    --service-account="projects/${PROJECT_ID}/serviceAccounts/${BUILD_SA}" \
    --gcs-source-staging-dir="gs://${BUILD_BUCKET}/source" --substitutions="$substitutions"
}

if [ "$MODE" = redeploy ]; then
  build_and_deploy
  exit 0
fi

step "APIs"
"${G[@]}" services enable run.googleapis.com pubsub.googleapis.com secretmanager.googleapis.com \
  cloudscheduler.googleapis.com artifactregistry.googleapis.com cloudbuild.googleapis.com iam.googleapis.com \
  storage.googleapis.com logging.googleapis.com monitoring.googleapis.com

step "Artifact Registry repository $REPOSITORY (keeps the 10 newest images, deletes others after 30 days)"
"${G[@]}" artifacts repositories describe "$REPOSITORY" --location="$REGION" >/dev/null 2>&1 \
  || "${G[@]}" artifacts repositories create "$REPOSITORY" --repository-format=docker --location="$REGION"
"${G[@]}" artifacts repositories set-cleanup-policies "$REPOSITORY" --location="$REGION" \
  --policy="$HERE/artifact-cleanup-policy.json" --no-dry-run >/dev/null

step "Build source bucket gs://$BUILD_BUCKET (sources deleted after 30 days)"
"${G[@]}" storage buckets describe "gs://$BUILD_BUCKET" >/dev/null 2>&1 \
  || "${G[@]}" storage buckets create "gs://$BUILD_BUCKET" --location="$REGION" --uniform-bucket-level-access \
       --lifecycle-file="$HERE/build-source-lifecycle.json" >/dev/null

step "Secrets (values never printed)"
ensure_secret "$API_KEY_SECRET" ELEVENLABS_API_KEY
if [ -z "${ELEVENLABS_WEBHOOK_SECRET:-}" ] && ! "${G[@]}" secrets describe "$WEBHOOK_SECRET_NAME" >/dev/null 2>&1; then
  # ElevenLabs generates its post-call HMAC secret only once the webhook exists, which needs this URL:
  # start with a temporary one, replace it after creating the webhook (printed at the end).
  ELEVENLABS_WEBHOOK_SECRET=$(random_secret)
  GENERATED_WEBHOOK_SECRET=true
fi
ensure_secret "$WEBHOOK_SECRET_NAME" ELEVENLABS_WEBHOOK_SECRET
if [ -z "${INIT_WEBHOOK_SECRET:-}" ] && ! "${G[@]}" secrets describe "$INIT_SECRET_NAME" >/dev/null 2>&1; then
  INIT_WEBHOOK_SECRET=$(random_secret)  # generated once, kept in Secret Manager
fi
ensure_secret "$INIT_SECRET_NAME" INIT_WEBHOOK_SECRET

step "Service accounts, least privilege"
ensure_sa precall-webhook "Pre-call webhook (Cloud Run)"
ensure_sa precall-cleanup "Voice cleanup (Cloud Run)"
ensure_sa precall-push "Pub/Sub push identity for voice cleanup"
ensure_sa precall-build "Cloud Build: builds and deploys the pre-call services"
for secret in "$API_KEY_SECRET" "$WEBHOOK_SECRET_NAME" "$INIT_SECRET_NAME"; do
  "${G[@]}" secrets add-iam-policy-binding "$secret" --member="serviceAccount:$WEBHOOK_SA" \
    --role=roles/secretmanager.secretAccessor >/dev/null
done
"${G[@]}" secrets add-iam-policy-binding "$API_KEY_SECRET" --member="serviceAccount:$CLEANUP_SA" \
  --role=roles/secretmanager.secretAccessor >/dev/null
# The build identity: write build logs, push to this repository only, read its own sources, deploy
# Cloud Run services (run.developer: no IAM changes) that run as the two runtime accounts only.
"${G[@]}" projects add-iam-policy-binding "$PROJECT_ID" --member="serviceAccount:$BUILD_SA" \
  --role=roles/logging.logWriter --condition=None >/dev/null
"${G[@]}" projects add-iam-policy-binding "$PROJECT_ID" --member="serviceAccount:$BUILD_SA" \
  --role=roles/run.developer --condition=None >/dev/null
"${G[@]}" artifacts repositories add-iam-policy-binding "$REPOSITORY" --location="$REGION" \
  --member="serviceAccount:$BUILD_SA" --role=roles/artifactregistry.writer >/dev/null
"${G[@]}" storage buckets add-iam-policy-binding "gs://$BUILD_BUCKET" --member="serviceAccount:$BUILD_SA" \
  --role=roles/storage.objectViewer >/dev/null
for sa in "$WEBHOOK_SA" "$CLEANUP_SA"; do
  "${G[@]}" iam service-accounts add-iam-policy-binding "$sa" --member="serviceAccount:$BUILD_SA" \
    --role=roles/iam.serviceAccountUser >/dev/null
done

step "Topics $TOPIC and $DEAD_LETTER_TOPIC"
ensure_topic "$TOPIC"
ensure_topic "$DEAD_LETTER_TOPIC"
"${G[@]}" pubsub topics add-iam-policy-binding "$TOPIC" --member="serviceAccount:$WEBHOOK_SA" \
  --role=roles/pubsub.publisher >/dev/null
# Pub/Sub itself forwards undeliverable messages to the dead-letter topic.
"${G[@]}" pubsub topics add-iam-policy-binding "$DEAD_LETTER_TOPIC" --member="serviceAccount:$PUBSUB_AGENT" \
  --role=roles/pubsub.publisher >/dev/null

if [ "$MODE" = all ]; then
  build_and_deploy
elif [ "$SECRETS_CHANGED" = true ]; then
  step "Secrets changed: new revisions read the new versions"
  for service in "$WEBHOOK_SERVICE" "$CLEANUP_SERVICE"; do
    "${G[@]}" run services update "$service" --region="$REGION" \
      --update-labels="precall-secrets-rolled=$(date -u +%Y%m%dt%H%M%S)" >/dev/null
  done
fi

WEBHOOK_URL=$("${G[@]}" run services describe "$WEBHOOK_SERVICE" --region="$REGION" --format='value(status.url)')
CLEANUP_URL=$("${G[@]}" run services describe "$CLEANUP_SERVICE" --region="$REGION" --format='value(status.url)')

step "Access: $WEBHOOK_SERVICE public (it checks signatures itself), $CLEANUP_SERVICE only for $PUSH_SA"
# Disabling the invoker check (rather than granting allUsers) also works under domain-restricted sharing.
"${G[@]}" run services update "$WEBHOOK_SERVICE" --region="$REGION" --no-invoker-iam-check >/dev/null
"${G[@]}" run services add-iam-policy-binding "$CLEANUP_SERVICE" --region="$REGION" \
  --member="serviceAccount:$PUSH_SA" --role=roles/run.invoker >/dev/null

step "Push subscription $SUBSCRIPTION -> $CLEANUP_SERVICE (OIDC as $PUSH_SA)"
# Lets Pub/Sub mint OIDC tokens for the push identity (needed on projects created before 2021).
"${G[@]}" iam service-accounts add-iam-policy-binding "$PUSH_SA" --member="serviceAccount:$PUBSUB_AGENT" \
  --role=roles/iam.serviceAccountTokenCreator >/dev/null
subscription_flags=(
  --push-endpoint="$CLEANUP_URL/"
  --push-auth-service-account="$PUSH_SA"
  --ack-deadline=60
  --min-retry-delay=10s
  --max-retry-delay=600s
  --dead-letter-topic="$DEAD_LETTER_TOPIC"
  --max-delivery-attempts=100
)
if "${G[@]}" pubsub subscriptions describe "$SUBSCRIPTION" >/dev/null 2>&1; then
  "${G[@]}" pubsub subscriptions update "$SUBSCRIPTION" "${subscription_flags[@]}" >/dev/null
else
  "${G[@]}" pubsub subscriptions create "$SUBSCRIPTION" --topic="$TOPIC" "${subscription_flags[@]}" >/dev/null
fi
"${G[@]}" pubsub subscriptions add-iam-policy-binding "$SUBSCRIPTION" --member="serviceAccount:$PUBSUB_AGENT" \
  --role=roles/pubsub.subscriber >/dev/null
"${G[@]}" pubsub subscriptions describe "${DEAD_LETTER_TOPIC}-hold" >/dev/null 2>&1 \
  || "${G[@]}" pubsub subscriptions create "${DEAD_LETTER_TOPIC}-hold" --topic="$DEAD_LETTER_TOPIC" \
       --message-retention-duration=7d >/dev/null

step "Cloud Scheduler sweep job ($SWEEP_SCHEDULE)"
scheduler_flags=(--location="$REGION" --schedule="$SWEEP_SCHEDULE" --topic="$TOPIC"
                 --message-body='{"event_type":"sweep"}')
if "${G[@]}" scheduler jobs describe precall-voice-sweep --location="$REGION" >/dev/null 2>&1; then
  "${G[@]}" scheduler jobs update pubsub precall-voice-sweep "${scheduler_flags[@]}" \
    --update-attributes=event_type=sweep >/dev/null
else
  "${G[@]}" scheduler jobs create pubsub precall-voice-sweep "${scheduler_flags[@]}" \
    --attributes=event_type=sweep >/dev/null
fi

step "Log-based metrics (deploy/metrics)"
for file in "$HERE"/metrics/*.yaml; do
  metric=$(basename "$file" .yaml)
  if "${G[@]}" logging metrics describe "$metric" >/dev/null 2>&1; then
    "${G[@]}" logging metrics update "$metric" --config-from-file="$file" >/dev/null
  else
    "${G[@]}" logging metrics create "$metric" --config-from-file="$file" >/dev/null
  fi
done

step "Dashboard (deploy/dashboard.json)"
dashboard_name=$(json_field "$HERE/dashboard.json" displayName)
dashboard=$("${G[@]}" monitoring dashboards list --filter="displayName=\"$dashboard_name\"" --format='value(name)' | head -n1)
if [ -n "$dashboard" ]; then
  "${G[@]}" monitoring dashboards update "$dashboard" --config="$(render "$HERE/dashboard.json")" >/dev/null
else
  "${G[@]}" monitoring dashboards create --config="$(render "$HERE/dashboard.json")" >/dev/null
fi

step "Alert policies (deploy/alerts)${ALERT_EMAIL:+, notifying $ALERT_EMAIL}"
channel_flags=()
if [ -n "${ALERT_EMAIL:-}" ]; then
  channel=$("${G[@]}" beta monitoring channels list --filter="type=\"email\" AND labels.email_address=\"$ALERT_EMAIL\"" \
    --format='value(name)' | head -n1)
  if [ -z "$channel" ]; then
    channel=$("${G[@]}" beta monitoring channels create --type=email --display-name="Pre-call alerts ($ALERT_EMAIL)" \
      --channel-labels="email_address=$ALERT_EMAIL" --format='value(name)')
  fi
  channel_flags=(--notification-channels="$channel")
fi
for file in "$HERE"/alerts/*.json; do
  name=$(json_field "$file" displayName)
  policy=$("${G[@]}" alpha monitoring policies list --filter="displayName=\"$name\"" --format='value(name)' | head -n1)
  if [ -n "$policy" ]; then
    update_flags=()
    if [ -n "${ALERT_EMAIL:-}" ]; then update_flags=(--set-notification-channels="$channel"); fi
    "${G[@]}" alpha monitoring policies update "$policy" --policy="$(render "$file")" "${update_flags[@]}" >/dev/null
  else
    "${G[@]}" alpha monitoring policies create --policy="$(render "$file")" "${channel_flags[@]}" >/dev/null
  fi
done

step "Done. Configure ElevenLabs (docs/connecting-elevenlabs.md):"
echo "  post-call webhook (workspace webhook, HMAC, events: transcript and call initiation failure, not audio):"
echo "    ${WEBHOOK_URL}/post-call"
echo "  conversation initiation webhook (agent Security tab), request header X-Precall-Secret with the value of"
echo "    gcloud secrets versions access latest --secret=$INIT_SECRET_NAME --project=$PROJECT_ID"
echo "    ${WEBHOOK_URL}/conversation-init"
echo "  voice samples from your telephony side (signed, with call_sid): ${WEBHOOK_URL}/webhook"
echo "  health check: ${WEBHOOK_URL}/healthz    dashboard: Monitoring > Dashboards > $dashboard_name"
if [ "$GENERATED_WEBHOOK_SECRET" = true ]; then
  echo
  echo "  NEXT: the webhook secret is a temporary one. Create the post-call webhook in ElevenLabs with the URL"
  echo "  above, copy the HMAC secret ElevenLabs shows, then run:"
  echo "    ELEVENLABS_WEBHOOK_SECRET=<that secret> deploy/setup.sh --project $PROJECT_ID --region $REGION --skip-build"
fi
if [ -z "${ALERT_EMAIL:-}" ]; then
  echo "  Alerts show in the console only: rerun with ALERT_EMAIL=you@example.com to be notified by email."
fi
