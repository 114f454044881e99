#!/usr/bin/env bash
# Runs `go build -v ARGS...` and turns the package list it prints into one
# progress line, so a multi-minute build shows it is moving.
set -uo pipefail
label=$1; shift
start=$(date +%s)
n=0
go build -v "$@" 2>&1 | while IFS= read -r line; do
  case "$line" in
    *" "*|*:*) echo; echo "$line" ;;  # compiler errors and warnings pass through
    *) n=$((n+1)); printf '\r  %s: %d packages compiled (%ds)' "$label" "$n" $(( $(date +%s) - start )) ;;
  esac
done
rc=${PIPESTATUS[0]}
printf '\r  %s: done in %ds%40s\n' "$label" $(( $(date +%s) - start )) ""
exit $rc
