#!/usr/bin/env bash
# Writes bench/hot-symbols.txt: the functions of the release binary that the benchmark's paths
# run (connect in every mode, stdin, echo, run with a tcp sink, 1,000 upstreams scaled down),
# hottest first. build.rs hands the list to the linker, which places those functions together:
# the kernel maps 64 KiB of the binary around each page touched, so packed hot code keeps
# ~1.6 MiB less of it resident (bench/PROFILE.md).
#
#   bench/hot-symbols.sh     # ~3 min; needs valgrind (apt-get install valgrind)
#
# Run it again after a toolchain or dependency update: symbol names carry a hash of the
# compiler version and crate metadata, and names the binary no longer has are skipped (the
# build stays correct, only less compact). bench/run.sh reports how many still match.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CACHE:-$ROOT/.cache}"
OUT="$ROOT/bench/hot-symbols.txt"
command -v valgrind >/dev/null || { echo "bench/hot-symbols.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }

mkdir -p "$CACHE/bench"
DIR="$(mktemp -d "$CACHE/bench/hot.XXXXXX")"
WRAPPER="$DIR/wsbridge-under-callgrind"
cat > "$WRAPPER" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \\
    --callgrind-out-file="$DIR/callgrind.%p" "\$WSB_REAL" "\$@" 2>/dev/null
EOF
chmod +x "$WRAPPER"

# The benchmark itself, with few messages (callgrind runs ~50x slower); its figures are
# meaningless here and go to $DIR.
WSB_WRAPPER="$WRAPPER" RUNS=1 RUNS_IDLE=1 TMO=300 \
    N64=100000 N4K=20000 N1M=20 NSEND=100000 NECHO=50000 NIDLE=50 \
    NFAN1=20000 NFAN8=5000 NFAN64=1000 OUT="$DIR/results.md" \
    bash "$ROOT/bench/run.sh"

BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/wsbridge"
python3 - "$BIN" "$OUT" "$DIR"/callgrind.* <<'EOF'
import collections, re, subprocess, sys

binary, out, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
# Names of the binary's own functions (text symbols): everything else (libc, the vDSO) is not ours to place.
ours = set()
for line in subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tTwW":
        ours.add(parts[2])

# Self cost (instructions) per function, summed over every process profiled, and the
# subcommands that ran it.
cost = collections.Counter()
ran_in = collections.defaultdict(set)
for path in profiles:
    fn, skip, command = None, False, "other"
    for line in open(path, errors="replace"):
        if line.startswith("cmd:"):
            words = line.split()
            command = words[2] if len(words) > 2 else "other"
        elif line.startswith("fn="):
            fn = re.sub(r"'\d+$", "", line[3:].strip())
        elif line.startswith("calls="):
            skip = True  # the next cost line is the callee's inclusive cost
        elif line[:1].isdigit() or line[:1] in "+-*":
            if skip:
                skip = False
            elif fn in ours:
                fields = line.split()
                if len(fields) > 1:
                    cost[fn] += int(fields[1])
                    ran_in[fn].add(command)

# `connect`'s functions first, then what only `run` adds: a pipe then touches one compact
# stretch, and the daemon the one after it. Hottest first within each.
FIRST = ["connect", "run"]
def group(name):
    return min((FIRST.index(c) if c in FIRST else len(FIRST)) for c in ran_in[name])
hot = sorted(cost, key=lambda name: (group(name), -cost[name], name))
with open(out, "w") as f:
    f.write("# Written by bench/hot-symbols.sh: the release binary's functions that the benchmark\n")
    f.write("# paths run (connect's, then those only run adds), hottest first by callgrind's count\n")
    f.write("# of instructions. build.rs passes this file to the linker (--symbol-ordering-file) so\n")
    f.write("# they sit together. Regenerate after a toolchain or dependency update.\n")
    for name in hot:
        f.write(name + "\n")
print(f"bench/hot-symbols.sh: {len(hot)} functions from {len(profiles)} profiled processes -> {out}", file=sys.stderr)
EOF
rm -f "$DIR"/callgrind.*
