#!/usr/bin/env python3
"""Bearer token server for the CNCF distribution registry (end-to-end test support).

The registry is configured with

    auth:
      token:
        realm: http://127.0.0.1:<port>/token
        service: <service>
        issuer: <issuer>
        rootcertbundle: <root CA certificate>

and this server issues the RS256 JSON Web Tokens it accepts. With `--ca-key`/`--ca-cert` the
signing certificate is issued by that root CA (the registry trusts only the root) and the JWT
header carries the chain in `x5c`, leaf first; without them the signing certificate is
self-signed and is itself the root. The header also has the signing key's libtrust key id in
`kid`; the claims are `iss`, `sub`, `aud` (the service), `exp`, `nbf`, `iat`, `jti` and `access`.

Who gets what:
  * anonymous callers get `pull` on every repository except those under a `--private` prefix;
  * a `--user NAME:PASSWORD` (HTTP Basic on the GET, or the OAuth2 password grant on a POST)
    gets `pull` and `push` on every repository;
  * a `--refresh-token TOKEN:NAME` (the OAuth2 `refresh_token` grant on a POST, what Docker
    calls an identity token) gets what NAME gets; the answer carries a new refresh token for
    NAME (the old one stays valid);
  * wrong credentials get 401 (an unknown refresh token: 400 `invalid_grant`, as OAuth2 says);
    a wrong `service` gets 400.

Lifetimes: `--ttl` is how long a token really works. The registry accepts a token until `exp`
plus its clock-skew leeway (60 s in distribution 2.x), so `exp` is set `--leeway` seconds
before the end of the real lifetime. `expires_in` in the answer is `--claimed-ttl` (default:
`--ttl`), or the `--claimed-ttl-for PREFIX=SECONDS` of a requested repository under PREFIX: a
client told a longer lifetime than the real one meets a 401 from the registry and must renew on
the challenge.

Only the Python standard library is used; keys are generated and tokens are signed with the
`openssl` command-line tool. `GET /_stats` reports request counters as JSON, `GET /_tokens`
every token issued so far (access and refresh tokens, oldest first; `?since=N` skips the first
N), `GET /healthz` answers 200 once the server is ready.

Usage:
    tokenserver.py --listen 127.0.0.1:0 --port-file PORT --key key.pem --cert cert.pem \
        --ca-key ca.key --ca-cert ca.crt --issuer e2e-issuer --service e2e-registry \
        --user alice:secret --refresh-token rt-123:alice --private private/ --ttl 60

Missing keys and certificates are created (`--init-only` creates them and exits, so a registry
can be configured before the server starts).
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
import tempfile
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


def ensure_self_signed(key: str, cert: str, subject: str, ca: bool) -> None:
    if os.path.exists(key) and os.path.exists(cert):
        return
    args = [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
        "-days", "3650", "-subj", subject,
        "-keyout", key, "-out", cert,
    ]
    if ca:
        args += [
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]
    run_openssl(args)
    os.chmod(key, 0o600)


def ensure_issued(key: str, cert: str, subject: str, ca_key: str, ca_cert: str) -> None:
    """A signing key and a certificate for it issued by the CA (created when missing)."""
    if os.path.exists(key) and os.path.exists(cert):
        return
    with tempfile.TemporaryDirectory() as tmp:
        csr = os.path.join(tmp, "signing.csr")
        ext = os.path.join(tmp, "signing.ext")
        with open(ext, "w", encoding="ascii") as f:
            f.write("basicConstraints=critical,CA:FALSE\n")
            f.write("keyUsage=critical,digitalSignature\n")
            f.write("subjectKeyIdentifier=hash\n")
            f.write("authorityKeyIdentifier=keyid\n")
        run_openssl(
            ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", subject,
             "-keyout", key, "-out", csr]
        )
        os.chmod(key, 0o600)
        run_openssl(
            ["x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
             "-set_serial", str(int.from_bytes(secrets.token_bytes(8), "big")),
             "-days", "3650", "-sha256", "-extfile", ext, "-out", cert]
        )


def pem_certificates(pem: str):
    """The PEM blocks of every certificate in `pem`, in order."""
    out = []
    marker = "-----END CERTIFICATE-----"
    for block in pem.split(marker)[:-1]:
        start = block.find("-----BEGIN CERTIFICATE-----")
        if start >= 0:
            out.append(block[start:] + marker + "\n")
    return out


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
    def __init__(self, key: str, cert: str, ca_cert):
        self.key = key
        with open(cert, "r", encoding="ascii") as f:
            chain = pem_certificates(f.read())[:1]
        if ca_cert:
            with open(ca_cert, "r", encoding="ascii") as f:
                chain += pem_certificates(f.read())
        spki_der = run_openssl(["x509", "-noout", "-pubkey"], chain[0].encode())
        spki_der = pem_to_der(spki_der.decode("ascii"))
        self.header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(pem_to_der(c)).decode("ascii") for c in chain],
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
        self.data = {
            "requests": 0,
            "anonymous": 0,
            "authenticated": {},
            "grants": {},
            "denied": 0,
            "scopes": [],
        }
        self.tokens = []

    def record(self, user, denied, scopes, grant=None):
        with self.lock:
            self.data["requests"] += 1
            if denied:
                self.data["denied"] += 1
            elif user is None:
                self.data["anonymous"] += 1
            else:
                self.data["authenticated"][user] = self.data["authenticated"].get(user, 0) + 1
            if grant and not denied:
                self.data["grants"][grant] = self.data["grants"].get(grant, 0) + 1
            self.data["scopes"] = (self.data["scopes"] + list(scopes))[-50:]

    def issued(self, kind, token, user, grant, scopes, expires_in):
        with self.lock:
            self.tokens.append(
                {
                    "kind": kind,
                    "token": token,
                    "user": user or "",
                    "grant": grant,
                    "scopes": list(scopes),
                    "expires_in": expires_in,
                    "time": time.time(),
                }
            )

    def snapshot(self):
        with self.lock:
            data = json.loads(json.dumps(self.data))
            data["tokens_issued"] = len(self.tokens)
            return data

    def tokens_since(self, since):
        with self.lock:
            return json.loads(json.dumps(self.tokens[since:]))


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
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if url.path == "/healthz":
            self.send_json(200, {"ok": True})
            return
        if url.path == "/_stats":
            self.send_json(200, self.server.stats.snapshot())
            return
        if url.path == "/_tokens":
            try:
                since = int(query.get("since", ["0"])[0])
            except ValueError:
                self.send_json(400, {"error": "since wants a number"})
                return
            self.send_json(200, self.server.stats.tokens_since(max(since, 0)))
            return
        if url.path != "/token":
            self.send_json(404, {"error": "not found"})
            return
        user = None
        grant = "anonymous"
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
            grant = "basic"
        self.issue(query.get("service", [""])[0], query.get("scope", []), user, grant)

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
        service = form.get("service", [""])[0]
        if grant == "password":
            name = form.get("username", [""])[0]
            if self.server.users.get(name) != form.get("password", [None])[0]:
                self.deny(scopes, "invalid username or password")
                return
            self.issue(service, scopes, name, grant)
            return
        if grant == "refresh_token":
            presented = form.get("refresh_token", [""])[0]
            with self.server.refresh_lock:
                name = self.server.refresh_tokens.get(presented)
            if not presented or name is None:
                self.server.stats.record(None, True, scopes)
                self.send_json(400, {"error": "invalid_grant"})
                return
            self.issue(service, scopes, name, grant)
            return
        self.send_json(400, {"error": "unsupported_grant_type"})

    def deny(self, scopes, why):
        self.server.stats.record(None, True, scopes)
        self.send_json(
            401,
            {"errors": [{"code": "UNAUTHORIZED", "message": why}]},
            {"WWW-Authenticate": 'Basic realm="e2e-tokenserver"'},
        )

    def claimed_ttl(self, names):
        srv = self.server
        for prefix, seconds in srv.claimed_for:
            if any(name.startswith(prefix) for name in names):
                return seconds
        return srv.claimed_ttl

    def issue(self, service, scopes, user, grant):
        srv = self.server
        if service and service != srv.service:
            self.send_json(400, {"errors": [{"code": "DENIED", "message": "unknown service %r" % service}]})
            return
        access = []
        names = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, wanted = parsed
            if kind != "repository":
                continue
            names.append(name)
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
        expires_in = self.claimed_ttl(names)
        claims = {
            "iss": srv.issuer,
            "sub": user or "",
            "aud": srv.service,
            # The registry accepts a token until exp + leeway: the real lifetime is --ttl.
            "exp": now + srv.ttl - srv.leeway,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        token = srv.signer.sign(claims)
        srv.stats.record(user, False, scopes, grant)
        srv.stats.issued("access", token, user, grant, scopes, expires_in)
        issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        if grant == "refresh_token":
            refresh = "rt-" + secrets.token_hex(20)
            with srv.refresh_lock:
                srv.refresh_tokens[refresh] = user
            srv.stats.issued("refresh", refresh, user, grant, scopes, None)
            body = {
                "access_token": token,
                "expires_in": expires_in,
                "issued_at": issued_at,
                "refresh_token": refresh,
                "scope": " ".join(scopes),
            }
        else:
            body = {
                "token": token,
                "access_token": token,
                "expires_in": expires_in,
                "issued_at": issued_at,
            }
        self.send_json(200, body)


def pair(spec: str, what: str):
    left, sep, right = spec.partition(":")
    if not sep or not left:
        raise argparse.ArgumentTypeError("%s wants %s" % (spec, what))
    return left, right


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 picks a free one)")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--key", required=True, help="RSA signing key (PEM); created if missing")
    ap.add_argument("--cert", required=True, help="certificate of --key (PEM); created if missing")
    ap.add_argument("--ca-key", help="root CA key that issues --cert (PEM); created if missing")
    ap.add_argument("--ca-cert", help="root CA certificate (PEM, the registry's rootcertbundle)")
    ap.add_argument("--issuer", default="e2e-token-issuer")
    ap.add_argument("--service", default="e2e-registry")
    ap.add_argument("--ttl", type=int, default=60,
                    help="real token lifetime in seconds (how long the registry accepts it)")
    ap.add_argument("--claimed-ttl", type=int,
                    help="expires_in told to clients (default: --ttl)")
    ap.add_argument("--claimed-ttl-for", action="append", default=[], metavar="PREFIX=SECONDS",
                    help="expires_in for tokens naming a repository under PREFIX")
    ap.add_argument("--leeway", type=int, default=60,
                    help="the registry's clock-skew leeway on exp, in seconds (distribution: 60)")
    ap.add_argument("--user", action="append", default=[], help="NAME:PASSWORD with pull+push")
    ap.add_argument("--refresh-token", action="append", default=[], metavar="TOKEN:NAME",
                    help="an OAuth2 refresh token (identity token) of user NAME")
    ap.add_argument("--private", action="append", default=[],
                    help="repository name prefix anonymous callers may not pull")
    ap.add_argument("--init-only", action="store_true", help="create keys and certs, then exit")
    args = ap.parse_args()
    if bool(args.ca_key) != bool(args.ca_cert):
        ap.error("--ca-key and --ca-cert go together")
    if args.ttl < 1:
        ap.error("--ttl must be at least 1")

    if args.ca_cert:
        ensure_self_signed(args.ca_key, args.ca_cert, "/CN=" + args.issuer + " root CA", True)
        ensure_issued(args.key, args.cert, "/CN=" + args.issuer, args.ca_key, args.ca_cert)
    else:
        ensure_self_signed(args.key, args.cert, "/CN=" + args.issuer, False)
    if args.init_only:
        return

    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    server.signer = Signer(args.key, args.cert, args.ca_cert)
    server.issuer = args.issuer
    server.service = args.service
    server.ttl = args.ttl
    server.leeway = args.leeway
    server.claimed_ttl = args.claimed_ttl if args.claimed_ttl is not None else args.ttl
    server.claimed_for = []
    for spec in args.claimed_ttl_for:
        prefix, sep, seconds = spec.rpartition("=")
        if not sep or not prefix or not seconds.isdigit():
            ap.error("--claimed-ttl-for wants PREFIX=SECONDS, not %r" % spec)
        server.claimed_for.append((prefix, int(seconds)))
    server.users = {}
    for spec in args.user:
        try:
            name, password = pair(spec, "NAME:PASSWORD")
        except argparse.ArgumentTypeError as e:
            ap.error(str(e))
        server.users[name] = password
    server.refresh_tokens = {}
    server.refresh_lock = threading.Lock()
    for spec in args.refresh_token:
        try:
            token, name = pair(spec, "TOKEN:NAME")
        except argparse.ArgumentTypeError as e:
            ap.error(str(e))
        if name not in server.users:
            ap.error("--refresh-token %s... names %r, who is no --user" % (token[:4], name))
        server.refresh_tokens[token] = name
    server.private = args.private
    server.stats = Stats()

    actual = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write("%d\n" % actual)
        os.replace(tmp, args.port_file)
    sys.stderr.write(
        "token server listening on %s:%d (ttl %ds, expires_in %ds, x5c chain of %d)\n"
        % (server.server_address[0], actual, server.ttl, server.claimed_ttl,
           len(server.signer.header["x5c"]))
    )
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
