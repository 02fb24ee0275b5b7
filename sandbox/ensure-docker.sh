#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`. When none does and we are root on a Debian-like
# system, install Debian's docker.io and start dockerd; otherwise say how to start one and fail.
set -euo pipefail

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

engine_up && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "nasloop: Docker engine not reachable. Start it (e.g. 'sudo systemctl start docker') or use --sandbox process." >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "installing Debian's docker.io ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "starting dockerd ..."
  nohup dockerd >/var/log/nasloop-dockerd.log 2>&1 &
fi

for _ in $(seq 1 60); do
  engine_up && { echo "Docker engine is up."; exit 0; }
  sleep 1
done
echo "nasloop: dockerd did not answer within 60 s; see /var/log/nasloop-dockerd.log" >&2
exit 1
