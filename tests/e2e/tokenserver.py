#!/usr/bin/env python3
"""Bearer token server for the CNCF distribution registry (end-to-end test support).

The registry is configured with

    auth:
      token:
        realm: http://127.0.0.1:<port>/token
        service: <service>
        issuer: <issuer>
        rootcertbundle: <cert>

and this server issues the RS256 JSON Web Tokens it accepts: the JWT header carries the
signing certificate in `x5c` (and its libtrust key id in `kid`); the claims are `iss`, `sub`,
`aud` (the service), `exp`, `nbf`, `iat`, `jti` and `access`.

Who gets what:
  * anonymous callers get `pull` on every repository except those under a `--private` prefix;
  * a `--user NAME:PASSWORD` (HTTP Basic on the GET, or the OAuth2 password grant on a POST)
    gets `pull` and `push` on every repository;
  * wrong credentials get 401; a wrong `service` gets 400.

Only the Python standard library is used; keys are generated and tokens are signed with the
`openssl` command-line tool. `GET /_stats` reports request counters as JSON, `GET /healthz`
answers 200 once the server is ready.

Usage:
    tokenserver.py --listen 127.0.0.1:0 --port-file PORT --key key.pem --cert cert.pem \
        --issuer e2e-issuer --service e2e-registry --user alice:secret --private private/ --ttl 60

The key and certificate are created when the files do not exist yet (`--init-only` creates
them and exits, so a registry can be configured before the server starts).
"""

import argparse
import base64
import binascii
import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def run_openssl(args, data=None) -> bytes:
    proc = subprocess.run(
        ["openssl", *args],
        input=data,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            "openssl %s failed: %s" % (" ".join(args), proc.stderr.decode(errors="replace"))
        )
    return proc.stdout


def ensure_key_and_cert(key: str, cert: str, subject: str) -> None:
    if os.path.exists(key) and os.path.exists(cert):
        return
    run_openssl(
        [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-days", "3650", "-subj", subject,
            "-keyout", key, "-out", cert,
        ]
    )
    os.chmod(key, 0o600)


def pem_to_der(pem: str) -> bytes:
    lines = [
        line.strip()
        for line in pem.splitlines()
        if line.strip() and not line.startswith("-----")
    ]
    return base64.b64decode("".join(lines))


def libtrust_key_id(spki_der: bytes) -> str:
    """The key id libtrust (and so distribution) computes for a public key."""
    digest = hashlib.sha256(spki_der).digest()[:30]
    encoded = base64.b32encode(digest).decode("ascii").rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


class Signer:
    def __init__(self, key: str, cert: str):
        self.key = key
        with open(cert, "r", encoding="ascii") as f:
            cert_pem = f.read()
        first = cert_pem.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
        cert_der = pem_to_der(first)
        spki_der = run_openssl(["x509", "-noout", "-pubkey"], first.encode())
        spki_der = pem_to_der(spki_der.decode("ascii"))
        self.header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(cert_der).decode("ascii")],
            "kid": libtrust_key_id(spki_der),
        }

    def sign(self, claims: dict) -> str:
        signing_input = (
            b64url(json.dumps(self.header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = run_openssl(["dgst", "-sha256", "-sign", self.key], signing_input.encode())
        return signing_input + "." + b64url(signature)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.data = {"requests": 0, "anonymous": 0, "authenticated": {}, "denied": 0, "scopes": []}

    def record(self, user, denied, scopes):
        with self.lock:
            self.data["requests"] += 1
            if denied:
                self.data["denied"] += 1
            elif user is None:
                self.data["anonymous"] += 1
            else:
                self.data["authenticated"][user] = self.data["authenticated"].get(user, 0) + 1
            self.data["scopes"] = (self.data["scopes"] + list(scopes))[-50:]

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.data))


def parse_scope(scope: str):
    """`repository:name:pull,push` -> ("repository", "name", ["pull", "push"])."""
    # Names may contain a port-less host part but never ':'; the type may carry a class
    # such as `repository(plugin)`.
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    kind = parts[0].split("(")[0]
    name = ":".join(parts[1:-1])
    actions = [a for a in parts[-1].split(",") if a]
    return kind, name, actions


class Handler(BaseHTTPRequestHandler):
    server_version = "e2e-tokenserver/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))
        sys.stderr.flush()

    def send_json(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/healthz":
            self.send_json(200, {"ok": True})
            return
        if url.path == "/_stats":
            self.send_json(200, self.server.stats.snapshot())
            return
        if url.path != "/token":
            self.send_json(404, {"error": "not found"})
            return
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        user = None
        auth = self.headers.get("Authorization", "")
        if auth:
            if not auth.lower().startswith("basic "):
                self.deny(query.get("scope", []), "unsupported authorization scheme")
                return
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
                name, _, password = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                self.deny(query.get("scope", []), "malformed basic credentials")
                return
            if self.server.users.get(name) != password:
                self.deny(query.get("scope", []), "invalid username or password")
                return
            user = name
        self.issue(query.get("service", [""])[0], query.get("scope", []), user)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self.send_json(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
        scopes = []
        for s in form.get("scope", []):
            scopes.extend(s.split(" "))
        grant = form.get("grant_type", [""])[0]
        if grant != "password":
            self.send_json(400, {"error": "unsupported_grant_type"})
            return
        name = form.get("username", [""])[0]
        if self.server.users.get(name) != form.get("password", [None])[0]:
            self.deny(scopes, "invalid username or password")
            return
        self.issue(form.get("service", [""])[0], scopes, name)

    def deny(self, scopes, why):
        self.server.stats.record(None, True, scopes)
        self.send_json(
            401,
            {"errors": [{"code": "UNAUTHORIZED", "message": why}]},
            {"WWW-Authenticate": 'Basic realm="e2e-tokenserver"'},
        )

    def issue(self, service, scopes, user):
        srv = self.server
        if service and service != srv.service:
            self.send_json(400, {"errors": [{"code": "DENIED", "message": "unknown service %r" % service}]})
            return
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, wanted = parsed
            if kind != "repository":
                continue
            if user is not None:
                allowed = {"pull", "push"}
            elif any(name.startswith(p) for p in srv.private):
                allowed = set()
            else:
                allowed = {"pull"}
            granted = [a for a in wanted if a in allowed]
            if granted:
                access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": srv.issuer,
            "sub": user or "",
            "aud": srv.service,
            "exp": now + srv.ttl,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        token = srv.signer.sign(claims)
        srv.stats.record(user, False, scopes)
        self.send_json(
            200,
            {
                "token": token,
                "access_token": token,
                "expires_in": srv.ttl,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            },
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 picks a free one)")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--key", required=True, help="RSA private key (PEM); created if missing")
    ap.add_argument("--cert", required=True, help="certificate of --key (PEM); created if missing")
    ap.add_argument("--issuer", default="e2e-token-issuer")
    ap.add_argument("--service", default="e2e-registry")
    ap.add_argument("--ttl", type=int, default=60, help="token lifetime in seconds (expires_in)")
    ap.add_argument("--user", action="append", default=[], help="NAME:PASSWORD with pull+push")
    ap.add_argument("--private", action="append", default=[],
                    help="repository name prefix anonymous callers may not pull")
    ap.add_argument("--init-only", action="store_true", help="create key and cert, then exit")
    args = ap.parse_args()

    ensure_key_and_cert(args.key, args.cert, "/CN=" + args.issuer)
    if args.init_only:
        return

    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    server.signer = Signer(args.key, args.cert)
    server.issuer = args.issuer
    server.service = args.service
    server.ttl = args.ttl
    server.users = {}
    for spec in args.user:
        name, sep, password = spec.partition(":")
        if not sep:
            ap.error("--user wants NAME:PASSWORD")
        server.users[name] = password
    server.private = args.private
    server.stats = Stats()

    actual = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write("%d\n" % actual)
        os.replace(tmp, args.port_file)
    sys.stderr.write("token server listening on %s:%d\n" % (server.server_address[0], actual))
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
