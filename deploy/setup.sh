#!/usr/bin/env bash
# One-time (and re-runnable) Google Cloud setup for the pre-call voice-clone service.
#
#   ELEVENLABS_API_KEY=sk_... ELEVENLABS_WEBHOOK_SECRET=wsec_... ELEVENLABS_AGENT_ID=agent_... \
#     [AGENT_UPDATE_MODE=override] [INIT_WEBHOOK_SECRET=...] deploy/setup.sh [--project P] [--region R] [--skip-build]
#
# Creates, each only if missing: the APIs, the Artifact Registry repository, the three secrets
# (the initiation-webhook header secret is generated when INIT_WEBHOOK_SECRET is not given),
# least-privilege service accounts, the topic and its dead-letter topic; runs cloudbuild.yaml
# (image + both Cloud Run services); then the authenticated push subscription to cleanup_voices,
# the Cloud Scheduler sweep job, and prints the URLs to paste into ElevenLabs.
set -euo pipefail

PROJECT_ID=${PROJECT_ID:-$(gcloud config get-value project 2>/dev/null || true)}
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
AGENT_UPDATE_MODE=${AGENT_UPDATE_MODE:-patch}
SWEEP_SCHEDULE=${SWEEP_SCHEDULE:-*/30 * * * *}
SKIP_BUILD=false

while [ $# -gt 0 ]; do
  case "$1" in
    --project) PROJECT_ID=$2; shift 2 ;;
    --region) REGION=$2; shift 2 ;;
    --skip-build) SKIP_BUILD=true; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$PROJECT_ID" ] || { echo "set PROJECT_ID or pass --project" >&2; exit 2; }

PROJECT_NUMBER=$(gcloud projects describe "$PROJECT_ID" --format='value(projectNumber)')
WEBHOOK_SA="precall-webhook@${PROJECT_ID}.iam.gserviceaccount.com"
CLEANUP_SA="precall-cleanup@${PROJECT_ID}.iam.gserviceaccount.com"
PUSH_SA="precall-push@${PROJECT_ID}.iam.gserviceaccount.com"
PUBSUB_AGENT="service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
BUILD_SA=${BUILD_SA:-${PROJECT_NUMBER}-compute@developer.gserviceaccount.com}
G=(gcloud --project "$PROJECT_ID" --quiet)

step() { printf '\n== %s\n' "$*"; }

ensure_secret() {  # name, value from the environment variable named by $2; a new version only when it changed
  local name=$1 value=${!2:-}
  if "${G[@]}" secrets describe "$name" >/dev/null 2>&1; then
    [ -z "$value" ] && return 0
    [ "$("${G[@]}" secrets versions access latest --secret="$name" 2>/dev/null || true)" = "$value" ] && return 0
    printf '%s' "$value" | "${G[@]}" secrets versions add "$name" --data-file=- >/dev/null
  else
    [ -n "$value" ] || { echo "secret $name does not exist: set $2 to create it" >&2; exit 2; }
    printf '%s' "$value" | "${G[@]}" secrets create "$name" --replication-policy=automatic --data-file=- >/dev/null
  fi
}

ensure_sa() {  # short name, display name
  "${G[@]}" iam service-accounts describe "$1@${PROJECT_ID}.iam.gserviceaccount.com" >/dev/null 2>&1 \
    || "${G[@]}" iam service-accounts create "$1" --display-name="$2" >/dev/null
}

ensure_topic() {
  "${G[@]}" pubsub topics describe "$1" >/dev/null 2>&1 || "${G[@]}" pubsub topics create "$1" >/dev/null
}

step "APIs"
"${G[@]}" services enable run.googleapis.com pubsub.googleapis.com secretmanager.googleapis.com \
  cloudscheduler.googleapis.com artifactregistry.googleapis.com cloudbuild.googleapis.com

step "Artifact Registry repository $REPOSITORY"
"${G[@]}" artifacts repositories describe "$REPOSITORY" --location="$REGION" >/dev/null 2>&1 \
  || "${G[@]}" artifacts repositories create "$REPOSITORY" --repository-format=docker --location="$REGION"

step "Secrets (values never printed)"
ensure_secret "$API_KEY_SECRET" ELEVENLABS_API_KEY
ensure_secret "$WEBHOOK_SECRET_NAME" ELEVENLABS_WEBHOOK_SECRET
if [ -z "${INIT_WEBHOOK_SECRET:-}" ] && ! "${G[@]}" secrets describe "$INIT_SECRET_NAME" >/dev/null 2>&1; then
  INIT_WEBHOOK_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')  # generated once, kept in Secret Manager
fi
ensure_secret "$INIT_SECRET_NAME" INIT_WEBHOOK_SECRET

step "Service accounts, least privilege"
ensure_sa precall-webhook "Pre-call webhook (Cloud Run)"
ensure_sa precall-cleanup "Voice cleanup (Cloud Run)"
ensure_sa precall-push "Pub/Sub push identity for voice cleanup"
for secret in "$API_KEY_SECRET" "$WEBHOOK_SECRET_NAME" "$INIT_SECRET_NAME"; do
  "${G[@]}" secrets add-iam-policy-binding "$secret" --member="serviceAccount:$WEBHOOK_SA" \
    --role=roles/secretmanager.secretAccessor >/dev/null
done
"${G[@]}" secrets add-iam-policy-binding "$API_KEY_SECRET" --member="serviceAccount:$CLEANUP_SA" \
  --role=roles/secretmanager.secretAccessor >/dev/null

step "Topics $TOPIC and $DEAD_LETTER_TOPIC"
ensure_topic "$TOPIC"
ensure_topic "$DEAD_LETTER_TOPIC"
"${G[@]}" pubsub topics add-iam-policy-binding "$TOPIC" --member="serviceAccount:$WEBHOOK_SA" \
  --role=roles/pubsub.publisher >/dev/null
# Pub/Sub itself forwards undeliverable messages to the dead-letter topic.
"${G[@]}" pubsub topics add-iam-policy-binding "$DEAD_LETTER_TOPIC" --member="serviceAccount:$PUBSUB_AGENT" \
  --role=roles/pubsub.publisher >/dev/null

if [ "$SKIP_BUILD" = false ]; then
  step "Build and deploy (cloudbuild.yaml), building as $BUILD_SA"
  for role in roles/run.admin roles/artifactregistry.writer roles/logging.logWriter; do
    "${G[@]}" projects add-iam-policy-binding "$PROJECT_ID" --member="serviceAccount:$BUILD_SA" \
      --role="$role" --condition=None >/dev/null
  done
  for sa in "$WEBHOOK_SA" "$CLEANUP_SA"; do
    "${G[@]}" iam service-accounts add-iam-policy-binding "$sa" --member="serviceAccount:$BUILD_SA" \
      --role=roles/iam.serviceAccountUser >/dev/null
  done
  "${G[@]}" builds submit "$(dirname "$0")/.." --config="$(dirname "$0")/../cloudbuild.yaml" \
    --region="$REGION" \
    --substitutions="_REGION=${REGION},_REPOSITORY=${REPOSITORY},_TOPIC=${TOPIC},_AGENT_ID=${ELEVENLABS_AGENT_ID:-},_WEBHOOK_SERVICE=${WEBHOOK_SERVICE},_CLEANUP_SERVICE=${CLEANUP_SERVICE},_API_KEY_SECRET=${API_KEY_SECRET},_WEBHOOK_SECRET_NAME=${WEBHOOK_SECRET_NAME},_INIT_SECRET_NAME=${INIT_SECRET_NAME},_AGENT_UPDATE_MODE=${AGENT_UPDATE_MODE}"
fi

WEBHOOK_URL=$("${G[@]}" run services describe "$WEBHOOK_SERVICE" --region="$REGION" --format='value(status.url)')
CLEANUP_URL=$("${G[@]}" run services describe "$CLEANUP_SERVICE" --region="$REGION" --format='value(status.url)')

step "Push subscription $SUBSCRIPTION -> $CLEANUP_SERVICE (OIDC as $PUSH_SA)"
"${G[@]}" run services add-iam-policy-binding "$CLEANUP_SERVICE" --region="$REGION" \
  --member="serviceAccount:$PUSH_SA" --role=roles/run.invoker >/dev/null
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

step "Done. Configure ElevenLabs (README: 'Connecting ElevenLabs'):"
echo "  post-call webhook (workspace webhook, HMAC secret = ELEVENLABS_WEBHOOK_SECRET,"
echo "    events: transcript and call initiation failure, not audio):   ${WEBHOOK_URL}/post-call"
echo "  conversation initiation webhook (agent Security tab), request header X-Precall-Secret"
echo "    with the value of: gcloud secrets versions access latest --secret=$INIT_SECRET_NAME"
echo "                                                                   ${WEBHOOK_URL}/conversation-init"
echo "  voice samples from your telephony side (signed, with call_sid): ${WEBHOOK_URL}/webhook"
echo "  health check:                                                   ${WEBHOOK_URL}/healthz"
