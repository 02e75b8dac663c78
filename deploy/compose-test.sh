#!/usr/bin/env bash
# Runs docker-compose.yml for real (`make test-compose`, and `.ci/run`): a Docker engine of its
# own, a base image made with debootstrap (no registry is reachable on CI machines), the
# project's image built on it, stand-ins for the official images the compose file names
# (deploy/ci/images, tagged with those names so nothing is pulled), the stack brought up
# healthy, the end-to-end suite run through the gateway container's published port, an email
# at the SMTP catcher and a trace at the collector checked, then everything torn down and the
# engine stopped, on failure too. docs/operations.md, "The compose stack in CI".
#
# The engine's data root (base image, layers, build cache) stays in TASKHUB_CI_CACHE between
# runs; a run waits for any other run on the machine to finish (they would share it).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${TASKHUB_CI_CACHE:-/var/cache/taskhub-ci}
BASE_IMAGE=taskhub-ci/debian:bookworm
PYTHON_IMAGE=taskhub-ci/python:3.11
PROJECT=taskhub-ci
COMPOSE_FILES=(-f docker-compose.yml -f deploy/ci/docker-compose.ci.yml)
# Debian's client, the engine's own version (another docker client on the PATH may be newer
# than the engine speaks, or lack BuildKit).
DOCKER=/usr/bin/docker
STARTED=$SECONDS

say() { echo "[compose-test +$((SECONDS - STARTED))s] $*"; }

install_tools() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  [ -x "$DOCKER" ] || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v flock >/dev/null || missing+=(util-linux)
  [ ${#missing[@]} -eq 0 ] && return
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
}

# The host's Debian mirror, as its apt sources name it (one-line or deb822 format).
debian_mirror() {
  {
    grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
      sed -E 's/\[[^]]*\]//' | awk '{print $2}'
    grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
  } | grep -v -- '-security' | head -n1
}

# A run killed outright (no trap) leaves its engine running on the data root; two engines on
# one data root would corrupt it, so the next run stops that one first.
stop_orphan_engine() {
  local pid
  pid=$(cat "$CACHE/dockerd.pid" 2>/dev/null) || return 0
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    say "stopping the engine a killed run left behind (pid $pid)"
    kill "$pid"
    for _ in $(seq 30); do
      kill -0 "$pid" 2>/dev/null || return 0
      sleep 1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
}

start_engine() {
  mkdir -p "$CACHE/docker"
  stop_orphan_engine
  # The engine's sockets and state live in a short path of this run's own (a unix socket's
  # path is limited to 108 bytes). It does not inherit the lock (fd 9): the lock ends with
  # this script, whatever becomes of the engine.
  RUN_DIR=$(mktemp -d /tmp/taskhub-ci.XXXXXX)
  dockerd --data-root "$CACHE/docker" --exec-root "$RUN_DIR/exec" \
    --pidfile "$CACHE/dockerd.pid" --host "unix://$RUN_DIR/docker.sock" \
    >"$RUN_DIR/dockerd.log" 2>&1 9>&- &
  DOCKERD_PID=$!
  export DOCKER_HOST="unix://$RUN_DIR/docker.sock"
  for _ in $(seq 60); do
    "$DOCKER" version >/dev/null 2>&1 && return
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 1
  done
  tail -n 30 "$RUN_DIR/dockerd.log" >&2
  echo "dockerd did not start" >&2
  return 1
}

stop_engine() {
  [ -n "${DOCKERD_PID:-}" ] || return 0
  kill "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 30); do
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 1
  done
  kill -9 "$DOCKERD_PID" 2>/dev/null || true
  wait "$DOCKERD_PID" 2>/dev/null || true
  rm -rf "$RUN_DIR"
}

compose() { docker-compose -p "$PROJECT" "${COMPOSE_FILES[@]}" "$@"; }

cleanup() {
  local status=$?
  set +e
  if [ -n "${STACK_UP:-}" ]; then
    if [ "$status" -ne 0 ]; then
      compose ps
      compose logs --no-color --tail 40
    fi
    compose down --volumes --remove-orphans --timeout 15 >/dev/null 2>&1
  fi
  if [ -n "${DOCKERD_PID:-}" ]; then
    # Layers no tag refers to any more (the previous project image): the cache stays bounded.
    "$DOCKER" image prune --force >/dev/null 2>&1
    [ "$status" -ne 0 ] && tail -n 20 "$RUN_DIR/dockerd.log"
    stop_engine
  fi
  say "done (exit $status)"
  exit "$status"
}

# The base every image here starts from: Debian's minimal system from the host's mirror, made
# once and kept in the engine's data root.
make_base_image() {
  if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    return
  fi
  local mirror rootfs
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { echo "no Debian mirror in apt's sources" >&2; return 1; }
  rootfs="$RUN_DIR/rootfs"
  say "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$RUN_DIR/debootstrap.log" 2>&1 ||
    { tail -n 30 "$RUN_DIR/debootstrap.log" >&2; return 1; }
  # The host's own certificate authorities (e.g. of a proxy that inspects TLS), so that builds
  # reaching PyPI trust what the host trusts; ca-certificates adds them to the bundle.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  fi
  # A mirror may serve a snapshot whose Release files are past their Valid-Until date.
  echo 'Acquire::Check-Valid-Until "false";' >"$rootfs/etc/apt/apt.conf.d/99taskhub-ci"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$DOCKER" import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

build() {
  local tag=$1 context=$2
  shift 2
  DOCKER_BUILDKIT=1 "$DOCKER" build --quiet --tag "$tag" "$@" "$context" >/dev/null
}

# The image name docker-compose.yml gives a service.
image_of() {
  .venv/bin/python -c 'import sys, yaml
print(yaml.safe_load(open("docker-compose.yml"))["services"][sys.argv[1]]["image"])' "$1"
}

build_images() {
  say "building the Python base and the stand-ins"
  build "$PYTHON_IMAGE" deploy/ci/images/python --build-arg "DEBIAN=$BASE_IMAGE"
  # deploy/ci/images/<service>: the stand-in of that compose service's image, on either base
  # (tests/deploy/test_compose.py checks that every image but the project's has one).
  local folder service
  for folder in deploy/ci/images/*/; do
    service=$(basename "$folder")
    [ "$service" = python ] && continue
    build "$(image_of "$service")" "$folder" \
      --build-arg "DEBIAN=$BASE_IMAGE" --build-arg "PYTHON=$PYTHON_IMAGE"
  done
  say "building the project image"
  build "$(image_of gateway)" . --build-arg "BASE_IMAGE=$PYTHON_IMAGE"
}

free_port() {
  .venv/bin/python -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

main() {
  install_tools
  [ -x .venv/bin/python ] || make install
  mkdir -p "$CACHE"
  exec 9>"$CACHE/lock"
  say "waiting for the machine's other compose runs, if any"
  flock --wait 1800 9
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  start_engine
  say "engine up"
  make_base_image
  build_images

  # Free ports of this machine for what the stack publishes (the defaults may be taken).
  export GATEWAY_PORT RABBITMQ_UI_PORT MINIO_UI_PORT MAILPIT_UI_PORT JAEGER_UI_PORT SECRET_KEY
  GATEWAY_PORT=$(free_port)
  RABBITMQ_UI_PORT=$(free_port)
  MINIO_UI_PORT=$(free_port)
  MAILPIT_UI_PORT=$(free_port)
  JAEGER_UI_PORT=$(free_port)
  SECRET_KEY=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')

  say "starting the stack"
  STACK_UP=1
  # Whatever a killed run left (containers, volumes) goes first: each run starts empty.
  compose down --volumes --remove-orphans >/dev/null 2>&1 || true
  # Each service starts once those it depends on are healthy; up fails if one never is.
  compose up --detach --no-build
  .venv/bin/python deploy/ci/check_stack.py wait "http://127.0.0.1:$GATEWAY_PORT" 180
  say "stack healthy; running the end-to-end suite through the gateway container"
  E2E_COMPOSE_URL="http://127.0.0.1:$GATEWAY_PORT" \
    E2E_MAIL_API="http://127.0.0.1:$MAILPIT_UI_PORT" \
    .venv/bin/python -m pytest -q -p no:cacheprovider --basetemp="$RUN_DIR/pytest" tests/e2e
  say "checking the SMTP catcher and the trace collector"
  .venv/bin/python deploy/ci/check_stack.py check \
    --mail "http://127.0.0.1:$MAILPIT_UI_PORT" --traces "http://127.0.0.1:$JAEGER_UI_PORT"
}

# On one line: bash reads a script as it runs it, and the file may change meanwhile.
main "$@"; exit
