#!/usr/bin/env python3
"""Redirect target for a distribution registry's blobs (end-to-end test support).

A registry configured with the `redirect` storage middleware

    middleware:
      storage:
        - name: redirect
          options:
            baseurl: http://127.0.0.1:<port>/

answers a blob GET with `307 Location: http://127.0.0.1:<port>/docker/registry/v2/blobs/...`,
the blob's path in its storage driver. This server plays the object store behind such a
redirect (S3, a CDN): it serves the files under `--root` (the registry's filesystem
`rootdirectory`) by that path, with `Range` support, and, like a pre-signed S3 URL, refuses a
request that carries an `Authorization` header (400): a client must not send the registry's
credentials to another host.

`GET /_stats` reports what happened as JSON: `served` (requests answered with a file),
`rejected` (requests refused for their Authorization header), `missing`, `bytes` and the last
paths; `GET /healthz` answers 200 once the server is ready. Only the Python standard library.

Usage:
    blobserver.py --listen 127.0.0.1:0 --port-file PORT --root /path/to/registry/storage
"""

import argparse
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.data = {"served": 0, "rejected": 0, "missing": 0, "bytes": 0, "paths": []}

    def add(self, key, path=None, size=0):
        with self.lock:
            self.data[key] += 1
            self.data["bytes"] += size
            if path is not None:
                self.data["paths"] = (self.data["paths"] + ["%s %s" % (key, path)])[-50:]

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.data))


def parse_range(header, size):
    """`bytes=a-b` / `bytes=a-` / `bytes=-n` -> (start, end inclusive), None if unsatisfiable."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    if m.group(1) == "":
        length = int(m.group(2))
        if length == 0:
            return None
        return max(size - length, 0), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


class Handler(BaseHTTPRequestHandler):
    server_version = "e2e-blobserver/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))
        sys.stderr.flush()

    def send_body(self, status, body, content_type="application/json", headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/healthz":
            self.send_body(200, {"ok": True})
            return
        if url.path == "/_stats":
            self.send_body(200, self.server.stats.snapshot())
            return
        if "Authorization" in self.headers:
            # What S3 says to a pre-signed URL that also carries an Authorization header.
            self.server.stats.add("rejected", url.path)
            self.send_body(
                400,
                b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed"
                b"</Message></Error>",
                "application/xml",
            )
            return
        rel = urllib.parse.unquote(url.path).lstrip("/")
        root = self.server.root
        path = os.path.realpath(os.path.join(root, rel))
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            self.server.stats.add("missing", url.path)
            self.send_body(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
            return
        size = os.path.getsize(path)
        start, end, status = 0, size - 1, 200
        headers = {"Accept-Ranges": "bytes"}
        if self.headers.get("Range"):
            wanted = parse_range(self.headers["Range"], size)
            if wanted is None:
                self.send_body(416, b"", "application/octet-stream",
                               {"Content-Range": "bytes */%d" % size})
                return
            start, end = wanted
            status = 206
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, size)
        length = end - start + 1 if size else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.server.stats.add("served", url.path, length if self.command == "GET" else 0)
        if self.command == "HEAD":
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = length
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 picks a free one)")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--root", required=True, help="the registry's storage root directory")
    args = ap.parse_args()

    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    server.root = os.path.realpath(args.root)
    server.stats = Stats()
    actual = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write("%d\n" % actual)
        os.replace(tmp, args.port_file)
    sys.stderr.write("blob server listening on %s:%d, serving %s\n"
                     % (server.server_address[0], actual, server.root))
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
