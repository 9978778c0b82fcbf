"""The machine a benchmark ran on, as the reports state it."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOAD_AT_START = os.getloadavg()[0]  # when the benchmark started: it imports this module first


def output(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True).stdout.strip()


def package_versions(names) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def machine(packages=("datasets", "pyarrow")) -> list[str]:
    """Markdown lines: CPU, RAM, load at the start; OS, Python and `packages`; hyperfine; the commit."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory = int(open("/proc/meminfo").readline().split()[1]) / 2**20
    commit, hyperfine = output("git", "-C", str(REPO), "rev-parse", "--short", "HEAD"), output("hyperfine", "--version")
    # Code that differs from the commit is named: docs being edited during a run are not.
    changed = [line[3:] for line in output("git", "-C", str(REPO), "status", "--porcelain").splitlines() if line.endswith(".py")]
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; RAM {memory:.1f} GiB; load average at the start {LOAD_AT_START:.2f}",
        f"- OS: {platform.system()} {platform.release()}; Python {platform.python_version()}; "
        f"{package_versions(packages)}; {hyperfine}",
        f"- project: commit {commit}" + (f", with uncommitted changes to {', '.join(changed)}" if changed else ""),
    ]
