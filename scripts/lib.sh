# shellcheck shell=bash
# Helpers shared by scripts/test.sh and scripts/demo.sh: packages, free ports, starting the
# distribution registry, the token server and the other python support servers, a test CA,
# HTTP and SOCKS5 proxies and a private dockerd, waiting for them, and stopping exactly the
# processes these scripts started.
#
# Source it after `set -euo pipefail`; call `services_init DIR` once, and `services_cleanup`
# from an EXIT trap.

SERVICE_PIDS=()   # process-group leaders started with setsid, stopped in reverse order
SERVICE_NAMES=()
SERVICE_LOGS=()
SERVICES_DIR=""

section() {
    printf '\n==> %s\n' "$*"
}

info() {
    printf '    %s\n' "$*"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# is_static FILE: true when FILE is an executable that needs no dynamic loader.
is_static() {
    [ -x "$1" ] || return 1
    ! ldd "$1" >/dev/null 2>&1
}

# ensure_packages PKG:PROBE...  installs (apt-get) each PKG whose PROBE fails. PROBE is a
# command name, or an absolute path that must exist, or `static:PATH` for a static executable.
ensure_packages() {
    local missing=() spec pkg probe
    for spec in "$@"; do
        pkg=${spec%%:*}
        probe=${spec#*:}
        case "$probe" in
            static:*) is_static "${probe#static:}" && continue ;;
            /*) [ -e "$probe" ] && continue ;;
            *) command -v "$probe" >/dev/null 2>&1 && continue ;;
        esac
        case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        info "all required packages are present"
        return 0
    fi
    info "installing: ${missing[*]}"
    [ "$(id -u)" -eq 0 ] || die "these packages are missing and installing them needs root: ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these packages by hand: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null ||
        die "apt-get install ${missing[*]} failed"
}

# free_port: a TCP port on 127.0.0.1 nobody listens on right now.
free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

services_init() {
    SERVICES_DIR=$1
    mkdir -p "$SERVICES_DIR"
}

# start_service NAME LOG CMD...: runs CMD in its own session (so its children can be stopped
# with it) with output to LOG; sets STARTED_PID.
start_service() {
    local name=$1 log=$2
    shift 2
    setsid "$@" >"$log" 2>&1 </dev/null &
    STARTED_PID=$!
    SERVICE_PIDS+=("$STARTED_PID")
    SERVICE_NAMES+=("$name")
    SERVICE_LOGS+=("$log")
}

show_log() {
    local name=$1 log=$2
    printf -- '---- last lines of %s log (%s) ----\n' "$name" "$log" >&2
    tail -n 40 "$log" >&2 2>/dev/null || true
    printf -- '---- end of %s log ----\n' "$name" >&2
}

# wait_until NAME PID LOG SECONDS CMD...: polls CMD until it succeeds; dies with the log when
# the process exits or the time is up.
wait_until() {
    local name=$1 pid=$2 log=$3 limit=$4
    shift 4
    local deadline=$((SECONDS + limit))
    while :; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log "$name" "$log"
            die "$name exited before it was ready"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log "$name" "$log"
            die "$name was not ready after ${limit}s"
        fi
        sleep 0.2
    done
}

# http_status_is URL CODE...: true when GET URL answers with one of the CODEs. An https URL
# is verified against $HTTP_CACERT when that is set.
http_status_is() {
    local url=$1 got
    shift
    got=$(curl -s -o /dev/null -m 5 --noproxy '*' ${HTTP_CACERT:+--cacert "$HTTP_CACERT"} \
        -w '%{http_code}' "$url") || return 1
    local want
    for want in "$@"; do
        [ "$got" = "$want" ] && return 0
    done
    return 1
}

# write_registry_config FILE PORT STORAGE [AUTH_YAML [HTTP_YAML]]: AUTH_YAML is appended at the
# top level (auth, middleware...), HTTP_YAML inside `http:` (indented by two spaces, e.g. tls).
write_registry_config() {
    local file=$1 port=$2 storage=$3 auth=${4-} http=${5-}
    {
        printf 'version: 0.1\n'
        printf 'log:\n  level: info\n  accesslog:\n    disabled: false\n'
        printf 'storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n' "$storage"
        printf '  maintenance:\n    uploadpurging:\n      enabled: false\n'
        printf 'http:\n  addr: 127.0.0.1:%s\n  secret: %s\n' "$port" "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
        printf '  headers:\n    X-Content-Type-Options: [nosniff]\n'
        if [ -n "$http" ]; then
            printf '%s\n' "$http"
        fi
        if [ -n "$auth" ]; then
            printf '%s\n' "$auth"
        fi
    } >"$file"
}

# start_registry NAME STORAGE [AUTH_YAML [HTTP_YAML]]: starts docker-registry on a free loopback
# port (or on $REGISTRY_PORT), waits until /v2/ answers; sets REGISTRY_ADDR to 127.0.0.1:PORT
# and REGISTRY_LOG to its log (with the access log).
# With $REGISTRY_CACERT set the registry serves TLS (HTTP_YAML has its `tls:`) and is probed
# over https, verified with that CA.
start_registry() {
    local name=$1 storage=$2 auth=${3-} http=${4-}
    local port cfg log scheme=http
    port=${REGISTRY_PORT:-$(free_port)}
    cfg="$SERVICES_DIR/$name.yml"
    log="$SERVICES_DIR/$name.log"
    mkdir -p "$storage"
    write_registry_config "$cfg" "$port" "$storage" "$auth" "$http"
    start_service "$name" "$log" docker-registry serve "$cfg"
    if [ -n "${REGISTRY_CACERT:-}" ]; then
        scheme=https
    fi
    HTTP_CACERT=${REGISTRY_CACERT:-} wait_until "$name" "$STARTED_PID" "$log" 30 \
        http_status_is "$scheme://127.0.0.1:$port/v2/" 200 401
    REGISTRY_ADDR="127.0.0.1:$port"
    REGISTRY_LOG=$log
    info "$name: $scheme://$REGISTRY_ADDR (pid $STARTED_PID, log $REGISTRY_LOG)"
}

# start_py_server NAME SCRIPT ARGS...: starts a python3 support server of tests/e2e (they all
# take --listen and --port-file) on a free loopback port and waits for its port file; sets
# SERVER_ADDR to 127.0.0.1:PORT and SERVER_LOG.
start_py_server() {
    local name=$1 script=$2
    shift 2
    local log="$SERVICES_DIR/$name.log" portfile="$SERVICES_DIR/$name.port"
    rm -f "$portfile"
    start_service "$name" "$log" python3 "$script" --listen 127.0.0.1:0 --port-file "$portfile" "$@"
    wait_until "$name" "$STARTED_PID" "$log" 30 test -s "$portfile"
    SERVER_ADDR="127.0.0.1:$(cat "$portfile")"
    SERVER_LOG=$log
}

# start_named_tokenserver NAME SCRIPT ARGS...: starts a token server (tests/e2e/tokenserver.py)
# on a free port and waits until it answers; sets TOKEN_ADDR.
start_named_tokenserver() {
    local name=$1
    shift
    start_py_server "$name" "$@"
    TOKEN_ADDR=$SERVER_ADDR
    wait_until "$name" "$STARTED_PID" "$SERVER_LOG" 30 http_status_is "http://$TOKEN_ADDR/healthz" 200
    info "$name: http://$TOKEN_ADDR (pid $STARTED_PID, log $SERVER_LOG)"
}

# start_tokenserver SCRIPT ARGS...: starts the token server on a free port; sets TOKEN_ADDR.
start_tokenserver() {
    start_named_tokenserver tokenserver "$@"
}

# random_secret PREFIX: PREFIX followed by 16 random hex digits.
random_secret() {
    printf '%s%s\n' "$1" "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
}

# make_tls_certs DIR: a throw-away CA (DIR/ca.key, DIR/ca.crt) and a server certificate it
# issues for IP 127.0.0.1 and DNS localhost (DIR/server.key, DIR/server.crt).
make_tls_certs() {
    local dir=$1
    mkdir -p "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 \
        -subj "/CN=docker-pull e2e test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" >"$dir/openssl.log" 2>&1 ||
        die "openssl could not create the test CA: $(cat "$dir/openssl.log")"
    openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/CN=127.0.0.1" \
        -keyout "$dir/server.key" -out "$dir/server.csr" >>"$dir/openssl.log" 2>&1 ||
        die "openssl could not create the server key: $(cat "$dir/openssl.log")"
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" \
        "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" -days 30 -sha256 \
        -extfile "$dir/server.ext" -out "$dir/server.crt" >>"$dir/openssl.log" 2>&1 ||
        die "openssl could not issue the server certificate: $(cat "$dir/openssl.log")"
    chmod 600 "$dir/ca.key" "$dir/server.key"
}

# start_tinyproxy NAME USER PASSWORD PROBE_URL: an HTTP proxy on a free loopback port that
# wants Basic proxy credentials and allows CONNECT to any port; logs every connection and
# request (LogLevel Connect) to its service log. Waits until a GET of PROBE_URL through it
# works; sets PROXY_ADDR and PROXY_LOG.
start_tinyproxy() {
    local name=$1 user=$2 pass=$3 probe=$4
    local port conf="$SERVICES_DIR/$name.conf" log="$SERVICES_DIR/$name.log"
    port=$(free_port)
    # No ConnectPort line: CONNECT is allowed to every port. No Allow line: every client.
    printf '%s\n' \
        "Port $port" \
        "Listen 127.0.0.1" \
        "Timeout 600" \
        "MaxClients 100" \
        "LogLevel Connect" \
        "DisableViaHeader Yes" \
        "BasicAuth $user $pass" >"$conf"
    chmod 600 "$conf"
    start_service "$name" "$log" tinyproxy -d -c "$conf"
    wait_until "$name" "$STARTED_PID" "$log" 30 \
        curl -sf -o /dev/null -m 5 -x "http://$user:$pass@127.0.0.1:$port" "$probe"
    PROXY_ADDR="127.0.0.1:$port"
    PROXY_LOG=$log
    info "$name: http://$PROXY_ADDR (pid $STARTED_PID, log $PROXY_LOG)"
}

# start_microsocks NAME USER PASSWORD PROBE_URL: a SOCKS5 proxy on a free loopback port with
# username/password authentication; it logs every connection it makes to its service log.
# Waits until a GET of PROBE_URL through it works; sets PROXY_ADDR and PROXY_LOG.
start_microsocks() {
    local name=$1 user=$2 pass=$3 probe=$4
    local port log="$SERVICES_DIR/$name.log"
    port=$(free_port)
    start_service "$name" "$log" microsocks -i 127.0.0.1 -p "$port" -u "$user" -P "$pass"
    wait_until "$name" "$STARTED_PID" "$log" 30 \
        curl -sf -o /dev/null -m 5 -x "socks5://$user:$pass@127.0.0.1:$port" "$probe"
    PROXY_ADDR="127.0.0.1:$port"
    PROXY_LOG=$log
    info "$name: socks5://$PROXY_ADDR (pid $STARTED_PID, log $PROXY_LOG)"
}

# start_dockerd DIR: a private Docker engine (vfs storage, no networking set-up, its own
# data-root, exec-root, socket and containerd namespace); sets DOCKERD_SOCK.
start_dockerd() {
    local dir=$1
    mkdir -p "$dir/root" "$dir/exec"
    printf '{}\n' >"$dir/daemon.json"
    local log="$dir/dockerd.log"
    start_service dockerd "$log" dockerd \
        --config-file "$dir/daemon.json" \
        --storage-driver vfs \
        --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
        --data-root "$dir/root" --exec-root "$dir/exec" \
        --pidfile "$dir/dockerd.pid" \
        --containerd-namespace docker-pull-e2e \
        --containerd-plugins-namespace docker-pull-e2e-plugins \
        --host "unix://$dir/docker.sock"
    DOCKERD_SOCK="$dir/docker.sock"
    wait_until dockerd "$STARTED_PID" "$log" 90 docker -H "unix://$DOCKERD_SOCK" version
    info "dockerd: unix://$DOCKERD_SOCK (pid $STARTED_PID, log $log)"
}

# stop_pid NAME PID: SIGTERM the process group, wait up to 20 s, then SIGKILL it.
stop_pid() {
    local name=$1 pid=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        printf 'warning: %s (pid %s) did not stop; killing it\n' "$name" "$pid" >&2
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    # Children left in the group (a containerd that outlived dockerd, say).
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# unmount_under DIR: unmounts whatever is mounted below DIR, deepest first.
unmount_under() {
    local dir=$1 mnt
    [ -n "$dir" ] || return 0
    while read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null ||
            printf 'warning: could not unmount %s\n' "$mnt" >&2
    done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
}

# services_cleanup: stop everything start_service started, newest first; unmount and remove
# SERVICES_DIR (kept when KEEP_E2E_DIR=1).
services_cleanup() {
    local i
    for ((i = ${#SERVICE_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${SERVICE_NAMES[$i]}" "${SERVICE_PIDS[$i]}"
    done
    SERVICE_PIDS=()
    if [ -n "$SERVICES_DIR" ] && [ -d "$SERVICES_DIR" ]; then
        unmount_under "$SERVICES_DIR"
        if [ "${KEEP_E2E_DIR:-0}" = 1 ]; then
            printf 'kept %s (KEEP_E2E_DIR=1)\n' "$SERVICES_DIR" >&2
        else
            rm -rf "$SERVICES_DIR" 2>/dev/null || {
                unmount_under "$SERVICES_DIR"
                rm -rf "$SERVICES_DIR" || printf 'warning: could not remove %s\n' "$SERVICES_DIR" >&2
            }
        fi
    fi
}

# show_service_logs: the tail of every service log (after a failure).
show_service_logs() {
    local i
    for ((i = 0; i < ${#SERVICE_LOGS[@]}; i++)); do
        show_log "${SERVICE_NAMES[$i]}" "${SERVICE_LOGS[$i]}"
    done
}
