"""Run a command; append `wall user sys rss pss` of its whole process tree to a file.

    python benchmarks/tree.py [--sample-s SECONDS] OUTPUT COMMAND...

`/usr/bin/time` counts only the processes its command waits for, and its peak RSS is that of the
largest one. The converter's jobs run in processes forked by a fork server that the command never
waits for. This wrapper is the tree's subreaper, so every descendant ends up reaped by it or by a
parent it reaps, and the CPU seconds of all of them are counted. Memory is sampled every
`SAMPLE_S` (or `--sample-s`) as the sum over the tree of RSS (shared pages counted in every
process) and of PSS (shared pages divided among their users); the peaks are in KiB. A sample reads
every process's smaps_rollup, which walks its page tables: with gigabytes mapped that takes CPU
from what is measured, so timed runs on few cores sample less often.
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
SAMPLE_S = 0.1


def descendants(root: int) -> list[int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass  # ended meanwhile
    return rss, pss


def main() -> int:
    arguments, every = sys.argv[1:], SAMPLE_S
    if arguments[:1] == ["--sample-s"]:
        every, arguments = float(arguments[1]), arguments[2:]
    output, command = arguments[0], arguments[1:]
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every):
            sums = [sum(values) for values in zip(*(memory_kib(pid) for pid in descendants(os.getpid())), (0, 0))]
            peak[:] = [max(p, s) for p, s in zip(peak, sums)]

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    code = subprocess.call(command)
    while True:  # the orphans: a fork server and what it forked
        try:
            os.wait4(-1, 0)
        except ChildProcessError:
            break
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(output, "a") as file:
        file.write(f"{wall:.2f} {usage.ru_utime:.2f} {usage.ru_stime:.2f} {peak[0]} {peak[1]}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
