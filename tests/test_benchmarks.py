"""The benchmark still works: `benchmarks/run.py --smoke` runs every contender end to end.

Never a timed test: the figures of a smoke run mean nothing and nothing here looks at them. The
run writes into tmp folders only (never docs/), and works without ../shared (drawn images).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks" / "run.py"
DOCS = REPO / "docs" / "BENCHMARKS.md"


def load_run_module(monkeypatch):
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "benchmarks_run", module)  # dataclasses look their module up there
    monkeypatch.setattr(sys, "path", list(sys.path))  # run.py puts the repository and benchmarks/ in front
    spec.loader.exec_module(module)
    return module


def run_benchmark(*args: str, timeout: float = 170) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUN), *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(180)
def test_smoke_run_writes_the_report(tmp_path):
    docs_before = DOCS.read_bytes() if DOCS.exists() else None
    output = tmp_path / "report" / "BENCHMARKS.md"
    work = tmp_path / "work"

    done = run_benchmark("--smoke", "--work-dir", str(work), "--output", str(output))

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    text = output.read_text()
    assert text.startswith(
        f"# Benchmarks\n\n```bash\npython benchmarks/run.py --smoke --work-dir {work} --output {output}\n```"
    )
    assert "**Smoke run**" in text
    for section in ("## Machine", "## Method", "## Releases", "## Targets", "## All figures"):
        assert section in text
    for target in (
        "convert to parquet, SHA-256 verified, vs `cp`",
        "convert vs baseline 2",
        "`RegHead.download_and_prepare()` vs baseline 4",
        "N identities: converter peak RSS, whole process tree",
        "4N identities: converter peak RSS, whole process tree",
        "conversion time, 4N vs N identities",
        "streaming time to first row, local shards: in-process",
        "streaming time to first row, local shards: whole process",
        "streaming time to first row, HTTP 127.0.0.1: in-process",
        "streaming iteration, 10 images decoded per row, vs baseline 3",
        "read one expression column: share of the parquet file bytes read",
        "read one expression column vs all columns",
    ):
        assert target in text, target
    targets = text.split("## Targets", 1)[1].split("## All figures", 1)[0]
    assert "nan" not in targets
    assert all(
        line.endswith(("| met |", "| **missed** |"))
        for line in targets.splitlines()
        if line.startswith("| ") and "---" not in line and "| target |" not in line
    )
    assert (work / "results.json").is_file()
    assert (DOCS.read_bytes() if DOCS.exists() else None) == docs_before  # the smoke run never writes docs/

    # the report can be written again from the saved figures, without running anything
    again = tmp_path / "again.md"
    redone = run_benchmark("--report-only", "--smoke", "--work-dir", str(work), "--output", str(again), timeout=60)
    assert redone.returncode == 0, redone.stderr[-4000:]
    assert again.read_text() == text


def test_without_the_real_images_the_releases_are_drawn(monkeypatch, tmp_path):
    run = load_run_module(monkeypatch)
    monkeypatch.setattr(run, "DEFAULT_IMAGES", tmp_path / "no-such-folder")
    assert run.default_images_dir() is None
    assert run.prepare_images(None, tmp_path) == {512: None, 1024: None}


def test_work_dir_inside_the_repository_is_refused():
    done = run_benchmark("--smoke", "--work-dir", str(REPO / "bench-work"), "--output", "/dev/null", timeout=60)
    assert done.returncode != 0
    assert "inside the repository" in done.stderr
    assert not (REPO / "bench-work").exists()
