#!/usr/bin/env bash
# The whole test suite: unit and integration tests (`cargo test`), then the end-to-end suite
# (`cargo test --features e2e --test e2e`) against real components this script starts and stops:
#
#   * a plain CNCF distribution registry (docker-registry) on a free loopback port,
#   * a second one with Bearer token auth, and the token server in tests/e2e/tokenserver.py
#     (JWTs signed by a certificate chain under a generated root CA; passwords and identity
#     tokens),
#   * on the plain registry's storage: a TLS registry (generated CA, htpasswd Basic auth), a
#     Basic-auth registry whose blob GETs redirect to tests/e2e/blobserver.py, and a token-auth
#     registry with 2-second tokens from its own token server behind the throttling relay
#     tests/e2e/throttle.py,
#   * tinyproxy (HTTP proxy, Basic proxy auth) and microsocks (SOCKS5, username/password),
#   * a private Docker engine (dockerd, vfs storage, own data-root/exec-root/socket).
#
# The format tests also run skopeo (inspect) and podman (load, each test with its own vfs store).
#
# Missing Debian packages are installed with apt-get (run as root on Debian/Ubuntu).
# Environment:
#   E2E_BUSYBOX    static busybox used to build the runnable test images (default /bin/busybox)
#   KEEP_E2E_DIR=1 keep the temporary directory (logs, registry storage) for inspection
#   SKIP_UNIT=1    skip the plain `cargo test` step
#   E2E_TEST_ARGS  extra arguments for the e2e test binary (e.g. a test name filter)
#   E2E_SLOW_RATE  bytes/s per connection of the relay in front of the short-token registry
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
    apache2-utils:htpasswd \
    tinyproxy:tinyproxy \
    microsocks:microsocks \
    skopeo:skopeo \
    podman:podman \
    zstd:zstd \
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
info "skopeo: $(skopeo --version)"
info "podman: $(podman --version)"
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

section "Starting registries, token servers, proxies and dockerd"
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
if [ "$(getent ahosts localhost 2>/dev/null | awk 'NR == 1 { print $1 }')" = "::1" ]; then
    # The SOCKS5 tests name the registry `localhost:PORT` for the proxy to resolve, and
    # microsocks connects to the first address getaddrinfo gives (here ::1) only: let
    # [::1]:PORT reach the registry too.
    start_py_server localhost6-forwarder tests/e2e/throttle.py \
        --listen "[::1]:${E2E_REGISTRY##*:}" --target "$E2E_REGISTRY" --rate 0
    info "localhost6-forwarder: [::1]:${E2E_REGISTRY##*:} -> $E2E_REGISTRY (pid $STARTED_PID)"
fi

# Token auth: a root CA the registries trust, a signing certificate it issues (sent in x5c).
TOKEN_USER=e2e-user
TOKEN_PASS=$(random_secret pw-)
TOKEN_IDENTITY=$(random_secret idtoken-)
TOKEN_HELPER_IDENTITY=$(random_secret helpertoken-)
TOKEN_CERTS=(--key "$WORK/token-signing.key" --cert "$WORK/token-signing.crt"
    --ca-key "$WORK/token-root.key" --ca-cert "$WORK/token-root.crt"
    --issuer docker-pull-e2e-issuer)
python3 tests/e2e/tokenserver.py --init-only "${TOKEN_CERTS[@]}"
start_tokenserver tests/e2e/tokenserver.py "${TOKEN_CERTS[@]}" \
    --service docker-pull-e2e-registry \
    --user "$TOKEN_USER:$TOKEN_PASS" --private private/ --ttl 60 \
    --refresh-token "$TOKEN_IDENTITY:$TOKEN_USER" \
    --refresh-token "$TOKEN_HELPER_IDENTITY:$TOKEN_USER"
E2E_TOKEN_SERVER=$TOKEN_ADDR
start_registry token-registry "$WORK/storage-token" "auth:
  token:
    realm: http://$TOKEN_ADDR/token
    service: docker-pull-e2e-registry
    issuer: docker-pull-e2e-issuer
    rootcertbundle: $WORK/token-root.crt"
E2E_TOKEN_REGISTRY=$REGISTRY_ADDR

# The registries below serve the plain registry's storage (the suite pushes its fixtures there).
BASIC_USER=e2e-basic
BASIC_PASS=$(random_secret basicpw-)
htpasswd -Bbn "$BASIC_USER" "$BASIC_PASS" >"$WORK/htpasswd" 2>/dev/null ||
    die "htpasswd could not write $WORK/htpasswd"
HTPASSWD_AUTH="auth:
  htpasswd:
    realm: docker-pull-e2e-basic
    path: $WORK/htpasswd"

make_tls_certs "$WORK/tls"
REGISTRY_CACERT="$WORK/tls/ca.crt" start_registry tls-registry "$WORK/storage-plain" \
    "$HTPASSWD_AUTH" "  tls:
    certificate: $WORK/tls/server.crt
    key: $WORK/tls/server.key"
E2E_TLS_REGISTRY=$REGISTRY_ADDR
# HTTPS registry whose token realm is plain HTTP: refused unless --insecure allows it.
REGISTRY_CACERT="$WORK/tls/ca.crt" start_registry tls-token-registry "$WORK/storage-plain" "auth:
  token:
    realm: http://$E2E_TOKEN_SERVER/token
    service: docker-pull-e2e-registry
    issuer: docker-pull-e2e-issuer
    rootcertbundle: $WORK/token-root.crt" "  tls:
    certificate: $WORK/tls/server.crt
    key: $WORK/tls/server.key"
E2E_TLS_TOKEN_REGISTRY=$REGISTRY_ADDR

start_py_server blobserver tests/e2e/blobserver.py --root "$WORK/storage-plain"
E2E_REDIRECT_TARGET=$SERVER_ADDR
wait_until blobserver "$STARTED_PID" "$SERVER_LOG" 30 \
    http_status_is "http://$E2E_REDIRECT_TARGET/healthz" 200
info "blobserver: http://$E2E_REDIRECT_TARGET (pid $STARTED_PID, log $SERVER_LOG)"
start_registry redirect-registry "$WORK/storage-plain" "$HTPASSWD_AUTH
middleware:
  storage:
    - name: redirect
      options:
        baseurl: http://$E2E_REDIRECT_TARGET/"
E2E_REDIRECT_REGISTRY=$REGISTRY_ADDR

# Short-lived tokens (2 s) for a registry that clients reach through a throttled relay, so a
# pull outlasts several tokens. Under private/slow-lying the token server claims 300 s.
E2E_SLOW_TTL=2
start_named_tokenserver slow-tokenserver tests/e2e/tokenserver.py "${TOKEN_CERTS[@]}" \
    --service docker-pull-e2e-slow \
    --user "$TOKEN_USER:$TOKEN_PASS" --private private/ --ttl "$E2E_SLOW_TTL" \
    --claimed-ttl-for private/slow-lying=300
E2E_SLOW_TOKEN_SERVER=$TOKEN_ADDR
start_registry slow-registry "$WORK/storage-plain" "auth:
  token:
    realm: http://$E2E_SLOW_TOKEN_SERVER/token
    service: docker-pull-e2e-slow
    issuer: docker-pull-e2e-issuer
    rootcertbundle: $WORK/token-root.crt"
E2E_SLOW_REGISTRY_LOG=$REGISTRY_LOG
start_py_server slow-relay tests/e2e/throttle.py --target "$REGISTRY_ADDR" \
    --rate "${E2E_SLOW_RATE:-262144}"
E2E_SLOW_REGISTRY=$SERVER_ADDR
wait_until slow-relay "$STARTED_PID" "$SERVER_LOG" 30 \
    http_status_is "http://$E2E_SLOW_REGISTRY/v2/" 401
info "slow-relay: http://$E2E_SLOW_REGISTRY -> $REGISTRY_ADDR (pid $STARTED_PID, log $SERVER_LOG)"

# Proxies, each with its own credentials; their logs show what they carried.
HTTP_PROXY_USER=e2e-proxy
HTTP_PROXY_PASS=$(random_secret proxypw-)
start_tinyproxy tinyproxy "$HTTP_PROXY_USER" "$HTTP_PROXY_PASS" "http://$E2E_REGISTRY/v2/"
E2E_HTTP_PROXY=$PROXY_ADDR E2E_HTTP_PROXY_LOG=$PROXY_LOG
SOCKS_USER=e2e-socks
SOCKS_PASS=$(random_secret sockspw-)
start_microsocks microsocks "$SOCKS_USER" "$SOCKS_PASS" "http://$E2E_REGISTRY/v2/"
E2E_SOCKS_PROXY=$PROXY_ADDR E2E_SOCKS_PROXY_LOG=$PROXY_LOG

start_dockerd "$WORK/docker"

export E2E_REGISTRY E2E_TOKEN_REGISTRY E2E_BUSYBOX E2E_TOKEN_SERVER
export E2E_TOKEN_USER="$TOKEN_USER" E2E_TOKEN_PASS="$TOKEN_PASS"
export E2E_TOKEN_IDENTITY="$TOKEN_IDENTITY" E2E_TOKEN_HELPER_IDENTITY="$TOKEN_HELPER_IDENTITY"
export E2E_TLS_REGISTRY E2E_TLS_TOKEN_REGISTRY E2E_TLS_CA="$WORK/tls/ca.crt"
export E2E_BASIC_USER="$BASIC_USER" E2E_BASIC_PASS="$BASIC_PASS"
export E2E_REDIRECT_REGISTRY E2E_REDIRECT_TARGET
export E2E_SLOW_REGISTRY E2E_SLOW_TOKEN_SERVER E2E_SLOW_TTL E2E_SLOW_REGISTRY_LOG
export E2E_HTTP_PROXY E2E_HTTP_PROXY_LOG E2E_SOCKS_PROXY E2E_SOCKS_PROXY_LOG
export E2E_HTTP_PROXY_USER="$HTTP_PROXY_USER" E2E_HTTP_PROXY_PASS="$HTTP_PROXY_PASS"
export E2E_SOCKS_USER="$SOCKS_USER" E2E_SOCKS_PASS="$SOCKS_PASS"
export DOCKER_HOST="unix://$DOCKERD_SOCK"
info "E2E_REGISTRY=$E2E_REGISTRY"
info "E2E_TOKEN_REGISTRY=$E2E_TOKEN_REGISTRY (realm http://$E2E_TOKEN_SERVER/token)"
info "E2E_TOKEN_USER=$E2E_TOKEN_USER"
info "E2E_TLS_REGISTRY=$E2E_TLS_REGISTRY (CA $E2E_TLS_CA, Basic user $E2E_BASIC_USER)"
info "E2E_REDIRECT_REGISTRY=$E2E_REDIRECT_REGISTRY (blobs from http://$E2E_REDIRECT_TARGET)"
info "E2E_SLOW_REGISTRY=$E2E_SLOW_REGISTRY (tokens: ${E2E_SLOW_TTL}s from http://$E2E_SLOW_TOKEN_SERVER)"
info "E2E_HTTP_PROXY=$E2E_HTTP_PROXY E2E_SOCKS_PROXY=$E2E_SOCKS_PROXY"
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
