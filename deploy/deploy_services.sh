#!/usr/bin/env bash
# Deploy both Cloud Run services from one image. Run by cloudbuild.yaml's deploy step (in Cloud
# Build, as the build service account), its substitutions arriving as environment variables.
#
# Empty settings and sizing keep what the running service has: a redeploy changes the code and
# only what is given, never blanks ELEVENLABS_AGENT_ID. A service's first deploy takes the defaults
# below for empty sizing. Settings set by hand (gcloud run services update --update-env-vars=...)
# survive redeploys. Access is not touched here (the build identity cannot change IAM):
# deploy/setup.sh makes the webhook public and keeps cleanup private.
set -euo pipefail
: "${PROJECT_ID:?}" "${REGION:?}" "${IMAGE:?}" "${TOPIC:?}" "${WEBHOOK_SERVICE:?}" "${CLEANUP_SERVICE:?}"

# First-deploy sizing: min max cpu memory concurrency. The webhook keeps one warm instance (a caller's
# sample must not wait for a cold start) and 2 vCPUs for 32 concurrent calls (the benchmark's figures).
# Concurrency above 256 also needs THREADS (gunicorn threads per instance, serving.py) at least as high.
WEBHOOK_DEFAULTS=(1 10 2 1Gi 32)
CLEANUP_DEFAULTS=(0 3 1 512Mi 8)

exists() {
  gcloud run services describe "$1" --project="$PROJECT_ID" --region="$REGION" --format='value(metadata.name)' >/dev/null 2>&1
}

# The sizing flags to pass, one per line: what is given, else the default when the service is new, else none.
sizing() {  # new(true|false), given min max cpu memory concurrency, then the five defaults
  local new=$1 names=(--min-instances --max-instances --cpu --memory --concurrency) i value
  shift
  for i in 0 1 2 3 4; do
    value=${*:i+1:1}
    if [ -z "$value" ] && [ "$new" = true ]; then value=${*:i+6:1}; fi
    if [ -n "$value" ]; then printf '%s=%s\n' "${names[$i]}" "$value"; fi
  done
}

deploy() {  # service, target, service account, env vars, secrets, then flags of this service only
  local service=$1 target=$2 account=$3 env=$4 secrets=$5
  shift 5
  local new=false flags=()
  exists "$service" || new=true
  if [ "$service" = "$WEBHOOK_SERVICE" ]; then
    mapfile -t flags < <(sizing "$new" "${WEBHOOK_MIN_INSTANCES:-}" "${WEBHOOK_MAX_INSTANCES:-}" "${WEBHOOK_CPU:-}" \
      "${WEBHOOK_MEMORY:-}" "${WEBHOOK_CONCURRENCY:-}" "${WEBHOOK_DEFAULTS[@]}")
  else
    mapfile -t flags < <(sizing "$new" "${CLEANUP_MIN_INSTANCES:-}" "${CLEANUP_MAX_INSTANCES:-}" "${CLEANUP_CPU:-}" \
      "${CLEANUP_MEMORY:-}" "${CLEANUP_CONCURRENCY:-}" "${CLEANUP_DEFAULTS[@]}")
  fi
  echo "deploying $service ($target, $([ "$new" = true ] && echo new || echo update))"
  gcloud run deploy "$service" --quiet --project="$PROJECT_ID" --region="$REGION" --image="$IMAGE" \
    --service-account="${account}@${PROJECT_ID}.iam.gserviceaccount.com" \
    --update-env-vars="FUNCTION_TARGET=${target},${env}" --update-secrets="$secrets" "${flags[@]}" "$@"
}

settings="GOOGLE_CLOUD_PROJECT=${PROJECT_ID}"
if [ -n "${AGENT_ID:-}" ]; then settings+=",ELEVENLABS_AGENT_ID=${AGENT_ID}"; fi
webhook_settings="${settings},VOICE_EVENTS_TOPIC=projects/${PROJECT_ID}/topics/${TOPIC}"
if [ -n "${AGENT_UPDATE_MODE:-}" ]; then webhook_settings+=",AGENT_UPDATE_MODE=${AGENT_UPDATE_MODE}"; fi

deploy "$WEBHOOK_SERVICE" precall_webhook "${WEBHOOK_SA:-precall-webhook}" "$webhook_settings" \
  "ELEVENLABS_API_KEY=${API_KEY_SECRET}:latest,ELEVENLABS_WEBHOOK_SECRET=${WEBHOOK_SECRET_NAME}:latest,INIT_WEBHOOK_SECRET=${INIT_SECRET_NAME}:latest" \
  --timeout=120 --cpu-boost \
  --startup-probe=httpGet.path=/healthz,initialDelaySeconds=0,timeoutSeconds=1,periodSeconds=1,failureThreshold=30
deploy "$CLEANUP_SERVICE" cleanup_voices "${CLEANUP_SA:-precall-cleanup}" "$settings" \
  "ELEVENLABS_API_KEY=${API_KEY_SECRET}:latest" \
  --timeout=60
