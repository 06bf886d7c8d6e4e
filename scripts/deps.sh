#!/usr/bin/env bash
# Installs what the project needs on Debian 12, when it is missing:
# MariaDB (server, client, backup), sysbench, Galera and its arbitrator (the
# baselines benchmarks and consistency tests compare against) and nftables
# (network partitions in multi-host tests) and HAProxy (the load balancer the
# failover test puts in front of the nodes). Needs root or sudo.
set -euo pipefail

packages=(mariadb-server mariadb-client mariadb-backup sysbench galera-4 galera-arbitrator-4 rsync nftables python3-pymysql haproxy)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "==> installing ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "==> cargo is in ~/.cargo/bin but not on PATH: run 'source ~/.cargo/env'" >&2
  else
    echo "==> cargo not found: install a stable Rust toolchain (rustup), then run this again" >&2
  fi
  exit 1
fi
