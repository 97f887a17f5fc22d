#!/usr/bin/env bash
# A stand-in for `gcloud` that records every call in $GCLOUD_RECORD (each argument ends with \x1f,
# each call with \x1e: arguments may hold newlines) and answers what the deploy scripts read: a
# project, a project number, service URLs, and whether a resource exists ($GCLOUD_STATE: `fresh`,
# nothing exists; `existing`, everything does).
set -u
{ printf '%s\x1f' "$@"; printf '\x1e'; } >> "$GCLOUD_RECORD"
case " $* " in *" --data-file=- "*) cat >/dev/null ;; esac  # reads the secret from stdin, as gcloud does
words=() format=""
while [ $# -gt 0 ]; do
  case "$1" in
    --project) shift 2; continue ;;  # `--project P` as setup.sh passes it: P is no command word
    --format=*) format=${1#--format=} ;;
    -*) ;;
    *) words+=("$1") ;;
  esac
  shift
done
existing=false
[ "${GCLOUD_STATE:-fresh}" = existing ] && existing=true
joined=" ${words[*]} "

case "$joined" in
  " config get "*) echo my-project; exit 0 ;;
  " projects describe "*) echo 123456789; exit 0 ;;
  *" secrets versions access "*) $existing && { echo old-value; exit 0; }; exit 1 ;;
esac
if [ "$format" = "value(status.url)" ]; then echo "https://${words[3]}-abc.a.run.app"; exit 0; fi
case "$joined" in
  *" list "*) $existing && echo "projects/123456789/things/abc"; exit 0 ;;
  *" create "*) [ "$format" = "value(name)" ] && echo "projects/123456789/notificationChannels/42"; exit 0 ;;
  *" describe "*) $existing && exit 0; exit 1 ;;
esac
exit 0
