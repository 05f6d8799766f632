#!/usr/bin/env python3
"""Turns the runs recorded by bench/run.sh (one JSON object per line) into
medians per benchmark and system: bench/results.json-style JSON, a Markdown
table, and optionally the results section of BENCHMARKS.md (the text between
its "results:start" and "results:end" markers; the rest is left alone).

Usage: report.py RUNS.jsonl --mode full|smoke --out DIR [--markdown BENCHMARKS.md]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
from collections import defaultdict

SYSTEMS = [("wsgate", "wsgate"), ("node", "Node (handout)"), ("bare", "bare broadcast"),
           ("cluster", "wsgate, several servers (PostgreSQL + NATS)")]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def dig(obj, path):
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


# (benchmark, label, path in the result, unit, target) rows of the table.
ROWS = [
    ("saturation", "delivered msgs/s, 10 rooms x 10 clients, closed loop", "delivered_per_sec", "/s",
     ">= 10x Node, >= 0.5x bare"),
    ("saturation", "p99 delivery latency at saturation", "delivery_latency.p99_us", "us", ""),
    ("saturation", "lost deliveries", "lost", "", "0"),
    ("latency_1k", "p50 delivery latency, 10 x 10 at 1,000 msgs/s", "delivery_latency.p50_us", "us", ""),
    ("latency_1k", "p99 delivery latency, 10 x 10 at 1,000 msgs/s", "delivery_latency.p99_us", "us", "<= 2 ms"),
    ("latency_1k", "p99.9 delivery latency, 10 x 10 at 1,000 msgs/s", "delivery_latency.p999_us", "us", ""),
    ("latency_1k", "lost deliveries", "lost", "", "0"),
    ("rooms_100x100", "delivered msgs/s, 100 rooms x 100 clients at 2,000 msgs/s", "delivered_per_sec", "/s", ""),
    ("rooms_100x100", "p99 delivery latency, 100 x 100 at 2,000 msgs/s", "delivery_latency.p99_us", "us",
     "<= 2x bare"),
    ("rooms_100x100", "lost deliveries", "lost", "", "0"),
    ("cross_server", "p50 delivery latency, same server, 10 x 10 at 1,000 msgs/s",
     "delivery_latency_same_url.p50_us", "us", ""),
    ("cross_server", "p99 delivery latency, same server", "delivery_latency_same_url.p99_us", "us", ""),
    ("cross_server", "p50 delivery latency, across servers", "delivery_latency_other_url.p50_us", "us", ""),
    ("cross_server", "p99 delivery latency, across servers", "delivery_latency_other_url.p99_us", "us",
     "<= same + 2 ms"),
    ("cross_server", "lost deliveries", "lost", "", "0"),
    ("connections", "idle connections joined", "joined", "", "19,000"),
    ("connections", "connect failures", "failures", "", "0"),
    ("connections", "WebSocket connects/s", "handshakes_per_sec", "/s", ">= 3x Node, >= 0.7x bare"),
    ("connections", "resident KiB per idle connection (all processes)", "memory_total.per_connection_kib", "KiB",
     "<= 16"),
    ("pingpong", "round trip p50, idle system", "rtt.p50_us", "us", ""),
    ("pingpong", "round trip p99, idle system", "rtt.p99_us", "us", ""),
    ("ingest", "confirmed msgs/s, gRPC, 64 senders", "confirmed_per_sec", "/s", ">= 100,000 (stored)"),
    ("ingest", "confirm latency p99", "confirm_latency.p99_us", "us", ""),
    ("ingest_postgres", "confirmed msgs/s into PostgreSQL, gRPC, 64 senders", "confirmed_per_sec", "/s",
     ">= 50,000 (stored)"),
    ("ingest_postgres", "confirm latency p99, PostgreSQL", "confirm_latency.p99_us", "us", ""),
    ("history", "GetChatHistory page of 50, random position, p50", "random.latency.p50_us", "us", ""),
    ("history", "GetChatHistory page of 50, random position, p99", "random.latency.p99_us", "us", "<= 2 ms"),
    ("history", "GetChatHistory newest page of 50, p99", "newest.latency.p99_us", "us", ""),
    ("history", "messages in the room", "room_messages", "", "10M"),
]


def system_key(system):
    # wsgate on PostgreSQL or on a database kept between runs (history) is
    # in wsgate's column; wsgate_cluster and wsgate_cross (several servers)
    # in their own.
    if system in ("wsgate_cluster", "wsgate_cross"):
        return "cluster"
    return "wsgate" if system.startswith("wsgate") else system


def medians(runs):
    """{bench: {system: {path: median}}} over the runs that reported a value.
    A failed run ("ok": false) is left out: its zeros are not figures."""
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        if run["result"].get("ok") is False:
            continue
        for bench, _, path, _, _ in ROWS:
            if run["bench"] != bench:
                continue
            value = dig(run["result"], path)
            if isinstance(value, (int, float)):
                values[bench][system_key(run["system"])][path].append(value)
    return {
        bench: {system: {path: statistics.median(v) for path, v in paths.items()} for system, paths in systems.items()}
        for bench, systems in values.items()
    }


def fmt(value, unit):
    if value is None:
        return "–"
    if unit == "us":
        return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.0f} µs"
    if unit == "KiB":
        return f"{value:.1f} KiB"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:,.0f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}x"


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except OSError:
        mem_kib = 0
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "commit": commit,
    }


def problems(runs):
    """Runs that failed or were not clean, for the reader to see."""
    out = []
    for run in runs:
        r = run["result"]
        if r.get("ok") is False:
            out.append(f"{run['bench']} · {run['system']} · run {run['run']}: failed: {r.get('error', '?')}")
        elif r.get("clean") is False:
            detail = {k: r.get(k) for k in ("lost", "duplicates", "out_of_order", "error_frames") if r.get(k)}
            ended = r.get("connections_ended") or {}
            if ended:
                detail["connections_ended"] = ended
            out.append(f"{run['bench']} · {run['system']} · run {run['run']}: not clean: {json.dumps(detail)}")
    return out


def markdown(meds, runs, info, n_runs):
    lines = [
        f"Machine: {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB, Linux {info['kernel']}; "
        f"load generator on the same machine; commit `{info['commit']}`; median of {n_runs} run(s).",
        "",
        "| benchmark | figure | " + " | ".join(label for _, label in SYSTEMS)
        + " | wsgate / Node | wsgate / bare | several / wsgate | target |",
        "|---|---|" + "---:|" * len(SYSTEMS) + "---:|---:|---:|---|",
    ]
    for bench, label, path, unit, target in ROWS:
        vals = [dig(meds, f"{bench}") and meds[bench].get(key, {}).get(path) for key, _ in SYSTEMS]
        if all(v is None for v in vals):
            continue
        w, n, b, c = vals
        lines.append(
            f"| {bench} | {label} | " + " | ".join(fmt(v, unit) for v in vals)
            + f" | {ratio(w, n)} | {ratio(w, b)} | {ratio(c, w)} | {target} |"
        )
    lines += ["", "Commands (`@WS@`/`@GRPC@`: the address of the system started for the run):", ""]
    seen = set()
    for run in runs:
        if run["bench"] not in seen:
            seen.add(run["bench"])
            lines.append(f"- {run['bench']}: `{run['command']}`")
    if any(system_key(run["system"]) == "cluster" for run in runs):
        lines += ["", "Several servers: saturation and rooms_100x100 on three servers (one PostgreSQL schema, the NATS "
                  "bus) behind two gateways over all three; cross_server on two servers each behind its own gateway, "
                  "publishers on the first. All processes on this machine: the cost of the bus and the database, "
                  "not a scaling claim."]
    issues = problems(runs)
    if issues:
        lines += ["", "Runs that failed (left out of the medians) or were not clean:", ""] + [f"- {p}" for p in issues]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs")
    ap.add_argument("--mode", default="full")
    ap.add_argument("--out", required=True)
    ap.add_argument("--markdown")
    args = ap.parse_args()

    with open(args.runs) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    n_runs = max((r["run"] for r in runs), default=0)
    meds = medians(runs)
    info = machine()
    table = markdown(meds, runs, info, n_runs)

    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"mode": args.mode, "machine": info, "medians": meds, "runs": runs}, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    print(table)

    if args.markdown:
        with open(args.markdown) as f:
            doc = f.read()
        if START not in doc or END not in doc:
            raise SystemExit(f"{args.markdown} has no {START} ... {END} markers")
        head, rest = doc.split(START, 1)
        _, tail = rest.split(END, 1)
        with open(args.markdown, "w") as f:
            f.write(head + START + "\n" + table + END + tail)


if __name__ == "__main__":
    main()
