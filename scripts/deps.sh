#!/usr/bin/env bash
# Installs the Debian packages glia's build, lab and tests need, only those
# missing (so a warm machine spends no time here). Needs root.
set -euo pipefail
pkgs=(etcd-server iptables nftables iproute2 util-linux curl ca-certificates bpftool iperf3 wrk)
# `scripts/deps.sh generate` (make generate): the BPF compiler too.
if [ "${1:-}" = generate ]; then
  pkgs+=(clang-19 llvm-19)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "==> Debian packages: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "==> installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "==> Debian packages installed"
