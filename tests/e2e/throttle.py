#!/usr/bin/env python3
"""A throttling TCP relay (end-to-end test support).

Listens on `--listen` and relays every connection to `--target`, passing at most `--rate`
bytes per second in each direction of each connection (`--rate 0`: no limit). In front of a
registry it makes a pull of a multi-layer image last as long as a test needs (longer than a
short-lived token, say) without a big image. Without a limit it is a plain port forwarder,
e.g. from `[::1]:PORT` to `127.0.0.1:PORT`.

Each connection is logged on stderr when it opens and closes (with the bytes relayed). Only the
Python standard library is used.

Usage:
    throttle.py --listen 127.0.0.1:0 --port-file PORT --target 127.0.0.1:5000 --rate 262144
"""

import argparse
import os
import socket
import sys
import threading
import time

counter_lock = threading.Lock()
counter = [0]


def log(message):
    sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), message))
    sys.stderr.flush()


def pump(src, dst, rate, totals, key):
    """Copies src to dst at `rate` bytes/s at most, then half-closes dst."""
    chunk = max(1024, min(16384, rate // 20)) if rate else 65536
    start = time.monotonic()
    sent = 0
    try:
        while True:
            data = src.recv(chunk)
            if not data:
                break
            dst.sendall(data)
            sent += len(data)
            totals[key] = sent
            if not rate:
                continue
            # Never ahead of rate * elapsed.
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay(client, peer, target, rate):
    with counter_lock:
        counter[0] += 1
        number = counter[0]
    try:
        upstream = socket.create_connection(target, timeout=10)
        upstream.settimeout(None)
    except OSError as e:
        log("#%d from %s:%d: cannot reach %s:%d: %s" % (number, peer[0], peer[1], *target, e))
        client.close()
        return
    log("#%d from %s:%d relayed to %s:%d" % (number, peer[0], peer[1], *target))
    totals = {"up": 0, "down": 0}
    up = threading.Thread(target=pump, args=(client, upstream, rate, totals, "up"), daemon=True)
    up.start()
    pump(upstream, client, rate, totals, "down")
    up.join()
    client.close()
    upstream.close()
    log("#%d closed: %d bytes up, %d bytes down" % (number, totals["up"], totals["down"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:0",
                    help="HOST:PORT or [IPV6]:PORT (port 0 picks a free one)")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--target", required=True, help="HOST:PORT to relay to")
    ap.add_argument("--rate", type=int, required=True,
                    help="bytes per second per connection and direction (0: no limit)")
    args = ap.parse_args()
    if args.rate < 0:
        ap.error("--rate must not be negative")
    thost, _, tport = args.target.rpartition(":")
    target = (thost.strip("[]"), int(tport))

    host, _, port = args.listen.rpartition(":")
    host = host or "127.0.0.1"
    family = socket.AF_INET
    if host.startswith("["):
        host = host.strip("[]")
        family = socket.AF_INET6
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(64)
    actual = listener.getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write("%d\n" % actual)
        os.replace(tmp, args.port_file)
    log("relay listening on %s:%d -> %s:%d at %s per connection"
        % (listener.getsockname()[0], actual, *target,
           "%d bytes/s" % args.rate if args.rate else "full speed"))
    try:
        while True:
            client, peer = listener.accept()
            threading.Thread(target=relay, args=(client, peer, target, args.rate),
                             daemon=True).start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
