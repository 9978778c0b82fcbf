"""The benchmark still works: `benchmarks/run.py --smoke` runs every contender end to end.

Never a timed test: the figures of a smoke run mean nothing and nothing here looks at them. The
run writes into tmp folders only (never docs/), and works without ../shared (drawn images).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks" / "run.py"
CONTENDERS = ("cp", "convert", "diy", "reghead prepare", "webdataset prepare")
ISSUE_11 = ("download", "from-release", "three-step", "diy push")
TARGETS = (
    "converter CPU seconds per GiB <= 3.0",
    "converter wall <= 1.5x `cp`",
    "do-it-yourself wall >= 2.5x converter's",
    "builder `download_and_prepare()` <= 0.8x the webdataset builder's",
    "from-release, throttled, <= 1.1x the download alone",
    "from-release <= 0.6x the three-step path",
    "from-release peak extra disk <= 5 GiB",
    "from-release throttled peak RSS <= 600 MiB",
)


@pytest.mark.skipif(shutil.which("hyperfine") is None, reason="hyperfine is not installed (apt-get install hyperfine)")
@pytest.mark.timeout(240)
def test_smoke_run_writes_the_report(tmp_path):
    output = tmp_path / "report" / "BENCHMARKS.md"
    args = ["--smoke", "--readback", "--data-dir", str(tmp_path / "data"), "--output", str(output)]

    done = subprocess.run([sys.executable, str(RUN), *args], cwd=REPO, capture_output=True, text=True, timeout=230)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    text = output.read_text()
    assert text.startswith(f"# Benchmarks\n\n```bash\npython benchmarks/run.py {' '.join(args)}\n```\n\n**Smoke run**")
    for section in ("## Machine", "## Method", "## Releases", "## Results", "## Targets", "## Re-running"):
        assert f"\n{section}\n" in text
    assert "\n| smoke | 2 | 0.0" in text and "| 40 |" in text  # 40 identities in 2 shards
    for name in [*CONTENDERS, *ISSUE_11, *(f"{name} throttled" for name in ISSUE_11)]:
        assert f"\n| smoke | {name} | " in text
    assert "rows train 34, validation 4, test 2, every sample_key as in the release" in text  # --readback
    for target in TARGETS:
        assert f"\n| smoke | {target} " in text
    if shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists():
        assert "\n## Converter profile\n" in text and "\n| hash (SHA-256) | " in text
    assert not list((tmp_path / "data" / "work").glob("smoke/*/*"))  # outputs deleted after each contender
