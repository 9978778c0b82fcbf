"""The benchmarks still work: `benchmarks/run.py --smoke` and `benchmarks/decoding.py --smoke` run
every contender end to end (hyperfine needed), and each decoding contender of `benchmarks/loaders.py`
decodes every row it should (no hyperfine needed).

Never a timed test: the figures of a smoke run mean nothing and nothing here looks at them. The
run writes into tmp folders only (never docs/), and works without ../shared (drawn images).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
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


# --- the decoding benchmark (benchmarks/decoding.py, benchmarks/loaders.py) -------------------------

DECODING = REPO / "benchmarks" / "decoding.py"
LOADERS = REPO / "benchmarks" / "loaders.py"
DECODING_CONTENDERS = ("floor", "reghead map", "reghead stream", "reghead stream, pre_buffer", "documented", "snippet", "default map", "default stream")


@pytest.fixture(scope="module")
def decode_smoke(tmp_path_factory) -> tuple[Path, Path]:
    """The decoding benchmark's smoke release and its parquet copy, as decoding.py makes them."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import decoding
    import releases

    data = tmp_path_factory.mktemp("decode-data")
    return releases.release("decode-smoke", data), decoding.parquet_of("decode-smoke", data)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "contender",
    [["floor-simplejpeg"], ["floor-pil"], ["reghead", "--holder", "map"], ["reghead", "--holder", "stream"],
     ["reghead", "--holder", "stream", "--read-options", "default"], ["documented"], ["snippet"], ["default", "--holder", "map"]],
    ids=" ".join,
)  # fmt: skip
def test_every_decoding_contender_decodes_every_train_row_at_the_size(contender, decode_smoke, tmp_path):
    release, parquet = decode_smoke
    report = tmp_path / "report.jsonl"
    size = 512 if contender[0] == "default" else 64  # the datasets default decodes in full
    args = [*contender, "--parquet", str(parquet), "--release", str(release), "--size", str(size), "--workers", "1", "--batch-size", "4", "--report", str(report)]
    done = subprocess.run([sys.executable, str(LOADERS), *args], cwd=REPO, capture_output=True, text=True, timeout=280)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (result,) = [json.loads(line) for line in report.read_text().splitlines()]
    files = "*.parquet" if contender == ["snippet"] else "train-*.parquet"  # the snippet reads every split
    assert result["rows"] == sum(pq.ParquetFile(path).metadata.num_rows for path in (parquet / "512").glob(files))
    assert result["seconds"] > 0
    assert result["batch_shape"][-3:] == ([size, size, 3] if contender[0].startswith("floor") else [3, size, size])


@pytest.mark.skipif(shutil.which("hyperfine") is None, reason="hyperfine is not installed (apt-get install hyperfine)")
@pytest.mark.timeout(300)
def test_decoding_smoke_run_writes_the_report(decode_smoke, tmp_path):
    output = tmp_path / "BENCHMARKS-decoding.md"
    data = decode_smoke[1].parent.parent
    args = ["--smoke", "--data-dir", str(data), "--output", str(output), "--no-profile"]

    done = subprocess.run([sys.executable, str(DECODING), *args], cwd=REPO, capture_output=True, text=True, timeout=280)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    text = output.read_text()
    assert text.startswith(f"# Benchmarks: decoding for training (issue 20)\n\n```bash\npython benchmarks/decoding.py {' '.join(args)}\n```")
    assert "**Smoke run**" in text
    for section in ("## Machine", "## Method", "## Releases", "## Results", "## Targets", "## Re-running"):
        assert f"\n{section}\n" in text
    for name in DECODING_CONTENDERS:
        assert f"\n| 512 -> 128 | {name} | " in text
    assert "\n| 512 -> 128 | map >= 0.85x the floor | " in text and "\n| 512 -> 128 | stream >= 0.85x the floor | " in text
