#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`. When none does and we are root on a Debian-like
# system, install Debian's docker.io and start dockerd; otherwise say how to start one and fail.
# With NASLOOP_RUNSC=1 (make docker-engine RUNSC=1), also install gVisor (Debian's runsc) and register it
# as the runtime `runsc` (nasloop --runtime runsc), reloading the engine's configuration without a restart.
set -euo pipefail

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

register_runsc() {
  command -v runsc >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >/dev/null; }
  docker info 2>/dev/null | grep -q 'Runtimes:.*runsc' && return 0
  mkdir -p /etc/docker
  # --network=none: this runsc build misjudges every network namespace as the host's on recent kernels
  # and refuses to start; sandbox containers have no network anyway.
  python3 - <<'PY'
import json, os
path = "/etc/docker/daemon.json"
cfg = json.load(open(path)) if os.path.exists(path) else {}
cfg.setdefault("runtimes", {})["runsc"] = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}
json.dump(cfg, open(path, "w"), indent=2)
PY
  kill -HUP "$(pidof dockerd)"
  for _ in $(seq 1 20); do docker info 2>/dev/null | grep -q 'Runtimes:.*runsc' && { echo "gVisor runtime 'runsc' registered."; return 0; }; sleep 0.5; done
  echo "nasloop: could not register runsc with the Docker engine" >&2
  return 1
}

if ! engine_up; then
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
    engine_up && { echo "Docker engine is up."; break; }
    sleep 1
  done
  engine_up || { echo "nasloop: dockerd did not answer within 60 s; see /var/log/nasloop-dockerd.log" >&2; exit 1; }
fi

if [ "${NASLOOP_RUNSC:-0}" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "nasloop: registering runsc needs root" >&2; exit 1; }
  register_runsc
fi
