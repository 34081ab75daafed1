#!/usr/bin/env python3
"""Push the benchmark's deterministic images to a plain-HTTP registry (standard library only).

Every layer is a valid tar holding one file of incompressible bytes (SHAKE-256 of
"<seed>:<block number>", 1 MiB per block), wrapped as gzip with deflate level 0 (stored
blocks: random data does not compress, and level 0 keeps the pusher fast). Layers are
generated, hashed (diff_id of the tar, digest of the gzip) and streamed to the registry in one
pass: POST /v2/<name>/blobs/uploads/, PATCH with a chunked body, PUT ?digest=. A layer already
pushed to another repository is mounted (POST ?mount=&from=) instead of uploaded again.
The config (fixed dates) and a Docker schema 2 manifest follow, so every digest is the same on
every run.

usage: push_images.py REGISTRY {full,quick} SUMMARY.json

SUMMARY.json gets, per image, its manifest digest, its layer sizes and its total size in
bytes (manifest + config + compressed layers), which the report uses to compute throughput.
"""

import hashlib
import http.client
import json
import platform
import sys
import tarfile
import time
import urllib.parse
import zlib

MIB = 1 << 20
GIB = 1 << 30
BLOCK = MIB

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def latency_images():
    """The small images of the latency cases, the same at every scale: 40 small layers, a
    3-layer image of about 3 MiB, and a list of 20 small images sharing a base layer."""
    found = {
        "many40": [(f"many40-{i}", 24 * 1024) for i in range(40)],
        "small3": [("small3-0", 1536 * 1024), ("small3-1", 1024 * 1024), ("small3-2", 512 * 1024)],
    }
    for i in range(1, 21):
        found[f"list-{i:02d}"] = [
            ("list-base", 512 * 1024),
            (f"list-{i:02d}-a", 256 * 1024),
            (f"list-{i:02d}-b", 128 * 1024),
        ]
    return found


def images(scale):
    """name -> list of (layer seed, content bytes). Layers with the same seed are the same blob."""
    return {**sized_images(scale), **latency_images()}


def sized_images(scale):
    """The images whose size depends on the scale."""
    if scale == "full":
        fifth = GIB // 5
        return {
            "big5": [(f"big5-{i}", fifth + (GIB - 5 * fifth if i == 4 else 0)) for i in range(5)],
            "big1": [("big1-0", GIB)],
            "mid1": [("mid1-0", 256 * MIB)],
            "base45": [("shared-base", 40 * MIB), ("base45-top", 5 * MIB)],
            "app45": [("shared-base", 40 * MIB), ("app45-top", 5 * MIB)],
        }
    return {
        "big5": [(f"big5-{i}", MIB + 256 * 1024) for i in range(5)],
        "big1": [("big1-0", 6 * MIB)],
        "mid1": [("mid1-0", 4 * MIB)],
        "base45": [("shared-base", 3 * MIB), ("base45-top", 512 * 1024)],
        "app45": [("shared-base", 3 * MIB), ("app45-top", 512 * 1024)],
    }


def host_arch():
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )


class Layer:
    """Generates one layer's gzip bytes in pieces and records diff_id, digest and size."""

    def __init__(self, seed, size):
        self.seed = seed
        self.size = size
        self.diff_id = None
        self.digest = None
        self.compressed_size = 0

    def tar_pieces(self):
        info = tarfile.TarInfo(f"bench/{self.seed}.bin")
        info.size = self.size
        info.mode = 0o644
        info.mtime = 946684800  # 2000-01-01, fixed
        info.uname = info.gname = "root"
        yield info.tobuf(format=tarfile.USTAR_FORMAT)
        left = self.size
        block = 0
        while left > 0:
            n = min(BLOCK, left)
            yield hashlib.shake_256(f"{self.seed}:{block}".encode()).digest(n)
            left -= n
            block += 1
        pad = (-self.size) % 512
        yield b"\0" * (pad + 1024)

    def gzip_pieces(self):
        tar_hash = hashlib.sha256()
        gz_hash = hashlib.sha256()
        size = 0
        comp = zlib.compressobj(0, zlib.DEFLATED, 31)
        for piece in self.tar_pieces():
            tar_hash.update(piece)
            out = comp.compress(piece)
            if out:
                gz_hash.update(out)
                size += len(out)
                yield out
        out = comp.flush()
        gz_hash.update(out)
        size += len(out)
        yield out
        self.diff_id = "sha256:" + tar_hash.hexdigest()
        self.digest = "sha256:" + gz_hash.hexdigest()
        self.compressed_size = size


class Registry:
    def __init__(self, addr):
        self.addr = addr

    def request(self, method, path, body=None, headers=None, chunked=False):
        conn = http.client.HTTPConnection(self.addr, timeout=600)
        try:
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.headers, data
        finally:
            conn.close()

    def _location(self, headers):
        loc = headers.get("Location")
        if not loc:
            raise RuntimeError("registry gave no Location for the upload")
        parts = urllib.parse.urlsplit(loc)
        return urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))

    def blob_exists(self, repo, digest):
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        return status == 200

    def mount(self, repo, digest, source):
        q = urllib.parse.urlencode({"mount": digest, "from": source})
        status, _, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/?{q}")
        return status == 201

    def upload_stream(self, repo, pieces, digest_of):
        """Uploads the bytes of `pieces`; digest_of() gives the digest once they are consumed."""
        status, headers, data = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if status != 202:
            raise RuntimeError(f"POST upload for {repo}: HTTP {status} {data[:200]!r}")
        loc = self._location(headers)
        status, headers, data = self.request(
            "PATCH", loc, body=pieces, headers={"Content-Type": "application/octet-stream"},
            chunked=True,
        )
        if status != 202:
            raise RuntimeError(f"PATCH upload for {repo}: HTTP {status} {data[:200]!r}")
        loc = self._location(headers)
        sep = "&" if "?" in loc else "?"
        q = urllib.parse.urlencode({"digest": digest_of()})
        status, _, data = self.request(
            "PUT", f"{loc}{sep}{q}", body=b"", headers={"Content-Length": "0"}
        )
        if status != 201:
            raise RuntimeError(f"PUT upload for {repo}: HTTP {status} {data[:200]!r}")

    def upload_bytes(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.blob_exists(repo, digest):
            self.upload_stream(repo, [data], lambda: digest)
        return digest

    def put_manifest(self, repo, tag, body):
        status, _, data = self.request(
            "PUT", f"/v2/{repo}/manifests/{tag}", body=body,
            headers={"Content-Type": MANIFEST_TYPE},
        )
        if status != 201:
            raise RuntimeError(f"PUT manifest {repo}:{tag}: HTTP {status} {data[:300]!r}")


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ("full", "quick"):
        sys.exit("usage: push_images.py REGISTRY {full,quick} SUMMARY.json")
    addr, scale, summary_path = sys.argv[1:]
    reg = Registry(addr)
    pushed = {}  # layer seed -> (Layer, repo it was pushed to)
    summary = {}
    for name, layers in images(scale).items():
        started = time.monotonic()
        done = []
        for seed, size in layers:
            if seed in pushed:
                layer, source = pushed[seed]
                if not reg.mount(name, layer.digest, source):
                    reg.upload_stream(name, layer.gzip_pieces(), lambda l=layer: l.digest)
            else:
                layer = Layer(seed, size)
                reg.upload_stream(name, layer.gzip_pieces(), lambda l=layer: l.digest)
                pushed[seed] = (layer, name)
            done.append(layer)
        config = {
            "architecture": host_arch(),
            "os": "linux",
            "created": "2000-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in done]},
            "history": [
                {"created": "2000-01-01T00:00:00Z", "created_by": f"bench layer {l.seed}"}
                for l in done
            ],
        }
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_digest = reg.upload_bytes(name, config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": len(config_bytes), "digest": config_digest},
            "layers": [
                {"mediaType": LAYER_TYPE, "size": l.compressed_size, "digest": l.digest}
                for l in done
            ],
        }
        manifest_bytes = json.dumps(manifest, indent=3).encode()
        reg.put_manifest(name, "latest", manifest_bytes)
        layer_bytes = sum(l.compressed_size for l in done)
        summary[name] = {
            "manifest_digest": "sha256:" + hashlib.sha256(manifest_bytes).hexdigest(),
            "layers": [{"digest": l.digest, "size": l.compressed_size} for l in done],
            "layer_bytes": layer_bytes,
            "bytes": layer_bytes + len(config_bytes) + len(manifest_bytes),
        }
        print(
            f"    pushed {name}:latest: {len(done)} layers, {layer_bytes / MIB:.1f} MiB "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )
    with open(summary_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
