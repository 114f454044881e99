#!/usr/bin/env bash
# build-old-glia.sh COMMIT BIN — builds glia at an earlier commit for the
# upgrade test: glia, glia-agent and glia-cni into BIN/images/glia-<commit>/
# (the lab's image catalog runs image glia:<commit> from there) and that
# commit's Helm chart into BIN/images/glia-<commit>/chart. COMMIT is a full
# or abbreviated hash; <commit> is its first 12 hex digits. The result is
# cached: a second run with the same commit does nothing.
set -euo pipefail
commit=${1:?usage: build-old-glia.sh COMMIT BIN}
bin=${2:?usage: build-old-glia.sh COMMIT BIN}
full=$(git rev-parse --verify "${commit}^{commit}") || { echo "build-old-glia: $commit is not a commit of this repository (fetch it first)" >&2; exit 2; }
short=${full:0:12}
out="$bin/images/glia-$short"
if [[ -x $out/glia && -x $out/glia-agent && -x $out/glia-cni && -f $out/chart/Chart.yaml ]]; then
	echo "==> glia $short already built in $out"
	exit 0
fi
tmp=$(mktemp -d)
trap 'git worktree remove --force "$tmp/src" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
echo "==> building glia, glia-agent, glia-cni at $short into $out"
start=$(date +%s)
git worktree add --detach "$tmp/src" "$full" >/dev/null
mkdir -p "$tmp/out"
(cd "$tmp/src" && go build -o "$tmp/out/" ./cmd/glia ./cmd/glia-agent ./cmd/glia-cni)
cp -r "$tmp/src/deploy/chart/glia" "$tmp/out/chart"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp/out" "$out"
echo "==> glia $short built in $(( $(date +%s) - start ))s"
