#!/usr/bin/env python3
"""Turn bench/run.sh's raw results into the Markdown report (standard library only).

usage: report.py RESULTS.tsv IMAGES.json FACTS.tsv [COUNTS.tsv] > report.md

RESULTS.tsv: case, tool, run, wall s, user s, sys s, peak RSS KiB (one line per timed run).
IMAGES.json: push_images.py's summary (bytes per image). FACTS.tsv: key, value.
COUNTS.tsv: case, tool, run, HTTP requests, TCP connections (the latency cases).
"""

import json
import statistics
import sys

WARM_OCI_GOAL_S = 0.1
LINK_GOAL_PCT = 95.0
COLD_GOAL_RATIO = 0.3
NO_CACHE_GOAL_RATIO = 0.25
CPU_PER_GIB_GOAL = 1.5
WARM_CP_GOAL_RATIO = 1.5
RSS_GOAL_MIB = 24
FLOOR_GOAL_RATIO = 1.5
MANY_GOAL_RATIO = 0.1
LIST_SINGLE_GOAL_RATIO = 2.0
LIST_SKOPEO_GOAL_RATIO = 0.1
LIST_IMAGES = [f"list-{i:02d}" for i in range(1, 21)]

LATENCY_CASES = [
    ("lat-many40", "many40 (40 small layers)", ["many40"]),
    ("lat-small3", "small3 (3 layers, 3 MiB)", ["small3"]),
    ("lat-list-01", "list-01 alone (one image of the list)", ["list-01"]),
    ("lat-list20", "the list of 20 images (skopeo: one after another)", LIST_IMAGES),
]

CASES = [
    ("cold-big5", "cold pull of big5 (5 layers; empty cache / empty tmp dir)"),
    ("cold-big1", "cold pull of big1 (1 layer)"),
    ("warm-big5", "warm pull of big5 (docker-pull cache populated; skopeo has no cache, so it pulls cold)"),
    ("warm-oci-dir-big5", "warm `-f oci-dir` of big5 (blobs hard-linked from the cache)"),
    ("after-base-app45", "app45 after base45 (docker-pull cache warm from base45; skopeo cold)"),
    ("no-cache-big5", "`--no-cache` pull of big5 (skopeo: cold, as always)"),
    ("push-big5", "push of a big5 archive into a new empty registry (skopeo: `copy oci-archive:` of the same file)"),
    ("push-again-big5", "the same push again (every blob there: HEAD only)"),
    ("copy-big5", "registry to registry (docker-pull: empty cache; skopeo `copy docker:// docker://`)"),
    ("slow-link-big5", "cold pull of big5 over the emulated slow link"),
    ("per-conn-mid1", "cold pull of mid1 (one layer) through a relay that limits each connection"),
]

TOOL_NAMES = {
    "dp-cold": "docker-pull",
    "dp-warm": "docker-pull (warm)",
    "dp-oci-dir-warm": "docker-pull -f oci-dir (warm)",
    "dp-no-cache": "docker-pull --no-cache",
    "dp-one-stream": "docker-pull, one stream (DOCKER_PULL_CHUNK_THRESHOLD=0)",
    "dp-after-base": "docker-pull (after base45)",
    "skopeo": "skopeo",
    "dp-push": "docker-pull push",
    "dp-push-again": "docker-pull push (again)",
    "dp-copy": "docker-pull copy",
    "skopeo-push": "skopeo",
    "skopeo-copy": "skopeo",
    "cp": "cp of the same-size archive",
    "dp-list": "docker-pull, 20 images in one command",
    "dp-list-j8": "docker-pull -j 8, 20 images in one command",
    "dp-cold-j8": "docker-pull -j 8",
    "skopeo-list": "skopeo, 20 commands one after another",
}


def load(path):
    runs = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            case, tool, _run, wall, user, sys_, rss = line.rstrip("\n").split("\t")
            runs.setdefault((case, tool), []).append(
                (float(wall), float(user) + float(sys_), int(rss) / 1024)
            )
    return runs


def load_counts(path):
    counts = {}
    if not path:
        return counts
    with open(path, encoding="utf-8") as f:
        for line in f:
            case, tool, _run, requests, conns = line.rstrip("\n").split("\t")
            counts.setdefault((case, tool), []).append((int(requests), int(conns)))
    return counts


def floor_s(names, images, facts, jobs=None):
    """The round-trip floor of pulling `names` in one docker-pull command, in seconds: connect,
    `/v2/` (the other connections opened alongside), the manifests (together), then the
    distinct blobs (configs and layers) -j at a time, one round trip per round, plus every
    byte at the link rate."""
    rtt = 2 * float(facts["lat_delay_ms"]) / 1000
    rate = float(facts["lat_rate_mbit"]) * 1e6 / 8
    jobs = jobs or int(facts.get("lat_jobs", 3))
    blobs = {}
    manifests = 0
    for name in names:
        img = images[name]
        for layer in img["layers"]:
            blobs[layer["digest"]] = layer["size"]
        blobs[f"config-{name}"] = img["bytes"] - img["layer_bytes"]
        manifests += 1
    rounds = -(-len(blobs) // jobs)
    nbytes = sum(blobs.values())
    return rtt * (3 + rounds) + nbytes / rate, len(blobs), rounds


def latency_section(w, stats, counts, images, facts, goals):
    if not any(c.startswith("lat-") for (c, _t) in stats):
        return
    rtt_ms = 2 * float(facts["lat_delay_ms"])
    w("## Latency")
    w("")
    w(f"Link: {facts.get('lat_link')}, {facts['lat_delay_ms']} ms each way ({rtt_ms:.0f} ms round trip), "
      f"{facts['lat_rate_mbit']} Mbit/s; first GET /v2/ over it (connect + request): "
      f"{float(facts.get('lat_probe_s', 0)) * 1000:.0f} ms. Requests are the lines of the "
      "registry's access log during the run, connections the TCP connections accepted on the "
      "registry's side of the link (medians). The floor: connect, `/v2/` (the other connections "
      "opened alongside), the manifests, the distinct blobs `-j 3` at a time (one round trip per "
      "round), and every byte at the link rate.")
    w("")
    w("The goals are for default flags (`-j 3`); the `-j 8` rows show what more connections buy "
      "where round trips, not bytes, set the time.")
    w("")
    w("| case | tool | wall s | requests | connections | floor s (blobs, rounds) | wall / floor | wall ratio |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for case, title, names in LATENCY_CASES:
        tools = sorted((t for (c, t) in stats if c == case), key=lambda t: not t.startswith("dp-"))
        if not tools:
            continue
        sk = next((t for t in tools if t.startswith("skopeo")), None)
        for i, tool in enumerate(tools):
            floor, nblobs, rounds = floor_s(names, images, facts, 8 if tool.endswith("-j8") else None)
            s = stats[(case, tool)]
            c = counts.get((case, tool), [])
            req = f"{med([x[0] for x in c]):.0f}" if c else ""
            conn = f"{med([x[1] for x in c]):.0f}" if c else ""
            dp = tool.startswith("dp-")
            fl = f"{floor:.2f} ({nblobs}, {rounds})" if dp else ""
            vs_floor = ratio(s["wall"], floor) if dp else ""
            vs = f"{ratio(s['wall'], stats[(case, sk)]['wall'])} vs skopeo" if dp and sk else ""
            w(f"| {case + ': ' + title if i == 0 else ''} | {TOOL_NAMES.get(tool, tool)} | "
              f"{fmt_s(s['wall'])} [{fmt_s(s['wall_min'])}–{fmt_s(s['wall_max'])}] | {req} | "
              f"{conn} | {fl} | {vs_floor} | {vs} |")
    w("")
    small = stats.get(("lat-small3", "dp-cold"))
    if small:
        r = small["wall"] / floor_s(["small3"], images, facts)[0]
        goals.append((f"small3 over the {rtt_ms:.0f} ms link within {FLOOR_GOAL_RATIO}× its floor",
                      f"{r:.2f}×", r <= FLOOR_GOAL_RATIO))
    wall_goal(goals, stats, f"many40 over the {rtt_ms:.0f} ms link at most {MANY_GOAL_RATIO}× skopeo",
              ("lat-many40", "dp-cold"), ("lat-many40", "skopeo"), MANY_GOAL_RATIO)
    wall_goal(goals, stats, f"the list of 20 at most {LIST_SINGLE_GOAL_RATIO}× one of its images "
              "alone (all 20 have the same shape)", ("lat-list20", "dp-list"),
              ("lat-list-01", "dp-cold"), LIST_SINGLE_GOAL_RATIO)
    wall_goal(goals, stats, f"the list of 20 at most {LIST_SKOPEO_GOAL_RATIO}× skopeo one image "
              "after another", ("lat-list20", "dp-list"), ("lat-list20", "skopeo-list"),
              LIST_SKOPEO_GOAL_RATIO)


def wall_goal(goals, stats, text, case, other, limit):
    """A goal on the ratio of two medians of wall time, when both were measured."""
    a, b = stats.get(case), stats.get(other)
    if a and b:
        r = a["wall"] / b["wall"]
        goals.append((text, f"{r:.3f}×", r <= limit))


def med(values):
    return statistics.median(values)


def summary(samples):
    walls = [s[0] for s in samples]
    return {
        "wall": med(walls),
        "wall_min": min(walls),
        "wall_max": max(walls),
        "cpu": med([s[1] for s in samples]),
        "rss": med([s[2] for s in samples]),
        "rss_max": max(s[2] for s in samples),
        "n": len(samples),
    }


def ratio(a, b):
    if b <= 0:
        return "n/a"
    return f"{a / b:.2f}"


def per_gib(cpu, case, images):
    """CPU seconds per GiB of the image the case pulls (the case name ends with it)."""
    image = images.get(case.rsplit("-", 1)[-1])
    if not image or not image.get("bytes"):
        return ""
    return f"{cpu / (image['bytes'] / 2**30):.2f}"


def fmt_s(x):
    return f"{x:.4f}" if x < 0.1 else f"{x:.3f}" if x < 1 else f"{x:.2f}"


def main():
    results_path, images_path, facts_path = sys.argv[1:4]
    counts = load_counts(sys.argv[4] if len(sys.argv) > 4 else None)
    runs = load(results_path)
    with open(images_path, encoding="utf-8") as f:
        images = json.load(f)
    facts = {}
    with open(facts_path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            facts[key] = value
    stats = {k: summary(v) for k, v in runs.items()}
    out = []
    w = out.append

    w("# docker-pull benchmark")
    w("")
    w(f"Scale: **{facts.get('scale')}**, {facts.get('runs')} runs per tool and case, tools "
      "interleaved (A B A B ...); medians, wall range in brackets. "
      "Wall from bash's `$EPOCHREALTIME` around GNU time; CPU = user + sys; RSS = peak resident set (GNU time `%M`). Ratios are docker-pull / other "
      "(below 1 means docker-pull is faster or smaller).")
    w("")
    w("| machine | |")
    w("| --- | --- |")
    for key, label in [
        ("nproc", "cores (nproc)"), ("cpu", "CPU"), ("memory", "memory"), ("kernel", "kernel"),
        ("docker_pull", "docker-pull"), ("skopeo", "skopeo"), ("registry", "registry"),
        ("python", "python"), ("time", "time"), ("loadavg_start", "load average at start"),
        ("loadavg_end", "load average at end"),
    ]:
        w(f"| {label} | {facts.get(key, '?')} |")
    w("")
    sizes = ", ".join(
        f"{name} {img['bytes'] / 2**20:.1f} MiB ({len(img['layers'])} layers)"
        for name, img in images.items()
        if name not in LIST_IMAGES[1:]
    ) + " (list-02 … list-20 alike, sharing list-01's base layer)"
    w(f"Images (compressed, as pulled): {sizes}.")
    w("")

    w("## Loopback registry")
    w("")
    w("| case | tool | wall s | CPU s | CPU s per GiB | peak RSS MiB | wall ratio | CPU ratio | RSS ratio |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for case, title in CASES:
        if case in ("slow-link-big5", "per-conn-mid1"):
            continue
        tools = [t for (c, t) in stats if c == case]
        if not tools:
            continue
        dp_tools = [t for t in tools if t.startswith("dp-")]
        others = [t for t in tools if not t.startswith("dp-")]
        first = True
        for tool in dp_tools + others:
            s = stats[(case, tool)]
            label = f"{case}: {title}" if first else ""
            first = False
            ratios = ["", "", ""]
            sk = next((t for t in others if t.startswith("skopeo")), None)
            if tool.startswith("dp-") and sk:
                o = stats[(case, sk)]
                ratios = [ratio(s["wall"], o["wall"]) + " vs skopeo",
                          ratio(s["cpu"], o["cpu"]), ratio(s["rss"], o["rss"])]
            w(f"| {label} | {TOOL_NAMES.get(tool, tool)} | {fmt_s(s['wall'])} "
              f"[{fmt_s(s['wall_min'])}–{fmt_s(s['wall_max'])}] | {s['cpu']:.2f} | "
              f"{per_gib(s['cpu'], case, images)} | "
              f"{s['rss']:.0f} | {ratios[0]} | {ratios[1]} | {ratios[2]} |")
            if tool.startswith("dp-") and "cp" in others:
                c = stats[(case, "cp")]
                w(f"| | docker-pull warm / cp | | | | | {ratio(s['wall'], c['wall'])} vs cp | "
                  f"{ratio(s['cpu'], c['cpu'])} | |")
    w("")

    goals = []
    wall_goal(goals, stats, f"cold pull of big5 at most {COLD_GOAL_RATIO}× skopeo's wall time",
              ("cold-big5", "dp-cold"), ("cold-big5", "skopeo"), COLD_GOAL_RATIO)
    wall_goal(goals, stats, f"`--no-cache` pull of big5 at most {NO_CACHE_GOAL_RATIO}× skopeo's "
              "wall time", ("no-cache-big5", "dp-no-cache"), ("no-cache-big5", "skopeo"),
              NO_CACHE_GOAL_RATIO)
    for case, tool in (("cold-big5", "dp-cold"), ("no-cache-big5", "dp-no-cache")):
        s = stats.get((case, tool))
        if s and "big5" in images:
            per = s["cpu"] / (images["big5"]["bytes"] / 2**30)
            goals.append((f"{case}: at most {CPU_PER_GIB_GOAL} CPU s per GiB", f"{per:.2f}",
                          per <= CPU_PER_GIB_GOAL))
    rss = max((v["rss_max"] for (c, t), v in stats.items() if t.startswith("dp-")), default=None)
    if rss is not None:
        goals.append((f"docker-pull peak RSS at most {RSS_GOAL_MIB} MiB (largest of every run)",
                      f"{rss:.1f} MiB", rss <= RSS_GOAL_MIB))
    wall_goal(goals, stats, f"warm pull of big5 at most {WARM_CP_GOAL_RATIO}× `cp` of the archive",
              ("warm-big5", "dp-warm"), ("warm-big5", "cp"), WARM_CP_GOAL_RATIO)
    oci = stats.get(("warm-oci-dir-big5", "dp-oci-dir-warm"))
    if oci:
        goals.append((f"warm `-f oci-dir` of big5 under {WARM_OCI_GOAL_S} s wall",
                      f"{oci['wall']:.3f} s", oci["wall"] < WARM_OCI_GOAL_S))

    slow = [t for (c, t) in stats if c == "slow-link-big5"]
    if slow:
        rate = float(facts["link_rate_mbit"]) * 1e6 / 8
        nbytes = images["big5"]["bytes"]
        w("## Slow link")
        w("")
        w(f"Link: {facts.get('link_used')}; {facts.get('link_delay_ms')} ms each way "
          f"({2 * float(facts.get('link_delay_ms', 0)):.0f} ms RTT), "
          f"{facts.get('link_rate_mbit')} Mbit/s = {rate / 1e6:.1f} MB/s. "
          f"First GET /v2/ over it (connect + request): {float(facts.get('link_probe_s', 0)) * 1000:.0f} ms. "
          f"Throughput = image bytes ({nbytes / 1e6:.1f} MB: manifest, config, layers) / wall time "
          "of the whole command (start-up and archive writing included).")
        w("")
        w("| tool | wall s | throughput MB/s | % of link rate | CPU s | peak RSS MiB |")
        w("| --- | --- | --- | --- | --- | --- |")
        for tool in sorted(slow, key=lambda t: (not t.startswith("dp-"), t)):
            s = stats[("slow-link-big5", tool)]
            tput = nbytes / s["wall"]
            pct = 100 * tput / rate
            w(f"| {TOOL_NAMES.get(tool, tool)} | {fmt_s(s['wall'])} "
              f"[{fmt_s(s['wall_min'])}–{fmt_s(s['wall_max'])}] | {tput / 1e6:.2f} | "
              f"{pct:.1f} % | {s['cpu']:.2f} | {s['rss']:.0f} |")
            if tool == "dp-cold":
                goals.append((f"docker-pull over the slow link at ≥ {LINK_GOAL_PCT:.0f} % of the link rate",
                              f"{pct:.1f} %", pct >= LINK_GOAL_PCT))
        w("")

    conn = [t for (c, t) in stats if c == "per-conn-mid1"]
    if conn:
        nbytes = images["mid1"]["bytes"]
        w("## Per-connection limit")
        w("")
        w(f"Link: a second userspace relay (bench/link_relay.py) holding each connection to "
          f"{facts.get('conn_rate_mbit')} Mbit/s each way, 1000 Mbit/s in all, "
          f"{facts.get('link_delay_ms')} ms each way: what a per-connection limit or a lossy long "
          f"path does to one TCP stream. mid1 is {nbytes / 2**20:.1f} MiB in one layer, so every "
          "tool but chunked docker-pull gets one stream for it."
          + (f" Chunking scaled down for the quick image: {facts['conn_chunking']}."
             if facts.get("conn_chunking") else ""))
        w("")
        w("| tool | wall s | throughput MB/s | CPU s | peak RSS MiB | wall ratio |")
        w("| --- | --- | --- | --- | --- | --- |")
        for tool in ["dp-cold", "dp-one-stream", "skopeo"]:
            if tool not in conn:
                continue
            s = stats[("per-conn-mid1", tool)]
            r = ""
            if tool == "dp-cold" and "dp-one-stream" in conn:
                r = f"{ratio(s['wall'], stats[('per-conn-mid1', 'dp-one-stream')]['wall'])} vs one stream"
                if "skopeo" in conn:
                    r += f", {ratio(s['wall'], stats[('per-conn-mid1', 'skopeo')]['wall'])} vs skopeo"
            w(f"| {TOOL_NAMES.get(tool, tool)} | {fmt_s(s['wall'])} "
              f"[{fmt_s(s['wall_min'])}–{fmt_s(s['wall_max'])}] | {nbytes / s['wall'] / 1e6:.2f} | "
              f"{s['cpu']:.2f} | {s['rss']:.0f} | {r} |")
        w("")

    latency_section(w, stats, counts, images, facts, goals)

    w("## Goals")
    w("")
    w("| goal | measured | met |")
    w("| --- | --- | --- |")
    for goal, measured, met in goals:
        w(f"| {goal} | {measured} | {'met' if met else 'NOT met'} |")
    w("")
    w("## Notes")
    w("")
    w("- The page cache is never dropped: the registry's storage, docker-pull's cache and the "
      "archives stay in RAM, so cold means \"nothing in the tool's cache\", not \"nothing in memory\"; "
      "the numbers measure CPU, memory and copying, not the disk. Each timed run starts after a "
      "`sync` (outside the timing), so it does not pay for the write-back of what earlier runs "
      "and the push of the images left dirty.")
    w("- skopeo has no blob cache (`skopeo copy ... docker-archive:`), so in the warm and "
      "after-base cases it does a cold pull; the warm docker-pull is also compared with `cp` "
      "of an archive of the same size.")
    w("- docker-pull runs with `-q`, its default `-j 3`, `--cache-dir` in the scratch directory "
      "(`TMPDIR` there too); skopeo runs `skopeo --insecure-policy copy -q --src-tls-verify=false "
      "docker://... docker-archive:FILE:NAME:latest` with `TMPDIR` an emptied directory.")
    w("- The registry (docker-registry, distribution) runs on the same machine and competes for "
      f"its {facts.get('nproc')} cores with the client; so does the link relay when it is used. "
      "Other builds may run on this shared machine (see the load averages).")
    w("- Layers are incompressible data in gzip with stored blocks (level 0), so decompression "
      "costs little; real images with deflated layers would cost both tools more CPU per byte "
      "where they decompress.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
