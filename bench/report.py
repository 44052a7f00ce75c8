#!/usr/bin/env python3
"""Turns bench/run.sh's raw figures (TSV) into bench/RESULTS.md: a table per target of issues 16
and 25.

Raw columns: group variant run n size ok rc wall_s user_s sys_s maxrss_kb anon_kb extra
(extra: space-separated key=value, e.g. the latency reader's percentiles).

The run becomes one section of RESULTS.md, headed by its label ("Before", "After"); sections
with other labels already in the file are kept below it, so the file holds one run before and
one after.
"""
import argparse
import os
import platform
import re
import statistics
from collections import defaultdict

p = argparse.ArgumentParser()
p.add_argument("--raw", required=True)
p.add_argument("--out", required=True)
p.add_argument("--runs", type=int, required=True)
p.add_argument("--label", default="After")
p.add_argument("--note", default="", help="a sentence on the conditions of this run")
p.add_argument("--load-before", default="")
p.add_argument("--load-after", default="")
p.add_argument("--elapsed", default="")
p.add_argument("--loads", default="")
p.add_argument("--websocat", default="")
p.add_argument("--rev", default="")
p.add_argument("--rustc", default="")
p.add_argument("--sizes", default="")
a = p.parse_args()

rows = defaultdict(list)
for line in open(a.raw):
    f = line.rstrip("\n").split("\t")
    if len(f) < 12:
        continue
    group, variant, run, n, size, ok, rc, wall, user, sys_, maxrss, anon = f[:12]
    extra = dict(kv.split("=", 1) for kv in (f[12] if len(f) > 12 else "").split() if "=" in kv)
    rows[(group, variant)].append(dict(
        n=int(n), size=int(size), ok=ok == "1", wall=float(wall),
        cpu=float(user) + float(sys_), anon_kb=int(anon), extra=extra))


def ok_runs(group, variant):
    return [r for r in rows.get((group, variant), []) if r["ok"]]


def count(group, variant):
    runs = rows.get((group, variant), [])
    return f"{sum(r['ok'] for r in runs)}/{len(runs)}"


def med(values):
    return statistics.median(values) if values else None


def rate(group, variant):
    """Median messages/s (client wall time, start and handshake included) and the range."""
    v = [r["n"] / r["wall"] for r in ok_runs(group, variant) if r["wall"] > 0]
    return med(v), (min(v), max(v)) if v else None


def cpu_us(group, variant):
    """Median CPU (user+sys) microseconds per message."""
    return med([r["cpu"] / r["n"] * 1e6 for r in ok_runs(group, variant)])


def pct(group, variant, key):
    v = []
    for r in ok_runs(group, variant):
        try:
            v.append(float(r["extra"][key]))
        except (KeyError, ValueError):
            pass
    return med(v)


def peak_mib(group, variant):
    """Largest RssAnon sample over all runs (ok or not: memory counts either way)."""
    v = [r["anon_kb"] for r in rows.get((group, variant), []) if r["anon_kb"] > 0]
    return max(v) / 1024 if v else None


def si(x):
    if x is None:
        return "–"
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.2f}{suf}"
    return f"{x:.0f}"


def num(x, fmt="{:.2f}"):
    return "–" if x is None else fmt.format(x)


def status(ok):
    return "NO DATA" if ok is None else ("MET" if ok else "**MISSED**")


out = []
w = out.append
misses = []
unmeasured = []


def target_row(name, figure, reference, ratio, target, ok):
    w(f"| {name} | {figure} | {reference} | {ratio} | {target} | {status(ok)} |")
    if ok is None:
        unmeasured.append(name)
    elif not ok:
        misses.append(f"{name}: {figure} vs {reference} ({ratio}; target {target})")


TARGET_HEAD = "| path | wsbridge | reference | ratio | target | |\n|---|---:|---:|---:|---|---|"

w(f"<!-- run: {a.label} -->")
rev_short = a.rev.split()[0] if a.rev else "?"
w(f"## {a.label} (commit {rev_short})")
w("")
loads = []
if a.loads and os.path.exists(a.loads):
    for line in open(a.loads):
        name, _, avg = line.strip().partition("|")
        loads.append(f"{name}: {avg}")
cpu_model = ""
try:
    cpu_model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
if a.note:
    w(a.note)
    w("")
w("| | |\n|---|---|")
w(f"| wsbridge | {a.rev} (release build) |")
w(f"| machine | {os.cpu_count()} cores, {cpu_model}, {platform.system()} {platform.release()} |")
w(f"| load average at the start of each group (1, 5, 15 min) | {'; '.join(loads)} |")
w(f"| load before / after | `{a.load_before.strip()}` / `{a.load_after.strip()}` |")
w(f"| duration | {a.elapsed} s of measuring (builds excluded), RUNS={a.runs} |")
w(f"| counts | {a.sizes} |")
w(f"| websocat | {a.websocat} (`cargo install --locked`) |")
w(f"| rustc | {a.rustc} |")
w("")

# --- throughput -------------------------------------------------------------------------------
PATHS = [
    ("recv-64B-null", "receive 64 B → /dev/null"),
    ("recv-64B-pipe", "receive 64 B → pipe"),
    ("recv-4KiB-null", "receive 4 KiB → /dev/null"),
    ("recv-4KiB-pipe", "receive 4 KiB → pipe"),
    ("recv-1MiB-null", "receive 1 MiB → /dev/null"),
    ("recv-1MiB-pipe", "receive 1 MiB → pipe"),
    ("ndjson-64B-null", "`--ndjson` 64 B → /dev/null"),
    ("send-64B", "stdin → ws, 64 B lines"),
    ("echo-64B", "echo round trip, 64 B lines → pipe"),
]
# The bare client's share is a target where the paths are the same work (receiving to stdout);
# for NDJSON, send and echo it is shown for comparison.
BARE_TARGET = {g: 0.8 for g in (
    "recv-64B-null", "recv-64B-pipe", "recv-4KiB-null", "recv-4KiB-pipe", "recv-1MiB-null",
    "recv-1MiB-pipe")}
w("### Throughput: ≥ 3× websocat 1.14.1 everywhere, ≥ 80 % of the bare client receiving")
w("")
w("Messages/s of the client process (wall time from its start to its exit, handshake included), "
  "median of the runs. Server: `blaster --raw` (pre-encoded frames in ~1 MiB writes), "
  "`--recv-count` for stdin → ws, `--echo` for the echo. wsbridge: `connect -U URL` "
  "(`connect URL < lines` for send and echo, default flags: the wait for late replies after "
  "stdin EOF included); websocat: `-U -t -B max(64KiB, 2×size)` "
  "(`-t` for send and echo); bare: `sink --write URL` (`sink --send`, `sink --send --write`). "
  "pipe = stdout into `wc -l`, whose count is checked; stdin → ws checks the server's count.")
w("")
w(TARGET_HEAD)
for group, label in PATHS:
    wsb, _ = rate(group, "wsbridge")
    for ref, need in (("websocat", 3.0), ("bare", BARE_TARGET.get(group))):
        r, _ = rate(group, ref)
        ratio = wsb / r if wsb and r else None
        shown = num(ratio, "{:.2f}×") if ref == "websocat" else num(ratio and ratio * 100, "{:.0f} %")
        if need is None:
            w(f"| {label} vs {ref} | {si(wsb)}/s | {si(r)}/s | {shown} | (shown for comparison) | |")
            continue
        target = f"≥ {need:.0f}×" if ref == "websocat" else f"≥ {need * 100:.0f} %"
        target_row(f"{label} vs {ref}", si(wsb) + "/s", si(r) + "/s", shown, target,
                   None if ratio is None else ratio >= need)
w("")
w("<details><summary>every throughput figure</summary>\n")
w("| path | client | msgs/s (min–max) | CPU s | peak RssAnon MiB | ok runs |")
w("|---|---|---:|---:|---:|---:|")
for group, label in PATHS:
    for v in ("wsbridge", "websocat", "bare"):
        r, rng = rate(group, v)
        c = med([x["cpu"] for x in ok_runs(group, v)])
        spread = f" ({si(rng[0])}–{si(rng[1])})" if rng else ""
        w(f"| {label} | {v} | {si(r)}{spread} | {num(c)} | {num(peak_mib(group, v), '{:.1f}')} | {count(group, v)} |")
w("\n</details>\n")

# --- system calls ---------------------------------------------------------------------------
w("### System calls on the 4 KiB path, per 1,000 messages")
w("")
w("`strace -c -f` of the client (all its threads) receiving `blaster --raw --size 4096` to "
  "/dev/null or into `wc -l`: reads (recvfrom, read), writes (write, writev, sendto) and futex "
  "(hand-offs between threads), per 1,000 messages, medians of the runs. strace slows the "
  "client: these runs give counts, not times.")
w("")
w("| output | client | reads | writes | futex | ok runs |\n|---|---|---:|---:|---:|---:|")
for output in ("null", "pipe"):
    g = f"syscalls-4KiB-{output}"
    for v in ("wsbridge", "bare"):
        per_k = []
        for key in ("reads", "writes", "futex"):
            v_k = [float(r["extra"][key]) * 1000 / r["n"] for r in ok_runs(g, v) if key in r["extra"]]
            per_k.append(num(med(v_k), "{:.1f}"))
        w(f"| {'/dev/null' if output == 'null' else 'pipe'} | {v} | {' | '.join(per_k)} | {count(g, v)} |")
w("")

# --- cost -------------------------------------------------------------------------------------
w("### Cost at realistic rates: CPU per message, `connect` ≤ 1.3× and `run` ≤ 1.5× the bare client")
w("")
w("`blaster --raw --rate R --size 200` for the run's paced seconds. CPU = user+sys of the client "
  "process (wait4 rusage, the figures /usr/bin/time prints, to the µs) / messages, median of the "
  "runs. bare: `sink --write URL > /dev/null`; connect: `wsbridge connect -U URL > /dev/null`; "
  "run: the daemon with this upstream and one tcp sink (ndjson, `on_slow = \"block\"`), read "
  "by `latency --tcp` (the reader's CPU is not counted; the daemon's whole life is: start, "
  "the feed, SIGTERM, shutdown); websocat `-U -t URL > /dev/null` for reference.")
w("")
w("| rate | wsbridge µs/msg | bare µs/msg | ratio | target | |\n|---|---:|---:|---:|---|---|")
for r in (10000, 100000):
    g = f"cost-{r}"
    bare = cpu_us(g, "bare")
    for v, need in (("connect", 1.3), ("run", 1.5)):
        x = cpu_us(g, v)
        ratio = x / bare if x is not None and bare else None
        target_row(f"{r:,} msg/s: `{v}`", num(x), num(bare), num(ratio, "{:.2f}×"), f"≤ {need}×",
                   None if ratio is None else ratio <= need)
delivering = False
for r in (10000, 100000):
    g = f"cost-{r}"
    bare, floor, x = cpu_us(g, "bare"), cpu_us(g, "bare-tcp"), cpu_us(g, "run")
    if floor is None:
        continue
    delivering = True
    fr = floor / bare if bare else None
    w(f"| {r:,} msg/s: bare delivering to tcp vs bare | {num(floor)} | {num(bare)} | "
      f"{num(fr, '{:.2f}×')} | (shown for comparison) | |")
    rr = x / floor if x is not None and floor else None
    w(f"| {r:,} msg/s: `run` vs bare delivering to tcp | {num(x)} | {num(floor)} | "
      f"{num(rr, '{:.2f}×')} | (shown for comparison) | |")
w("")
if delivering:
    w("The bare client barely delivers: it gathers its output in a 1 MiB buffer (to /dev/null) "
      "and writes once per MiB gathered, where the daemon writes each batch to its reader as "
      "it comes. \"bare delivering to tcp\" is the same bare client delivering as the daemon "
      "does: `sink --write --flush` (a write whenever nothing more is ready) with its stdout a "
      "TCP connection read by the same `latency --tcp` (`bench/tcp_stdout.py`). What that "
      "costs the bare client is the part of the `run` target that no delivering design can "
      "remove.")
    w("")
w("Every figure above includes one start and exit of the process; what that costs alone "
  "(a 1-message life, CPU ms) is in the last column: spread over the run's messages it is "
  "part of the µs/msg.")
w("")
w("| rate | client | CPU µs/msg | wall s | ok runs | 1-message life, CPU ms |\n|---|---|---:|---:|---:|---:|")
for r in (10000, 100000):
    g = f"cost-{r}"
    for v in ("bare", "bare-tcp", "connect", "run", "websocat"):
        wall = med([x["wall"] for x in ok_runs(g, v)])
        fixed = med([x["cpu"] * 1e3 for x in ok_runs("cost-fixed", v)])
        w(f"| {r:,} | {v} | {num(cpu_us(g, v))} | {num(wall)} | {count(g, v)} | {num(fixed, '{:.1f}')} |")
w("")

# --- latency ----------------------------------------------------------------------------------
w("### Latency at 10,000 msg/s: `connect` p99 within 200 µs of the bare client's, `run` + tcp sink p99 < 1 ms")
w("")
w("`blaster --raw --rate 10000 --size 200`: each payload starts with its send time (ns). "
  "`latency` reads the lines (a pipe from the client's stdout, or `--tcp` from the daemon's tcp "
  "sink) and takes now − send time per line. Percentiles in µs, medians over the runs. "
  "bare: `sink --write --flush URL` (flushes whenever nothing more is ready).")
w("")
w("| client | p99 µs | reference p99 µs (bare) | difference | target | |\n|---|---:|---:|---:|---|---|")
bare99 = pct("latency", "bare", "p99")
c99 = pct("latency", "connect", "p99")
d = c99 - bare99 if c99 is not None and bare99 is not None else None
target_row("`connect -U`", num(c99, "{:.0f}"), num(bare99, "{:.0f}"), num(d, "{:+.0f} µs"), "≤ +200 µs",
           None if d is None else d <= 200)
r99 = pct("latency", "run", "p99")
target_row("`run` + tcp sink", num(r99, "{:.0f}"), num(bare99, "{:.0f}"),
           num(r99 - bare99 if r99 is not None and bare99 is not None else None, "{:+.0f} µs"),
           "p99 < 1,000 µs", None if r99 is None else r99 < 1000)
w("")
w("| client | p50 | p99 | p99.9 | max | CPU µs/msg | ok runs |\n|---|---:|---:|---:|---:|---:|---:|")
for v in ("bare", "connect", "run", "websocat"):
    vals = [num(pct("latency", v, k), "{:.0f}") for k in ("p50", "p99", "p999", "max")]
    w(f"| {v} | {' | '.join(vals)} | {num(cpu_us('latency', v))} | {count('latency', v)} |")
w("")

# --- memory -----------------------------------------------------------------------------------
w("### Memory: RssAnon ≤ 16 MiB for one connection, any message size up to 1 MiB")
w("")
w("Peak of RssAnon (/proc/PID/status, sampled every 10 ms), the largest over the runs; shared "
  "library text is not counted. `connect` from the throughput runs; `run` with one tcp sink "
  "(default buffer, `on_slow = \"block\"`) read by `latency --tcp`, fed unpaced by `blaster --raw`. "
  "Reference: the bare client in the same runs.")
w("")
w("| path | wsbridge MiB | bare MiB | | target | |\n|---|---:|---:|---|---|---|")
for group, label in PATHS:
    x, ref = peak_mib(group, "wsbridge"), peak_mib(group, "bare")
    target_row(f"`connect`, {label}", num(x, "{:.1f}"), num(ref, "{:.1f}"), "", "≤ 16 MiB",
               None if x is None else x <= 16)
x = peak_mib("memory-1MiB", "run")
target_row("`run` + tcp sink, 1 MiB messages", num(x, "{:.1f}"), "–", f"{count('memory-1MiB', 'run')} ok",
           "≤ 16 MiB", None if x is None else x <= 16)
w("")

# --- idle -------------------------------------------------------------------------------------
idle = [(g, v) for (g, v) in rows if g == "idle"]
w("### Many idle upstreams: all open within 10 s, RssAnon ≤ 512 MiB")
w("")
w("`wsbridge run` with one stdout sink (→ /dev/null) and N upstreams to one local server "
  "(`examples/loadserver.rs`, which prints when N connections are open at once). Time from the "
  "daemon's start to that moment; peak RssAnon over the daemon's life (2 s idle after all "
  "opened). The script raises the fd limit to the hard limit.")
w("")
w("| figure | wsbridge | | | target | |\n|---|---:|---|---|---|---|")
if not idle:
    target_row("all open", "–", "", "", "≤ 10 s", None)
for g, v in idle:
    opens = [float(r["extra"]["open_s"]) for r in ok_runs(g, v) if r["extra"].get("open_s", "none") != "none"]
    o = med(opens)
    n = v.split("-", 1)[1]
    target_row(f"{int(n):,} upstreams: all open", num(o, "{:.2f} s"), "", count(g, v) + " ok", "≤ 10 s",
               None if o is None else o <= 10)
    m = peak_mib(g, v)
    target_row(f"{int(n):,} upstreams: peak RssAnon", num(m, "{:.0f} MiB"), "", "", "≤ 512 MiB",
               None if m is None else m <= 512)
w("")

# --- summary and the file ---------------------------------------------------------------------
summary = [f"**Misses ({len(misses)}):**" if misses else "**Every target met.**", ""]
summary += [f"- {m}" for m in misses]
if unmeasured:
    summary += ["", f"Not measured in this run ({len(unmeasured)}): " + "; ".join(unmeasured) + "."]
section = out[:3] + summary + [""] + out[3:]
section.append(f"<!-- end run: {a.label} -->")

kept = []
if os.path.exists(a.out):
    text = open(a.out).read()
    for m in re.finditer(r"<!-- run: (.*?) -->.*?<!-- end run: \1 -->", text, re.S):
        if m.group(1) != a.label:
            kept.append(m.group(0))

head = """# wsbridge benchmarks: the targets of issues 16 and 25

Generated by `bench/run.sh` (do not edit by hand). The run for the record, on a quiet machine,
from the repo root:

```
RUNS=5 bench/run.sh
```

Everything runs over loopback (127.0.0.1) against the reference tools in
`../shared/reference-bench` (`blaster`, the bare client `sink`, the `latency` reader) and
websocat 1.14.1. Each figure is a median of interleaved runs (wsbridge, websocat, bare,
wsbridge, …), each against a fresh one-shot server; targets are ratios within the same run.
A run is labelled (`LABEL=Before`); the file keeps one section per label.
"""
with open(a.out, "w") as f:
    f.write(head + "\n" + "\n".join(section) + "\n")
    for k in kept:
        f.write("\n" + k + "\n")
print(f"{len(misses)} misses")
