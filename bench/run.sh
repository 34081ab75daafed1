#!/usr/bin/env bash
# Benchmark: docker-pull against skopeo, pulling from a local distribution registry.
#
#   bench/run.sh                      # full run (1 GiB images, 5 runs per tool and case)
#   BENCH_QUICK=1 bench/run.sh        # smoke run: a few MB, 3 runs, well under a minute
#
# Environment:
#   BENCH_RUNS=N            runs per tool and case (default 5; 3 with BENCH_QUICK=1)
#   BENCH_QUICK=1           scale every image down to a few MB
#   BENCH_BIN=PATH          docker-pull binary to measure (default: cargo build --release,
#                           honouring CARGO_TARGET_DIR)
#   BENCH_SLOW=0            skip the slow-link case
#   BENCH_PUSH=0            skip the push and copy cases
#   BENCH_ONLY=CASE,...     run only these cases (e.g. push-big5,copy-big5); the report lists
#                           only what ran
#   BENCH_LINK=auto|netem|relay   how to emulate the slow link (auto: netem when the kernel
#                           has it, else the userspace relay bench/link_relay.py)
#   BENCH_LINK_DELAY_MS=25  one-way delay (the round trip is twice this)
#   BENCH_LINK_RATE_MBIT=200  link rate, each direction
#   BENCH_CONN_RATE_MBIT=80 per-connection limit of the second relay (the per-connection case:
#                           mid1 through bench/link_relay.py, 1000 Mbit/s in all, this much per
#                           connection, the same delay), which shows what ranged chunks buy;
#                           0 skips that case
#   BENCH_LATENCY=0         skip the latency cases (netem only: 40 small layers, a 3-layer
#                           image, one image of a list and the list of 20, with the HTTP
#                           requests and TCP connections each run made, counted at the registry)
#   BENCH_LAT_DELAY_MS=50   one-way delay of the latency cases (100 ms round trip)
#   BENCH_LAT_RATE_MBIT=100 link rate of the latency cases
#   BENCH_WORK_PARENT=DIR   where the scratch directory goes (default /var/tmp); the full run
#                           needs about 6 GiB there
#
# Runs as root on Debian (installs docker-registry, skopeo, iproute2, time, curl with apt-get).
# Writes the Markdown report to stdout and to bench/results/latest.md (its inputs beside it:
# bench/report.py renders them again); progress goes to stderr.
#
# What is measured: wall time, user+sys CPU time and peak RSS from GNU time
# (`/usr/bin/time -f '%e %U %S %M'`; the wall time from bash's $EPOCHREALTIME around it, finer
# than %e), median over BENCH_RUNS runs, tools interleaved (A B A B ...). Outputs, caches and
# skopeo's temporary directory are removed between runs, outside the timing. The page cache is never dropped: the registry's blobs and docker-pull's
# cache are hot in memory (the machine has far more RAM than the data), so these numbers are
# CPU/memory-bound pulls, not disk-bound ones. Before each timed run, `sync` writes what
# earlier runs left dirty, so that no run pays for another's write-back.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    SCALE=quick
    RUNS=${BENCH_RUNS:-3}
else
    SCALE=full
    RUNS=${BENCH_RUNS:-5}
fi
SLOW=${BENCH_SLOW:-1}
LINK_MODE=${BENCH_LINK:-auto}
LINK_DELAY_MS=${BENCH_LINK_DELAY_MS:-25}
LINK_RATE_MBIT=${BENCH_LINK_RATE_MBIT:-200}
CONN_RATE_MBIT=${BENCH_CONN_RATE_MBIT:-80}
LATENCY=${BENCH_LATENCY:-1}
LAT_DELAY_MS=${BENCH_LAT_DELAY_MS:-50}
LAT_RATE_MBIT=${BENCH_LAT_RATE_MBIT:-100}
WORK_PARENT=${BENCH_WORK_PARENT:-/var/tmp}
ONLY=${BENCH_ONLY:-}
case "$RUNS" in '' | *[!0-9]* | 0) die "BENCH_RUNS must be a positive integer" ;; esac
case "$LINK_MODE" in auto | netem | relay) ;; *) die "BENCH_LINK must be auto, netem or relay" ;; esac

# Addresses of the two network namespaces this script creates for the netem link (they exist
# only inside those namespaces; nothing is sent anywhere else).
NET_REG_IP=10.213.77.1
NET_CLI_IP=10.213.77.2
NS_REG=""
NS_CLI=""
VETH_REG=""
VETH_CLI=""
COUNTS=""         # requests and connections per timed run (latency cases)
COUNTING=0        # 1 while the latency cases run: timed() counts at the registry
COUNT_LOG=""      # the access log counted
COUNT_CONNS_FILE="" # the relay's connection count (empty: netem's namespace counters)
SOURCE_LOG=""     # the log of the registry the images were pushed to

W=""
RESULTS=""
FACTS=""
LINK_USED="none"
RUN_PREFIX=()     # command prefix for timed runs (ip netns exec NS for the netem link)
DP_EXTRA=()       # extra docker-pull flags for the current registry
DP_ENV=()         # extra environment (NAME=VALUE) for docker-pull in the current case
REG=""            # registry address the current case pulls from
SOURCE_REG=""     # the registry the images were pushed to (fresh_target starts others)

log() {
    printf '%s\n' "$*" >&2
}

cleanup() {
    local rc=$?
    if [ -n "$NS_CLI" ]; then ip netns del "$NS_CLI" 2>/dev/null || true; fi
    services_cleanup >&2
    if [ -n "$NS_REG" ]; then ip netns del "$NS_REG" 2>/dev/null || true; fi
    if [ -n "$W" ] && [ -d "$W" ]; then rm -rf "$W"; fi
    exit "$rc"
}

fact() {
    printf '%s\t%s\n' "$1" "$2" >>"$FACTS"
}

# registry_counts: "REQUESTS CONNECTIONS" so far: lines of the access log of the registry the
# latency cases pull from (COUNT_LOG), and the TCP connections it was asked for: accepted in
# the netem registry's namespace (PassiveOpens of /proc/net/snmp), or by the relay
# (COUNT_CONNS_FILE).
registry_counts() {
    local requests conns
    requests=$(grep -cE '"(GET|HEAD|POST|PUT|PATCH|DELETE) [^"]* HTTP/[0-9.]+" [0-9]{3} ' \
        "$COUNT_LOG" || true)
    if [ -n "$COUNT_CONNS_FILE" ]; then
        conns=$(cat "$COUNT_CONNS_FILE")
    else
        # shellcheck disable=SC2016 # awk's own fields
        conns=$(ip netns exec "$NS_REG" awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ { print $7 }' /proc/net/snmp)
    fi
    printf '%s %s\n' "$requests" "$conns"
}

# timed CASE TOOL RUN CMD...: runs CMD under GNU time (with RUN_PREFIX), appends a result line.
timed() {
    local case=$1 tool=$2 run=$3
    shift 3
    local tf="$W/time.out" out="$W/cmd.log" t0 t1 wall user sys rss _elapsed
    local req0=0 conn0=0 req1 conn1
    if [ "$COUNTING" = 1 ]; then read -r req0 conn0 < <(registry_counts); fi
    # What earlier runs (and the push of the images) left to write goes to the disk first,
    # outside the timing, so no run pays for another's write-back.
    sync
    t0=$EPOCHREALTIME
    if ! "${RUN_PREFIX[@]}" /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@" >"$out" 2>&1; then
        cat "$out" >&2
        cat "$tf" >&2 2>/dev/null || true
        die "$case / $tool run $run failed: $*"
    fi
    t1=$EPOCHREALTIME
    # GNU time's %e has 10 ms steps; the wall time is taken from bash's microsecond clock
    # around the same command instead (it includes starting /usr/bin/time, well under 1 ms).
    read -r _elapsed user sys rss <"$tf"
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$tool" "$run" "$wall" "$user" "$sys" "$rss" >>"$RESULTS"
    if [ "$COUNTING" = 1 ]; then
        sleep 0.3 # the access log line of the last answer
        read -r req1 conn1 < <(registry_counts)
        printf '%s\t%s\t%s\t%s\t%s\n' "$case" "$tool" "$run" "$((req1 - req0))" "$((conn1 - conn0))" >>"$COUNTS"
        log "$(printf '    %-18s %-14s run %2d: %d requests, %d connections' \
            "$case" "$tool" "$run" "$((req1 - req0))" "$((conn1 - conn0))")"
    fi
    log "$(printf '    %-18s %-14s run %2d: %7.2f s wall %7.2f s cpu %6d MiB' \
        "$case" "$tool" "$run" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" "$((rss / 1024))")"
}

dp() {
    env TMPDIR="$W/tmp" "$DP" -q "${DP_EXTRA[@]}" "$@"
}

# run_tool TOOL CASE IMAGE RUN: prepares (untimed), runs TOOL timed, cleans up (untimed).
run_tool() {
    local tool=$1 case=$2 image=$3 run=$4
    local ref="$REG/$image:latest"
    case "$tool" in
        dp-cold)
            rm -rf "$W/cache"
            timed "$case" "$tool" "$run" env TMPDIR="$W/tmp" "${DP_ENV[@]}" "$DP" -q "${DP_EXTRA[@]}" \
                --cache-dir "$W/cache" -o "$W/out.tar" "$ref"
            rm -rf "$W/cache" "$W/out.tar"
            ;;
        dp-cold-j8)
            rm -rf "$W/cache"
            timed "$case" "$tool" "$run" env TMPDIR="$W/tmp" "$DP" -q -j 8 "${DP_EXTRA[@]}" \
                --cache-dir "$W/cache" -o "$W/out.tar" "$ref"
            rm -rf "$W/cache" "$W/out.tar"
            ;;
        dp-one-stream)
            rm -rf "$W/cache"
            timed "$case" "$tool" "$run" env TMPDIR="$W/tmp" "${DP_ENV[@]}" DOCKER_PULL_CHUNK_THRESHOLD=0 \
                "$DP" -q "${DP_EXTRA[@]}" --cache-dir "$W/cache" -o "$W/out.tar" "$ref"
            rm -rf "$W/cache" "$W/out.tar"
            ;;
        dp-warm)
            timed "$case" "$tool" "$run" env TMPDIR="$W/tmp" "$DP" -q "${DP_EXTRA[@]}" \
                --cache-dir "$W/warm" -o "$W/out.tar" "$ref"
            rm -f "$W/out.tar"
            ;;
        dp-oci-dir-warm)
            rm -rf "$W/layout"
            timed "$case" "$tool" "$run" env TMPDIR="$W/tmp" "$DP" -q "${DP_EXTRA[@]}" \
                --cache-dir "$W/warm" -f oci-dir -o "$W/layout" "$ref"
            rm -rf "$W/layout"
            ;;
        dp-no-cache)
            timed "$case" "$tool" "$run" env TMPDIR="$W/tmp" "$DP" -q "${DP_EXTRA[@]}" \
                --no-cache -o "$W/out.tar" "$ref"
            rm -f "$W/out.tar"
            ;;
        dp-after-base)
            rm -rf "$W/cache"
            dp --cache-dir "$W/cache" -o "$W/out.tar" "$REG/base45:latest" >/dev/null
            rm -f "$W/out.tar"
            timed "$case" "$tool" "$run" env TMPDIR="$W/tmp" "$DP" -q "${DP_EXTRA[@]}" \
                --cache-dir "$W/cache" -o "$W/out.tar" "$ref"
            rm -rf "$W/cache" "$W/out.tar"
            ;;
        skopeo)
            rm -rf "$W/skopeo-tmp"
            mkdir -p "$W/skopeo-tmp"
            timed "$case" "$tool" "$run" env TMPDIR="$W/skopeo-tmp" skopeo --insecure-policy \
                copy -q --src-tls-verify=false "docker://$ref" "docker-archive:$W/out.tar:$image:latest"
            rm -rf "$W/skopeo-tmp" "$W/out.tar"
            ;;
        dp-list | dp-list-j8)
            rm -rf "$W/cache" "$W/list-out"
            local refs=() i jobs=3
            if [ "$tool" = dp-list-j8 ]; then jobs=8; fi
            for i in $(seq -w 1 20); do refs+=("$REG/list-$i:latest"); done
            timed "$case" "$tool" "$run" env TMPDIR="$W/tmp" "$DP" -q -j "$jobs" "${DP_EXTRA[@]}" \
                --cache-dir "$W/cache" -o "$W/list-out" "${refs[@]}"
            rm -rf "$W/cache" "$W/list-out"
            ;;
        skopeo-list)
            # One image after another, as users script it.
            rm -rf "$W/skopeo-tmp" "$W/list-out"
            mkdir -p "$W/skopeo-tmp" "$W/list-out"
            # shellcheck disable=SC2016 # expanded by the inner shell
            timed "$case" "$tool" "$run" env TMPDIR="$W/skopeo-tmp" REG="$REG" OUT="$W/list-out" \
                bash -c 'set -e; for i in $(seq -w 1 20); do
                    skopeo --insecure-policy copy -q --src-tls-verify=false \
                        "docker://$REG/list-$i:latest" "docker-archive:$OUT/list-$i.tar:list-$i:latest"
                done'
            rm -rf "$W/skopeo-tmp" "$W/list-out"
            ;;
        cp)
            timed "$case" "$tool" "$run" cp "$W/ref.tar" "$W/out.tar"
            rm -f "$W/out.tar"
            ;;
        dp-push)
            fresh_target "$tool-$run"
            timed "$case" "$tool" "$run" env TMPDIR="$W/tmp" "$DP" -q push --cache-dir "$W/push-cache" \
                "$W/push-src.tar" "$REG2/pushed:latest"
            rm -rf "$W/store-$tool-$run"
            ;;
        dp-push-again)
            fresh_target "$tool-$run"
            dp push --cache-dir "$W/push-cache" "$W/push-src.tar" "$REG2/pushed:latest" >/dev/null
            timed "$case" "$tool" "$run" env TMPDIR="$W/tmp" "$DP" -q push --cache-dir "$W/push-cache" \
                "$W/push-src.tar" "$REG2/pushed:latest"
            rm -rf "$W/store-$tool-$run"
            ;;
        skopeo-push)
            fresh_target "$tool-$run"
            rm -rf "$W/skopeo-tmp"
            mkdir -p "$W/skopeo-tmp"
            timed "$case" "$tool" "$run" env TMPDIR="$W/skopeo-tmp" skopeo --insecure-policy \
                copy -q --dest-tls-verify=false "oci-archive:$W/push-src.tar" "docker://$REG2/pushed:latest"
            rm -rf "$W/skopeo-tmp" "$W/store-$tool-$run"
            ;;
        dp-copy)
            fresh_target "$tool-$run"
            rm -rf "$W/copy-cache"
            timed "$case" "$tool" "$run" env TMPDIR="$W/tmp" "$DP" -q copy --cache-dir "$W/copy-cache" \
                "$ref" "$REG2/copied:latest"
            rm -rf "$W/copy-cache" "$W/store-$tool-$run"
            ;;
        skopeo-copy)
            fresh_target "$tool-$run"
            rm -rf "$W/skopeo-tmp"
            mkdir -p "$W/skopeo-tmp"
            timed "$case" "$tool" "$run" env TMPDIR="$W/skopeo-tmp" skopeo --insecure-policy \
                copy -q --src-tls-verify=false --dest-tls-verify=false "docker://$ref" \
                "docker://$REG2/copied:latest"
            rm -rf "$W/skopeo-tmp" "$W/store-$tool-$run"
            ;;
        *) die "unknown tool $tool" ;;
    esac
}

# fresh_target NAME: a new, empty registry for one push or copy run (REG2). A registry of its
# own per run, so that neither tool can mount what an earlier run put there (skopeo's blob
# info cache remembers where it pushed).
fresh_target() {
    start_registry "target-$1" "$W/store-$1" >&2
    REG2=$REGISTRY_ADDR
}

# run_case CASE IMAGE TOOL...: BENCH_RUNS rounds, each running every TOOL once, in order.
run_case() {
    local case=$1 image=$2 r tool
    shift 2
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$case,"* ]]; then
        return 0
    fi
    section "$case ($image): ${*}" >&2
    for ((r = 1; r <= RUNS; r++)); do
        for tool in "$@"; do
            run_tool "$tool" "$case" "$image" "$r"
        done
    done
}

# netem_link: two namespaces joined by a veth pair, netem on both ends, a second registry
# (same storage) in one namespace. Returns non-zero (after undoing itself) when netem is missing.
netem_link() {
    NS_REG="dpbench-reg-$$"
    NS_CLI="dpbench-cli-$$"
    VETH_REG="dpbr$$"
    local veth_cli="dpbc$$"
    VETH_CLI=$veth_cli
    ip netns add "$NS_REG" && ip netns add "$NS_CLI" || return 1
    ip link add "$VETH_REG" type veth peer name "$veth_cli" || return 1
    ip link set "$VETH_REG" netns "$NS_REG" && ip link set "$veth_cli" netns "$NS_CLI" || return 1
    ip -n "$NS_REG" addr add "$NET_REG_IP/30" dev "$VETH_REG" &&
        ip -n "$NS_CLI" addr add "$NET_CLI_IP/30" dev "$veth_cli" || return 1
    ip -n "$NS_REG" link set lo up && ip -n "$NS_CLI" link set lo up || return 1
    ip -n "$NS_REG" link set "$VETH_REG" up && ip -n "$NS_CLI" link set "$veth_cli" up || return 1
    local qd=(netem delay "${LINK_DELAY_MS}ms" rate "${LINK_RATE_MBIT}mbit" limit 100000)
    if ! ip netns exec "$NS_REG" tc qdisc add dev "$VETH_REG" root "${qd[@]}" 2>"$W/netem.err" ||
        ! ip netns exec "$NS_CLI" tc qdisc add dev "$veth_cli" root "${qd[@]}" 2>>"$W/netem.err"; then
        log "    netem unavailable: $(tr '\n' ' ' <"$W/netem.err")"
        ip netns del "$NS_CLI" 2>/dev/null || true
        ip netns del "$NS_REG" 2>/dev/null || true
        NS_REG=""
        NS_CLI=""
        return 1
    fi
    local cfg="$SERVICES_DIR/registry-netns.yml" port=5000
    write_registry_config "$cfg" "$port" "$W/store"
    sed -i "s/addr: 127\\.0\\.0\\.1:$port/addr: $NET_REG_IP:$port/" "$cfg"
    start_service registry-netns "$SERVICES_DIR/registry-netns.log" \
        ip netns exec "$NS_REG" docker-registry serve "$cfg"
    wait_until registry-netns "$STARTED_PID" "$SERVICES_DIR/registry-netns.log" 30 \
        ip netns exec "$NS_CLI" curl -sf -o /dev/null -m 5 "http://$NET_REG_IP:$port/v2/"
    REG="$NET_REG_IP:$port"
    RUN_PREFIX=(ip netns exec "$NS_CLI")
    DP_EXTRA=(--plain-http)
    LINK_USED="netem (veth pair between network namespaces $NS_REG and $NS_CLI, netem on both ends)"
    return 0
}

# latency_cases: the small images over a link of LAT_DELAY_MS each way and LAT_RATE_MBIT, with
# requests and connections counted: netem when the slow link used it (its qdiscs changed to
# these figures), else a relay of its own (bench/link_relay.py --handshake, so that each new
# connection costs its round trip; TCP slow start is not emulated there).
latency_cases() {
    section "latency: ${LAT_DELAY_MS} ms each way, ${LAT_RATE_MBIT} Mbit/s" >&2
    if [ -n "$NS_REG" ]; then
        local qd=(netem delay "${LAT_DELAY_MS}ms" rate "${LAT_RATE_MBIT}mbit" limit 100000)
        ip netns exec "$NS_REG" tc qdisc change dev "$VETH_REG" root "${qd[@]}"
        ip netns exec "$NS_CLI" tc qdisc change dev "$VETH_CLI" root "${qd[@]}"
        COUNT_LOG="$SERVICES_DIR/registry-netns.log"
        COUNT_CONNS_FILE=""
        fact lat_link "netem (veth pair between network namespaces, netem on both ends)"
    else
        COUNT_CONNS_FILE="$W/lat-connections"
        start_py_server lat-relay "$BENCH_DIR/link_relay.py" --upstream "$SOURCE_REG" \
            --delay-ms "$LAT_DELAY_MS" --rate-mbit "$LAT_RATE_MBIT" --handshake \
            --count-file "$COUNT_CONNS_FILE"
        REG=$SERVER_ADDR
        RUN_PREFIX=()
        DP_EXTRA=()
        COUNT_LOG=$SOURCE_LOG
        fact lat_link "userspace relay (bench/link_relay.py --handshake on loopback: a new connection's first bytes wait one round trip; no TCP slow start)"
    fi
    fact lat_delay_ms "$LAT_DELAY_MS"
    fact lat_rate_mbit "$LAT_RATE_MBIT"
    fact lat_jobs 3
    local rtt
    rtt=$("${RUN_PREFIX[@]}" curl -s -o /dev/null -w '%{time_total}' "http://$REG/v2/")
    fact lat_probe_s "$rtt"
    info "GET /v2/ over the link (connect + request): ${rtt} s" >&2
    COUNTS="$W/counts.tsv"
    COUNTING=1
    run_case lat-many40 many40 dp-cold dp-cold-j8 skopeo
    run_case lat-small3 small3 dp-cold skopeo
    run_case lat-list-01 list-01 dp-cold skopeo
    run_case lat-list20 list-01 dp-list dp-list-j8 skopeo-list
    COUNTING=0
}

relay_link() {
    start_py_server link-relay "$BENCH_DIR/link_relay.py" --upstream "$SOURCE_REG" \
        --delay-ms "$LINK_DELAY_MS" --rate-mbit "$LINK_RATE_MBIT"
    REG=$SERVER_ADDR
    RUN_PREFIX=()
    DP_EXTRA=()
    LINK_USED="userspace relay (bench/link_relay.py on loopback; kernel has no netem)"
}

main() {
    section "packages" >&2
    ensure_packages docker-registry:docker-registry skopeo:skopeo iproute2:ip \
        time:/usr/bin/time curl:curl python3:python3 >&2

    if [ -n "${BENCH_BIN:-}" ]; then
        DP=$BENCH_BIN
    else
        section "building docker-pull (release)" >&2
        command -v cargo >/dev/null 2>&1 || die "cargo not found (or set BENCH_BIN)"
        (cd "$ROOT" && cargo build --release >&2)
        DP="${CARGO_TARGET_DIR:-$ROOT/target}/release/docker-pull"
    fi
    [ -x "$DP" ] || die "no docker-pull binary at $DP"

    mkdir -p "$WORK_PARENT"
    W=$(mktemp -d "$WORK_PARENT/docker-pull-bench.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$W/tmp"
    RESULTS="$W/results.tsv"
    FACTS="$W/facts.tsv"
    : >"$RESULTS"
    : >"$FACTS"
    services_init "$W/services"

    fact scale "$SCALE"
    fact runs "$RUNS"
    fact nproc "$(nproc)"
    fact kernel "$(uname -srm)"
    fact memory "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    fact cpu "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    fact loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
    fact docker_pull "$("$DP" --version | head -n1)"
    fact skopeo "$(skopeo --version)"
    fact registry "$(docker-registry --version 2>&1 | head -n1)"
    fact python "$(python3 --version 2>&1)"
    fact time "$(/usr/bin/time --version 2>&1 | head -n1)"
    fact link_delay_ms "$LINK_DELAY_MS"
    fact link_rate_mbit "$LINK_RATE_MBIT"

    section "registry and images ($SCALE)" >&2
    start_registry registry "$W/store" >&2
    SOURCE_REG=$REGISTRY_ADDR
    SOURCE_LOG=$REGISTRY_LOG
    local started=$SECONDS
    python3 "$BENCH_DIR/push_images.py" "$SOURCE_REG" "$SCALE" "$W/images.json" >&2
    info "pushed in $((SECONDS - started)) s" >&2

    REG=$SOURCE_REG
    run_case cold-big5 big5 dp-cold skopeo
    run_case cold-big1 big1 dp-cold skopeo

    section "warming the cache with big5" >&2
    dp --cache-dir "$W/warm" -o "$W/ref.tar" "$REG/big5:latest" >/dev/null
    run_case warm-big5 big5 dp-warm skopeo cp
    run_case warm-oci-dir-big5 big5 dp-oci-dir-warm
    rm -rf "$W/warm" "$W/ref.tar"

    run_case after-base-app45 app45 dp-after-base skopeo
    run_case no-cache-big5 big5 dp-no-cache skopeo

    if [ "${BENCH_PUSH:-1}" = 1 ]; then
        section "push and copy, each run into a new empty registry" >&2
        dp --cache-dir "$W/push-cache" -o "$W/push-src.tar" "$REG/big5:latest" >/dev/null
        run_case push-big5 big5 dp-push skopeo-push
        run_case push-again-big5 big5 dp-push-again
        run_case copy-big5 big5 dp-copy skopeo-copy
        rm -rf "$W/push-cache" "$W/push-src.tar"
    fi

    if [ "$SLOW" = 1 ]; then
        section "slow link: ${LINK_DELAY_MS} ms each way, ${LINK_RATE_MBIT} Mbit/s" >&2
        local ok=0
        if [ "$LINK_MODE" != relay ]; then
            if netem_link; then ok=1; elif [ "$LINK_MODE" = netem ]; then die "netem is unavailable"; fi
        fi
        if [ "$ok" = 0 ]; then relay_link; fi
        info "link: $LINK_USED" >&2
        local rtt
        rtt=$("${RUN_PREFIX[@]}" curl -s -o /dev/null -w '%{time_total}' "http://$REG/v2/")
        fact link_probe_s "$rtt"
        info "GET /v2/ over the link (connect + request): ${rtt} s" >&2
        run_case slow-link-big5 big5 dp-cold skopeo
    fi
    if [ "$LATENCY" = 1 ]; then
        if [ "$SLOW" != 1 ] && [ "$LINK_MODE" != relay ]; then netem_link || true; fi
        latency_cases
    fi
    if [ "$CONN_RATE_MBIT" != 0 ]; then
        section "per-connection limit: ${CONN_RATE_MBIT} Mbit/s per connection, ${LINK_DELAY_MS} ms each way" >&2
        start_py_server conn-relay "$BENCH_DIR/link_relay.py" --upstream "$SOURCE_REG" \
            --delay-ms "$LINK_DELAY_MS" --rate-mbit 1000 --conn-rate-mbit "$CONN_RATE_MBIT"
        REG=$SERVER_ADDR
        RUN_PREFIX=()
        DP_EXTRA=()
        if [ "$QUICK" = 1 ]; then
            # The quick image is far below the 64 MiB chunking threshold: scale it down too.
            DP_ENV=(DOCKER_PULL_CHUNK_THRESHOLD=1M DOCKER_PULL_CHUNK_SIZE=512K)
            fact conn_chunking "DOCKER_PULL_CHUNK_THRESHOLD=1M DOCKER_PULL_CHUNK_SIZE=512K (quick run)"
        fi
        fact conn_rate_mbit "$CONN_RATE_MBIT"
        run_case per-conn-mid1 mid1 dp-cold dp-one-stream skopeo
        DP_ENV=()
    fi
    fact link_used "$LINK_USED"
    fact loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"

    mkdir -p "$BENCH_DIR/results"
    : >>"$W/counts.tsv"
    python3 "$BENCH_DIR/report.py" "$RESULTS" "$W/images.json" "$FACTS" "$W/counts.tsv" \
        >"$BENCH_DIR/results/latest.md"
    cp "$RESULTS" "$BENCH_DIR/results/latest.tsv"
    cp "$W/counts.tsv" "$BENCH_DIR/results/latest-counts.tsv"
    cp "$W/images.json" "$BENCH_DIR/results/latest-images.json"
    cp "$FACTS" "$BENCH_DIR/results/latest-facts.tsv"
    cat "$BENCH_DIR/results/latest.md"
}

main "$@"
