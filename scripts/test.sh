#!/usr/bin/env bash
# The whole test suite: unit and integration tests (`cargo test`), then the end-to-end suite
# (`cargo test --features e2e --test e2e`) against real components this script starts and stops:
#
#   * a plain CNCF distribution registry (docker-registry) on a free loopback port,
#   * a second one with Bearer token auth, and the token server in tests/e2e/tokenserver.py,
#   * a private Docker engine (dockerd, vfs storage, own data-root/exec-root/socket).
#
# Missing Debian packages are installed with apt-get (run as root on Debian/Ubuntu).
# Environment:
#   E2E_BUSYBOX    static busybox used to build the runnable test images (default /bin/busybox)
#   KEEP_E2E_DIR=1 keep the temporary directory (logs, registry storage) for inspection
#   SKIP_UNIT=1    skip the plain `cargo test` step
#   E2E_TEST_ARGS  extra arguments for the e2e test binary (e.g. a test name filter)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

START=$SECONDS
WORK=""
CHILD=""

# run_step CMD...: runs CMD in its own process group and waits, so that an interrupt of this
# script stops CMD (and the test binaries under it) before the services go away.
run_step() {
    setsid "$@" &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$CHILD" ]; then
        stop_pid "running step" "$CHILD"
    fi
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ] &&
        [ "${#SERVICE_LOGS[@]}" -gt 0 ] && [ "${FAILED_STEP:-}" = e2e ]; then
        show_service_logs
    fi
    if [ -n "$WORK" ]; then
        section "Cleaning up"
        services_cleanup
        info "stopped services and removed $WORK"
    fi
    if [ "$rc" -eq 0 ]; then
        printf '\n==> scripts/test.sh: all tests passed (%ss)\n' "$((SECONDS - START))"
    else
        printf '\n==> scripts/test.sh: FAILED (exit %s, %ss)\n' "$rc" "$((SECONDS - START))" >&2
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section "Checking tools and packages"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) first"
E2E_BUSYBOX=${E2E_BUSYBOX:-/bin/busybox}
ensure_packages \
    ca-certificates:/etc/ssl/certs/ca-certificates.crt \
    curl:curl \
    python3:python3 \
    openssl:openssl \
    util-linux:setsid \
    docker.io:dockerd \
    docker.io:docker \
    docker-registry:docker-registry \
    "busybox-static:static:$E2E_BUSYBOX"
if [ -r /sys/module/apparmor/parameters/enabled ] &&
    [ "$(cat /sys/module/apparmor/parameters/enabled)" = Y ]; then
    # With AppArmor on, dockerd needs apparmor_parser to load its container profile.
    ensure_packages apparmor:apparmor_parser
fi
is_static "$E2E_BUSYBOX" || die "E2E_BUSYBOX=$E2E_BUSYBOX is not a static executable (install busybox-static)"
[ "$(id -u)" -eq 0 ] || die "the end-to-end suite starts dockerd and needs root"
if ! grep -q ' cgroup' /proc/mounts && ! grep -q ' cgroup2' /proc/mounts; then
    # No cgroup hierarchy mounted (a bare sandbox): containers cannot start without one.
    ensure_packages cgroupfs-mount:cgroupfs-mount
    info "mounting the cgroup hierarchies (cgroupfs-mount)"
    cgroupfs-mount || die "cgroupfs-mount failed; dockerd needs cgroups"
fi
info "cargo: $(cargo --version)"
info "docker: $(docker --version)"
info "dockerd: $(dockerd --version)"
info "registry: $(docker-registry --version 2>&1 | head -n 1)"
info "busybox: $E2E_BUSYBOX"

UNIT_RESULT="skipped (SKIP_UNIT=1)"
if [ "${SKIP_UNIT:-0}" != 1 ]; then
    section "Unit and integration tests (cargo test)"
    # A failure here is reported at the end; the end-to-end suite still runs.
    if run_step cargo test; then
        UNIT_RESULT=passed
    else
        UNIT_RESULT="FAILED (exit $?)"
    fi
fi

section "Building the end-to-end suite"
FAILED_STEP=build
run_step cargo test --features e2e --test e2e --no-run

section "Starting registries, token server and dockerd"
FAILED_STEP=setup
WORK=$(mktemp -d /tmp/docker-pull-e2e.XXXXXX)
services_init "$WORK"
# The docker CLI and docker-pull must not see this machine's credentials or proxies.
export DOCKER_CONFIG="$WORK/docker-config"
mkdir -p "$DOCKER_CONFIG"
export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

start_registry registry "$WORK/storage-plain"
E2E_REGISTRY=$REGISTRY_ADDR

TOKEN_USER=e2e-user
TOKEN_PASS="pw-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
python3 tests/e2e/tokenserver.py --init-only --key "$WORK/token.key" --cert "$WORK/token.crt" \
    --issuer docker-pull-e2e-issuer
start_tokenserver tests/e2e/tokenserver.py \
    --key "$WORK/token.key" --cert "$WORK/token.crt" \
    --issuer docker-pull-e2e-issuer --service docker-pull-e2e-registry \
    --user "$TOKEN_USER:$TOKEN_PASS" --private private/ --ttl 60
start_registry token-registry "$WORK/storage-token" "auth:
  token:
    realm: http://$TOKEN_ADDR/token
    service: docker-pull-e2e-registry
    issuer: docker-pull-e2e-issuer
    rootcertbundle: $WORK/token.crt"
E2E_TOKEN_REGISTRY=$REGISTRY_ADDR

start_dockerd "$WORK/docker"

export E2E_REGISTRY E2E_TOKEN_REGISTRY E2E_BUSYBOX
export E2E_TOKEN_SERVER="$TOKEN_ADDR"
export E2E_TOKEN_USER="$TOKEN_USER" E2E_TOKEN_PASS="$TOKEN_PASS"
export DOCKER_HOST="unix://$DOCKERD_SOCK"
info "E2E_REGISTRY=$E2E_REGISTRY"
info "E2E_TOKEN_REGISTRY=$E2E_TOKEN_REGISTRY (realm http://$E2E_TOKEN_SERVER/token)"
info "E2E_TOKEN_USER=$E2E_TOKEN_USER"
info "DOCKER_HOST=$DOCKER_HOST"

section "End-to-end tests (cargo test --features e2e --test e2e)"
FAILED_STEP=e2e
E2E_RESULT=passed
# shellcheck disable=SC2086 # E2E_TEST_ARGS is a list of words
run_step cargo test --features e2e --test e2e -- --test-threads=1 ${E2E_TEST_ARGS:-} ||
    E2E_RESULT="FAILED (exit $?)"
if [ "$E2E_RESULT" = passed ]; then
    FAILED_STEP=""
fi

section "Summary"
info "unit and integration tests: $UNIT_RESULT"
info "end-to-end tests:           $E2E_RESULT"
case "$UNIT_RESULT $E2E_RESULT" in
    *FAILED*) exit 1 ;;
esac
