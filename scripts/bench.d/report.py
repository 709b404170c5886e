#!/usr/bin/env python3
"""Turns one scripts/bench run into BENCHMARKS.md (tables + ratios) and bench.svg
(throughput and p99 against concurrency). Arguments: results dir, output dir, cores,
duration, warm-up, concurrencies, scenarios."""

import json
import os
import re
import sys

results, out, cores, duration, warmup = sys.argv[1:6]
concurrencies = [int(c) for c in sys.argv[6].split()]
scenarios = sys.argv[7].split()
TICKS = os.sysconf("SC_CLK_TCK")


def loadgen(scenario, c):
    with open(f"{results}/{scenario}-{c}.json") as f:
        return json.load(f)


def pgbench(script, c):
    text = open(f"{results}/pgbench-{script}-{c}.txt").read()
    tps = float(re.search(r"tps = ([\d.]+)", text)[1])
    done = int(re.search(r"number of transactions actually processed: (\d+)", text)[1])
    ticks = int(re.search(r"ticks (\d+)", text)[1])
    lat = [int(x) for x in open(f"{results}/pgbench-{script}-{c}.lat").read().split()]
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0
    return {
        "tps": tps,
        "p50": p(0.5),
        "p99": p(0.99),
        "cpu": ticks * 1e6 / TICKS / done if done else None,
    }


def fmt(v, digits=0):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:.2f}×"


lines = [
    "# Benchmarks",
    "",
    "Produced by one run of `scripts/bench` (numbers below are from that run only; rerun it to",
    "reproduce: it builds the release binaries, makes a fresh database, starts the server,",
    "runs every `loadgen` scenario at each concurrency, then pgbench with the service's own",
    "statements on the same PostgreSQL, and rewrites this file and `bench.svg`).",
    "",
    f"- machine: {cores} cores; PostgreSQL on the same machine (fsync and synchronous_commit on)",
    f"- each point: {warmup} warm-up, then {duration} measured",
    "- CPU per operation from /proc: the server process, and every `postgres` process",
    "- `open` = RegisterOrder then OpenDispute (2 RPCs, 2 transactions);",
    "  its pgbench mimic (`scripts/bench.d/open.sql`) runs the same statements in the same",
    "  transactions; `read` = GetDispute; its mimic (`get.sql`) the same point select",
    "",
    "## Service against PostgreSQL's own limit",
    "",
    "| work | concurrency | service op/s | pgbench tps | throughput ratio | service p99 µs | pgbench p99 µs | p99 ratio | service CPU µs/op (server + PG) | pgbench PG CPU µs/op | CPU ratio |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]
pairs = [("open", "open"), ("read", "get")]
for scenario, script in pairs:
    if scenario not in scenarios:
        continue
    for c in concurrencies:
        s, p = loadgen(scenario, c), pgbench(script, c)
        server, pg = s["server_cpu_us_per_op"], s["postgres_cpu_us_per_op"]
        whole = server + pg if server is not None and pg is not None else None
        lines.append(
            f"| {scenario} | {c} | {fmt(s['operations_per_second'])} | {fmt(p['tps'])} | "
            f"{ratio(s['operations_per_second'], p['tps'])} | {s['latency']['p99_us']:,} | {p['p99']:,} | "
            f"{ratio(s['latency']['p99_us'], p['p99'])} | {fmt(server)} + {fmt(pg)} = {fmt(whole)} | "
            f"{fmt(p['cpu'])} | {ratio(whole, p['cpu'])} |"
        )
# scripts/bench-floor's table, when it ran.
if os.path.exists(f"{results}/floor.md"):
    lines += [
        "",
        "## Against PostgreSQL's floor",
        "",
        "`scripts/bench-floor` at concurrency 16: PostgreSQL's CPU per call against the floor's",
        "(pgbench sending the fewest plain statements that leave the same durable effects, on a",
        "plain schema), and the service's own CPU per call; see \"Against the database floor\"",
        "below for what the floor is and where the difference goes.",
        "",
    ]
    lines += open(f"{results}/floor.md").read().strip().splitlines()
lines += [
    "",
    "## Every scenario",
    "",
    "| scenario | concurrency | op/s | p50 µs | p99 µs | p99.9 µs | max µs | server CPU µs/op | PG CPU µs/op | server RSS MiB | errors |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]
for scenario in scenarios:
    for c in concurrencies:
        s = loadgen(scenario, c)
        q = s["latency"]
        rss = s["server_rss_kib"]
        lines.append(
            f"| {scenario} | {c} | {fmt(s['operations_per_second'])} | {q['p50_us']:,} | {q['p99_us']:,} | "
            f"{q['p999_us']:,} | {q['max_us']:,} | {fmt(s['server_cpu_us_per_op'])} | "
            f"{fmt(s['postgres_cpu_us_per_op'])} | {fmt(rss / 1024 if rss else None)} | "
            f"{sum(s['errors'].values())} |"
        )
        if s.get("delivery_lag"):
            lag = s["delivery_lag"]
            lines.append(
                f"| ↳ watch delivery lag | {c} | | {lag['p50_us']:,} | {lag['p99_us']:,} | "
                f"{lag['p999_us']:,} | {lag['max_us']:,} | | | | |"
            )
lines += ["", "![throughput and p99 against concurrency](bench.svg)", ""]

# The plot: throughput (left) and p99 (right) against concurrency, log-scaled axes.
import math

W, H, PAD = 460, 300, 50
colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]
series = []
for scenario in scenarios:
    series.append((scenario, [(c, loadgen(scenario, c)["operations_per_second"], loadgen(scenario, c)["latency"]["p99_us"]) for c in concurrencies]))
for scenario, script in pairs:
    if scenario in scenarios:
        series.append((f"pgbench {script}", [(c, pgbench(script, c)["tps"], pgbench(script, c)["p99"]) for c in concurrencies]))


def panel(x0, title, index):
    values = [max(v[index], 1) for _, pts in series for v in pts]
    lo, hi = math.log10(min(values)), math.log10(max(values)) + 0.1
    cmin, cmax = math.log2(min(concurrencies)), math.log2(max(concurrencies)) or 1
    X = lambda c: x0 + PAD + (math.log2(c) - cmin) / ((cmax - cmin) or 1) * (W - 2 * PAD)
    Y = lambda v: H - PAD - (math.log10(max(v, 1)) - lo) / (hi - lo or 1) * (H - 2 * PAD)
    parts = [f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
             f'<line x1="{x0 + PAD}" y1="{H - PAD}" x2="{x0 + W - PAD}" y2="{H - PAD}" stroke="black"/>',
             f'<line x1="{x0 + PAD}" y1="{PAD}" x2="{x0 + PAD}" y2="{H - PAD}" stroke="black"/>']
    for c in concurrencies:
        parts.append(f'<text x="{X(c)}" y="{H - PAD + 15}" text-anchor="middle" font-size="10">{c}</text>')
    for e in range(math.floor(lo), math.ceil(hi) + 1):
        if lo <= e <= hi:
            parts.append(f'<text x="{x0 + PAD - 5}" y="{Y(10 ** e) + 3}" text-anchor="end" font-size="10">{10 ** e:g}</text>')
    for i, (name, pts) in enumerate(series):
        color = colors[i % len(colors)]
        dash = ' stroke-dasharray="4 3"' if name.startswith("pgbench") else ""
        path = " ".join(f"{X(pt[0]):.1f},{Y(pt[index]):.1f}" for pt in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
    parts.append(f'<text x="{x0 + W / 2}" y="{H - 10}" text-anchor="middle" font-size="11">concurrency (log)</text>')
    return parts


svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W + 160}" height="{H}" font-family="sans-serif">',
       '<rect width="100%" height="100%" fill="white"/>']
svg += panel(0, "throughput, operations/s (log)", 1)
svg += panel(W, "p99 latency, µs (log)", 2)
for i, (name, _) in enumerate(series):
    y = 40 + 18 * i
    color = colors[i % len(colors)]
    dash = ' stroke-dasharray="4 3"' if name.startswith("pgbench") else ""
    svg.append(f'<line x1="{2 * W + 5}" y1="{y}" x2="{2 * W + 30}" y2="{y}" stroke="{color}" stroke-width="2"{dash}/>')
    svg.append(f'<text x="{2 * W + 35}" y="{y + 4}" font-size="11">{name}</text>')
svg.append("</svg>")
open(f"{out}/bench.svg", "w").write("\n".join(svg) + "\n")

existing = open(f"{out}/BENCHMARKS.md").read() if os.path.exists(f"{out}/BENCHMARKS.md") else ""
# Everything after this marker is written by hand (decisions, before/after) and kept.
MARKER = "<!-- written by hand below -->"
kept = existing[existing.index(MARKER):] if MARKER in existing else MARKER + "\n"
open(f"{out}/BENCHMARKS.md", "w").write("\n".join(lines) + "\n" + kept)
