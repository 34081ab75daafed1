#!/usr/bin/env bash
# The main job, offline: build docker-pull, start a local registry with a sample image, look at it
# (inspect, tags), pull it into an archive, verify it, show what is inside, and load + run it when a
# Docker engine is reachable.
#
#   scripts/demo.sh
#
# Installs Debian's docker-registry and busybox-static with apt-get when missing (needs root for
# that). The registry listens on 127.0.0.1:5000, or a free loopback port when 5000 is taken; it
# and its storage are removed on exit. The archive stays in target/demo/ for a closer look.
# Environment: DEMO_PORT (registry port), DOCKER_HOST (the engine to load into).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

WORK=""
LOADED=""
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$LOADED" ]; then
        docker rmi "$LOADED" >/dev/null 2>&1 || true
    fi
    if [ -n "$WORK" ]; then
        section "Stopping the registry"
        services_cleanup
        info "stopped and removed $WORK"
    fi
    if [ "$rc" -ne 0 ]; then
        printf '\n==> demo FAILED (exit %s)\n' "$rc" >&2
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_is_free() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

section "Checking packages"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) first"
BUSYBOX=${DEMO_BUSYBOX:-/bin/busybox}
ensure_packages \
    ca-certificates:/etc/ssl/certs/ca-certificates.crt \
    curl:curl \
    python3:python3 \
    util-linux:setsid \
    docker-registry:docker-registry \
    "busybox-static:static:$BUSYBOX"

section "Building docker-pull (release) and the sample pusher"
cargo build --release --bin docker-pull --example push_sample
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET_DIR/release/docker-pull"
PUSH="$TARGET_DIR/release/examples/push_sample"
info "binary: $BIN ($("$BIN" --version))"

section "Starting a local registry"
WORK=$(mktemp -d /tmp/docker-pull-demo.XXXXXX)
services_init "$WORK"
PORT=${DEMO_PORT:-5000}
if ! port_is_free "$PORT"; then
    info "127.0.0.1:$PORT is taken; using a free port"
    PORT=$(free_port)
fi
REGISTRY_PORT=$PORT start_registry registry "$WORK/storage"
REGISTRY=$REGISTRY_ADDR

section "Pushing a sample image (busybox, prints a greeting)"
"$PUSH" "$REGISTRY" demo/hello:1.0 --busybox "$BUSYBOX"
IMAGE="$REGISTRY/demo/hello:1.0"

OUT="$ROOT/target/demo"
rm -rf "$OUT"
mkdir -p "$OUT"
section "A look first: docker-pull inspect $IMAGE (no layer downloaded)"
"$BIN" --cache-dir "$OUT/cache" inspect "$IMAGE"

section "docker-pull tags $REGISTRY/demo/hello"
"$BIN" tags "$REGISTRY/demo/hello"

section "docker-pull $IMAGE -o target/demo/"
"$BIN" --cache-dir "$OUT/cache" -o "$OUT" "$IMAGE"
ARCHIVE=$(find "$OUT" -maxdepth 1 -name '*.tar' | head -n 1)
[ -n "$ARCHIVE" ] || die "docker-pull wrote no archive into $OUT"

section "Again: everything comes from the cache (--json)"
"$BIN" --cache-dir "$OUT/cache" -o "$OUT/again.tar" --json "$IMAGE"

section "docker-pull verify $(basename "$ARCHIVE") (offline)"
"$BIN" verify "$ARCHIVE"

section "What is in $(basename "$ARCHIVE")"
tar -tvf "$ARCHIVE"
printf '\nmanifest.json:\n'
tar -xOf "$ARCHIVE" manifest.json | python3 -m json.tool

section "Loading it into Docker"
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    docker load -i "$ARCHIVE"
    LOADED=$IMAGE
    info "docker run --rm --network none $IMAGE"
    docker run --rm --network none "$IMAGE"
    docker rmi "$IMAGE" >/dev/null && LOADED=""
    info "(removed $IMAGE from the engine again)"
else
    info "no Docker engine is reachable (docker info failed), so the archive is not loaded."
    info "On a machine with Docker: docker load -i $(basename "$ARCHIVE") && docker run --rm $IMAGE"
fi

section "Done"
info "archive: $ARCHIVE"
