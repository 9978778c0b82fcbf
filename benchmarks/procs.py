"""Running one contender as a whole process and measuring it: wall time, CPU time, memory.

Memory is measured over the whole process tree (the contender and every process it starts,
such as the converter's worker pool): a sampler thread walks `/proc` every `interval` seconds,
finds the descendants of the contender by their parent pid, and sums their resident set sizes
(`/proc/<pid>/statm`) and proportional set sizes (`/proc/<pid>/smaps_rollup`, which splits
shared pages between the processes that map them, so the sum is not inflated by shared
libraries). The peak of each sum is kept, and the largest per-process high-water mark (`VmHWM` in
`/proc/<pid>/status`, exact for each process, since the kernel keeps it; `wait4`'s `ru_maxrss`
is not used because it carries over the RSS of the forking parent). CPU times come from `wait4`
(the contender plus its reaped descendants). Linux only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
RESULT_PREFIX = "BENCH-RESULT "
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


@dataclass
class Measured:
    """One timed run of one contender."""

    wall_s: float
    returncode: int
    user_s: float
    sys_s: float
    peak_tree_rss: int  # bytes, the largest sampled sum of RSS over the process tree
    peak_tree_pss: int  # bytes, the same for PSS
    max_process_rss: int  # bytes, the largest VmHWM (kernel high-water mark) of a process in the tree
    max_processes: int  # the most processes seen in the tree at once
    started_at: float  # time.time() just before the process was started
    other_cpu_s: float = 0.0  # CPU seconds the rest of the machine used meanwhile (not the tree, not the runner)
    steal_s: float = 0.0  # CPU seconds the hypervisor took meanwhile
    result: dict = field(default_factory=dict)  # what the contender reported (its last RESULT line)
    stderr_tail: str = ""


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields start after the last ')'
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children = _children_map()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def _hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples the memory of a process tree until stopped.

    Walking `/proc` to find new descendants costs a few ms, so the tree is re-walked every
    `rescan` seconds; in between, the processes already known are sampled every `interval`.
    """

    def __init__(self, root: int, interval: float, rescan: float = 0.25):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.rescan = rescan
        self.peak_rss = 0
        self.peak_pss = 0
        self.max_hwm = 0
        self.max_processes = 0
        self.samples = 0
        self._tree: list[int] = [root]
        self._scanned = 0.0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        now = time.monotonic()
        if now - self._scanned >= self.rescan:
            self._tree = process_tree(self.root)
            self._scanned = now
        tree = self._tree
        self.peak_rss = max(self.peak_rss, sum(_rss(pid) for pid in tree))
        self.peak_pss = max(self.peak_pss, sum(_pss(pid) for pid in tree))
        self.max_hwm = max([self.max_hwm, *(_hwm(pid) for pid in tree)])
        self.max_processes = max(self.max_processes, len(tree))
        self.samples += 1

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def cpu_busy_and_steal() -> tuple[float, float]:
    """Seconds of CPU time the whole machine has spent busy, and stolen by the hypervisor, since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


def run_measured(
    cmd: list[str],
    *,
    env: dict | None = None,
    cwd: str | os.PathLike | None = None,
    log_dir: Path,
    name: str,
    interval: float = 0.05,
    timeout: float | None = None,
) -> Measured:
    """Run `cmd` to its end and measure it. Its stdout and stderr go to `log_dir/<name>.out|.err`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        busy0, steal0 = cpu_busy_and_steal()
        self0 = os.times()
        started_at = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
            if pid:
                break
            if time.perf_counter() > deadline:
                for child in reversed(process_tree(proc.pid)):  # only what this run started
                    try:
                        os.kill(child, 9)
                    except ProcessLookupError:
                        pass
                deadline = None
            else:
                time.sleep(0.02)
        wall = time.perf_counter() - t0
        sampler.stop()
        busy1, steal1 = cpu_busy_and_steal()
        self1 = os.times()
        proc.returncode = os.waitstatus_to_exitcode(status)
    runner = (self1.user - self0.user) + (self1.system - self0.system)
    other = (busy1 - busy0) - (usage.ru_utime + usage.ru_stime) - runner
    result = {}
    for line in out_path.read_text(errors="replace").splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
    stderr = err_path.read_text(errors="replace")
    return Measured(
        wall_s=wall,
        returncode=proc.returncode,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_tree_rss=sampler.peak_rss,
        peak_tree_pss=sampler.peak_pss,
        max_process_rss=sampler.max_hwm,
        max_processes=sampler.max_processes,
        started_at=started_at,
        other_cpu_s=max(0.0, other),
        steal_s=steal1 - steal0,
        result=result,
        stderr_tail=stderr[-3000:],
    )


def report(result: dict) -> None:
    """What a contender calls at its end: one line the runner picks up."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


# --- the page cache ---------------------------------------------------------------------------


def can_drop_caches() -> bool:
    """Whether `drop_caches` may be written (root, and /proc/sys not mounted read-only); nothing is dropped."""
    return DROP_CACHES.exists() and os.access(DROP_CACHES, os.W_OK)


def drop_caches() -> None:
    os.sync()
    with open(DROP_CACHES, "w") as f:
        f.write("3\n")


def warm(paths: list[Path], chunk: int = 8 << 20) -> int:
    """Read every file once, so that the timed run finds them in the page cache; returns the bytes read."""
    total = 0
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(view):
                total += n
    return total


def files_under(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in Path(root).rglob("*") if p.is_file())


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
