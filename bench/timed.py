#!/usr/bin/env python3
"""Runs one command and writes what it cost: bench/run.sh's /usr/bin/time, with finer figures.

    timed.py OUT TIMEOUT_S [--rss] -- CMD [ARGS...]

The command inherits stdin, stdout and stderr. When it exits, OUT gets one line:

    rc wall_s user_s sys_s maxrss_kb peak_anon_kb

user_s and sys_s are the child's rusage from wait4(2), the figures /usr/bin/time prints, but
to the microsecond instead of the 10 ms GNU time rounds to (a paced run costs 0.1-0.5 s of
CPU). With --rss, RssAnon from /proc/PID/status is sampled every 10 ms and peak_anon_kb is
the largest sample (anonymous memory only: heap and stacks, not shared library text);
without it peak_anon_kb is 0, so a latency run has no sampler waking next to it.

SIGTERM and SIGINT are passed on to the command (this is how the script stops a daemon and
still gets its figures). After TIMEOUT_S the command gets SIGTERM, 3 s later SIGKILL, and rc
is 124 as with timeout(1).
"""

import os
import signal
import subprocess
import sys
import time


def rss_anon_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def main():
    argv = sys.argv[1:]
    if len(argv) < 4 or "--" not in argv:
        sys.exit(__doc__)
    sep = argv.index("--")
    opts, cmd = argv[:sep], argv[sep + 1 :]
    out, timeout = opts[0], float(opts[1])
    sample = "--rss" in opts[2:]

    t0 = time.monotonic()
    child = subprocess.Popen(cmd)
    timed_out = False

    def forward(signum, _frame):
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    def expire(_signum, _frame):
        nonlocal timed_out
        if not timed_out:
            timed_out = True
            forward(signal.SIGTERM, None)
            signal.setitimer(signal.ITIMER_REAL, 3.0)
        else:
            forward(signal.SIGKILL, None)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)

    peak = 0
    while True:
        if sample:
            pid, status, ru = os.wait4(child.pid, os.WNOHANG)
            if pid == 0:
                peak = max(peak, rss_anon_kb(child.pid))
                time.sleep(0.01)
                continue
        else:
            pid, status, ru = os.wait4(child.pid, 0)
        break
    wall = time.monotonic() - t0
    signal.setitimer(signal.ITIMER_REAL, 0)
    rc = 124 if timed_out else os.waitstatus_to_exitcode(status)
    if rc < 0:
        rc = 128 - rc
    with open(out, "w") as f:
        f.write(
            f"{rc} {wall:.6f} {ru.ru_utime:.6f} {ru.ru_stime:.6f} {ru.ru_maxrss} {peak}\n"
        )
    sys.exit(0 if rc == 0 else 1)


if __name__ == "__main__":
    main()
