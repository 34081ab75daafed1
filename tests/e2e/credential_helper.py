#!/usr/bin/env python3
"""A Docker credential helper for the end-to-end tests (`docker-credential-test`).

The tests copy this file into a scratch directory as `docker-credential-test` and put that
directory first on the PATH of docker-pull. It speaks the credential-helper protocol's `get`:
the server address on stdin; on stdout `{"ServerURL": ..., "Username": ..., "Secret": ...}`
from `store.json` next to it (an object keyed by server address, values with `Username` and
`Secret`), or `credentials not found in native keychain` and exit 1 when it has nothing.
`store.json` may also map an address to `{"fail": "message"}`: the helper prints the message
on stderr and exits 2 (a broken helper).

Every call is appended to `calls.log` next to it, one JSON line: the action and the server
address it was asked for, so a test can check what docker-pull asked. Standard library only.
"""

import json
import os
import sys


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    server = sys.stdin.read().strip() if action in ("get", "erase") else ""
    with open(os.path.join(here, "calls.log"), "a", encoding="utf-8") as log:
        log.write(json.dumps({"action": action, "server": server}) + "\n")
    if action != "get":
        sys.stderr.write("docker-credential-test: only `get` is supported, not %r\n" % action)
        return 1
    try:
        with open(os.path.join(here, "store.json"), encoding="utf-8") as f:
            store = json.load(f)
    except FileNotFoundError:
        store = {}
    entry = store.get(server)
    if entry is None:
        sys.stdout.write("credentials not found in native keychain\n")
        return 1
    if "fail" in entry:
        sys.stderr.write("%s\n" % entry["fail"])
        return 2
    sys.stdout.write(
        json.dumps({"ServerURL": server, "Username": entry["Username"], "Secret": entry["Secret"]})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
