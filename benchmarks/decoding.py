"""The decoding benchmark (issue 20): decoded rows per second against the JPEG decoder's floor.

    python benchmarks/decoding.py                                 # 3 runs; writes docs/BENCHMARKS-decoding.md
    python benchmarks/decoding.py --decoders-python /venv-with-torchvision/bin/python
    python benchmarks/decoding.py --smoke --output /tmp/BENCHMARKS-decoding.md

One epoch of the train split, all 10 expressions of each row as uint8 arrays, 2 DataLoader
workers, for each setting: a 512 release (releases.py `decode`: 3,000 identities, 4 train files)
at 512, 256 and 128, and a 1024 release (`decode-1024`) at 256. Each contender of
`benchmarks/loaders.py` is a process run by hyperfine (`--runs`), its input files read once
before each run (a warm page cache), wrapped in tree.py for the peak memory of its process tree;
the rows/s are from the epoch's own seconds (start-up and imports left out), median of the runs.
The decoders' per-image costs come from `benchmarks/decoders.py`, and one run of `reghead` per
holder at 256 is profiled with py-spy (its workers).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import releases  # noqa: E402
from machine import machine  # noqa: E402

PYTHON = sys.executable
DOCS = REPO / "docs" / "BENCHMARKS-decoding.md"
PROFILE_RATE = 100
# tree.py's memory samples: at its default 0.1 s they took 10-20% of an epoch's rows/s on 2 cores
# (smaps_rollup walks gigabytes of page tables), the floor's more than the loaders'.
MEMORY_SAMPLE_S = 1.0
# py-spy categories of a worker's samples, first match wins (waits are left out).
PROFILE_IDLE = r"pthread_cond_(timed)?wait|take_gil|sem_(timed|clock)?wait|epoll_wait|\bpoll \(|socket\.accept|Connection\._recv"
PROFILE_SPLIT = {
    "JPEG decode (libjpeg-turbo)": r"simplejpeg|_jpeg\.cpython|libjpeg|tjDecompress|jpeg_|decompress_onepass|decode_mcu",
    "imports": r"_find_and_load",
    "parquet reading (Arrow)": r"parquet|arrow::|Parquet\._generate_tables",
    "datasets: rows of the stream, indices": r"datasets/",
    "shared memory, sending batches": r"shared_batches\.py|multiprocessing/|reductions\.py|ForkingPickler",
    "reghead: rows, batches, collate": r"reghead_release/",
    "torch DataLoader": r"torch/utils/data",
}


@dataclass(frozen=True)
class Setting:
    release: str  # a releases.py kind
    config: str
    size: int

    @property
    def label(self) -> str:
        return f"{self.config} -> {self.size}"


@dataclass
class Contender:
    name: str  # as in the tables
    args: list[str]  # loaders.py's
    setting: Setting
    figures: dict = field(default_factory=dict)


SETTINGS = [Setting("decode", "512", 512), Setting("decode", "512", 256), Setting("decode", "512", 128), Setting("decode-1024", "1024", 256)]
SMOKE_SETTINGS = [Setting("decode-smoke", "512", 128)]
TARGETS = {512: 0.8, 256: 0.85, 128: 0.85}  # against the floor
BASELINE_TARGETS = {256: {"documented": 5.0, "snippet": 4.0}, 512: {"documented": 2.5, "snippet": 2.5}}


def parquet_of(kind: str, data_dir: Path) -> Path:
    """The release `kind` converted by convert/push.py (once; a `COMPLETE` marker last)."""
    out = data_dir / "parquet" / kind
    if not (out / releases.MARKER).exists():
        shutil.rmtree(out, ignore_errors=True)
        root = releases.release(kind, data_dir)
        resolution = releases.resolution_of(kind)
        subprocess.run([PYTHON, str(REPO / "convert" / "push.py"), f"--release={resolution}={root}", f"--output-dir={out}", "--quiet"], check=True)
        (out / releases.MARKER).touch()
    return out


def arrow_files(parquet: Path, config: str, env: dict) -> list[str]:
    """The Arrow cache files `load_dataset` reads for the map-style contenders (made once here)."""
    script = f"import datasets, json; ds = datasets.load_dataset({str(parquet)!r}, {config!r}, split='train'); print(json.dumps([f['filename'] for f in ds.cache_files]))"
    done = subprocess.run([PYTHON, "-c", script], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def contenders(setting: Setting, *, first_of_release: bool) -> list[Contender]:
    common = ["--config", setting.config, "--size", str(setting.size)]
    found = [
        Contender("floor", ["floor-simplejpeg", *common], setting),
        Contender("reghead map", ["reghead", "--holder", "map", *common], setting),
        Contender("reghead stream", ["reghead", "--holder", "stream", *common], setting),
        Contender("reghead stream, pre_buffer", ["reghead", "--holder", "stream", "--read-options", "default", *common], setting),
        Contender("documented", ["documented", *common], setting),
        Contender("snippet", ["snippet", *common], setting),
    ]
    if first_of_release:  # the datasets default decodes in full whatever the size: once per release
        found += [Contender(f"default {holder}", ["default", "--holder", holder, *common], setting) for holder in ("map", "stream")]
    return found


def loader_command(contender: Contender, args, report: Path) -> list[str]:
    """The loaders.py process of a contender, appending its epoch to `report`."""
    command = [PYTHON, str(BENCH / "loaders.py"), *contender.args, "--parquet", str(args.parquet), "--release", str(args.release)]
    return command + ["--workers", str(args.workers), "--batch-size", str(args.batch_size), "--report", str(report)]


def run(contender: Contender, *, runs: int, work: Path, inputs: list[str], args, env: dict) -> None:
    """`runs` runs under hyperfine; the figures: rows/s (median epoch), epoch seconds, peak PSS/RSS, process wall."""
    name = re.sub(r"\W+", "-", f"{contender.setting.label}-{contender.name}")
    report, times, export = work / f"{name}.jsonl", work / f"{name}.time", work / f"{name}.json"
    for path in (report, times, export):
        path.unlink(missing_ok=True)
    loaders = loader_command(contender, args, report)
    command = shlex.join([PYTHON, str(BENCH / "tree.py"), "--sample-s", str(MEMORY_SAMPLE_S), str(times), *loaders])
    prepare = f"sync && cat {shlex.join(inputs)} > /dev/null"
    done = subprocess.run(
        ["hyperfine", "--runs", str(runs), "--prepare", prepare, "--export-json", str(export),
         "--command-name", f"{contender.setting.label} {contender.name}", "--style", "basic", command],
        check=False, env=env,
    )  # fmt: skip
    if done.returncode:
        sys.exit(f"error: {contender.name!r} failed (hyperfine's output above): {command}")
    epochs = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    memory = [[float(v) for v in line.split()] for line in times.read_text().splitlines() if line.strip()]
    seconds = statistics.median(epoch["seconds"] for epoch in epochs)
    contender.figures = {
        "rows": epochs[0]["rows"],
        "seconds": seconds,
        "rows_per_s": epochs[0]["rows"] / seconds,
        "all_rows_per_s": [epoch["rows"] / epoch["seconds"] for epoch in epochs],
        "batch_shape": epochs[0]["batch_shape"],
        "pss": max(row[4] for row in memory) / 1024,
        "rss": max(row[3] for row in memory) / 1024,
        "wall": json.loads(export.read_text())["results"][0]["median"],
    }


def profile_workers(contender: Contender, *, work: Path, args, env: dict) -> dict[str, float] | None:
    """The shares of a run's worker samples per category (py-spy, native frames), or None without py-spy."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(PYTHON).parent))
    if spy is None:
        return None
    report = work / "profile.jsonl"
    loaders = loader_command(contender, args, report)
    process = subprocess.Popen(loaders, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    for _ in range(600):  # the DataLoader's workers, once they are past their start
        time.sleep(0.05)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        workers = [int(pid) for pid in children.read_text().split()] if children.exists() else []
        if len(workers) >= args.workers:
            break
    time.sleep(1.0)
    raws = [work / f"worker-{pid}.raw" for pid in workers]
    spies = [
        subprocess.Popen([spy, "record", "--pid", str(pid), "-r", str(PROFILE_RATE), "--native", "-f", "raw", "-o", str(raw)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for pid, raw in zip(workers, raws)
    ]  # fmt: skip
    process.wait()
    for spy_process in spies:
        spy_process.wait()
    split = dict.fromkeys([*PROFILE_SPLIT, "other"], 0)
    for raw in raws:
        for line in raw.read_text().splitlines() if raw.exists() else []:
            stack, _, count = line.rpartition(" ")
            stack = stack.split(";", 1)[-1]  # not the process's command line
            if re.search(PROFILE_IDLE, stack):
                continue
            name = next((name for name, pattern in PROFILE_SPLIT.items() if re.search(pattern, stack)), "other")
            split[name] += int(count)
    total = sum(split.values())
    return {name: count / total for name, count in split.items()} if total else None


def decoder_costs(args) -> dict:
    out = args.work_dir / "decoders.json"
    images = releases.REAL_IMAGES
    if not images.is_dir():
        return {}
    subprocess.run([args.decoders_python, str(BENCH / "decoders.py"), "--images", str(images), "--output", str(out), "--repeats", str(args.repeats)], check=True)
    return json.loads(out.read_text())


def write_report(args, results: list[Contender], costs: dict, profiles: dict, started: float) -> None:
    lines = ["# Benchmarks: decoding for training (issue 20)", "", "```bash", shlex.join(["python", "benchmarks/decoding.py", *args.argv]), "```", ""]
    if args.smoke:
        lines += ["**Smoke run**: a tiny release and one run; the figures mean nothing.", ""]
    now, minutes = datetime.datetime.now(datetime.timezone.utc), (time.time() - started) / 60
    lines += [f"Run on {now:%Y-%m-%d %H:%M} UTC, {minutes:.1f} minutes in all.", "", "## Machine", ""]
    lines += [*machine(("datasets", "pyarrow", "torch", "simplejpeg", "pillow")), ""]
    lines += ["## Method", "", (
        f"Rows per second of one epoch of the train split, every row's 10 expressions decoded to uint8 arrays of the "
        f"size, {args.workers} DataLoader workers, batches of {args.batch_size} rows, on the parquet copy "
        "`convert/push.py` makes of each release (and, for the snippet, on the release's tar shards). Every contender "
        f"is a process of `benchmarks/loaders.py`, run by hyperfine ({args.runs} time(s) for the floor and reghead's, "
        f"{args.baseline_runs} for the others, whose margins are wide), its input files read once "
        "before each run (a warm page cache); rows/s are from the epoch's own seconds (from the loader's first batch "
        "request to its last batch: start-up and imports left out, the workers' start and the first read counted), "
        "the median of the runs. Peak PSS and RSS are those of the whole process tree (the workers included), sampled "
        f"every {MEMORY_SAMPLE_S:g} s by `benchmarks/tree.py` (more often takes CPU from the epoch), the highest of the runs."), "",
        "- `floor`: the fastest decoder below (simplejpeg) alone, in a plain loop in as many processes as workers: the "
        "same JPEG bytes, read into memory first, each image decoded straight into one preallocated array (no "
        "loader, no Arrow, no batches sent anywhere).",
        "- `reghead map` / `reghead stream`: `reghead.with_decoded_images(dataset, size=...)` on "
        "`load_dataset(folder, config, split=\"train\")` (shuffled by the DataLoader) / with `streaming=True`, "
        "`collate_fn=reghead.collate`: the docs' recipe. Every stream here reads the local parquet as docs/LOADING.md "
        "says to, `fragment_scan_options=ParquetFragmentScanOptions(pre_buffer=False)`; `reghead stream, pre_buffer` "
        "is the same with `datasets`' default (pre_buffer=True: coalesced reads ahead, on other threads, into new "
        "buffers, which a local disk does not need).",
        "- `documented`: docs/LOADING.md's recipe before `with_decoded_images`: `.map(resize)` with PIL (its default "
        "filter), then `with_format(\"torch\")`, streamed (on a map-style dataset `.map` would rewrite the data first).",
        "- `snippet`: the upstream WebDataset snippet on the release's tar shards, `decode(\"torchrgb8\")`, resized "
        "with torch (`interpolate`, bilinear, antialias); it reads every split (all rows).",
        "- `default map` / `default stream`: `datasets`' own torch format (`with_format(\"torch\")`): full PIL decode "
        "and a copy through numpy, no resize; run once per release, at its own size.",
        "", "## Releases", "", releases.__doc__.split("\n\n")[1].replace("\n", " "), ""]  # fmt: skip
    lines += ["## Results", "", "| setting | contender | rows/s | x floor | epoch s | peak PSS MiB | peak RSS MiB | all rows/s |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    floors = {c.setting: c.figures["rows_per_s"] for c in results if c.name == "floor"}
    for c in results:
        f = c.figures
        share = f["rows_per_s"] / floors[c.setting] if c.setting in floors else float("nan")
        runs = ", ".join(f"{r:.1f}" for r in f["all_rows_per_s"])
        lines.append(f"| {c.setting.label} | {c.name} | {f['rows_per_s']:.1f} | {share:.2f} | {f['seconds']:.1f} | {f['pss']:.0f} | {f['rss']:.0f} | {runs} |")
    lines += ["", "## Targets", "", "| setting | target | value | |", "|---|---|---|---|"]
    lines += target_lines(results, floors)
    if costs:
        lines += ["", "## Each decoder's cost per image", "", decoders_text(), "", decoder_table(costs)]
    if profiles:
        lines += ["", "## Where the time goes", "", (
            f"One run of `reghead` per holder at 256 from 512, its workers sampled by `py-spy record --native -r "
            f"{PROFILE_RATE}` once they have started (waits left out; each sample goes to the first category any frame "
            "of its stack matches, in this order). py-spy samples Python threads only: Arrow's own reader threads are "
            "not in these shares."), "", "| part | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]  # fmt: skip
        for part in next(iter(profiles.values())):
            lines.append(f"| {part} | " + " | ".join(f"{p[part]:.1%}" for p in profiles.values()) + " |")
    lines += ["", "## Re-running", "", "```bash",
              "apt-get install hyperfine && pip install py-spy   # the timer and the profiler",
              "python benchmarks/decoding.py                       # releases written once into --data-dir (7 GiB)",
              "python benchmarks/decoding.py --smoke --output /tmp/BENCHMARKS-decoding.md",
              "```", "",
              "With `--decoders-python`, the decoder table is measured with another Python, e.g. a venv with "
              "torchvision and PyTurboJPEG (`pip install torch==2.14.1 torchvision==0.29.1 simplejpeg 'PyTurboJPEG<2'`, "
              "with Debian's libturbojpeg0): torchvision's wheels need another torch than the project's tests pin.", ""]  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))


def target_lines(results: list[Contender], floors: dict) -> list[str]:
    lines = []
    by = {(c.setting, c.name): c.figures["rows_per_s"] for c in results}
    for setting in dict.fromkeys(c.setting for c in results):
        for holder in ("map", "stream"):
            ours = by.get((setting, f"reghead {holder}"))
            if ours is None:
                continue
            limit = TARGETS.get(setting.size)
            if limit is not None and setting in floors:
                ratio = ours / floors[setting]
                lines.append(f"| {setting.label} | {holder} >= {limit}x the floor | {ratio:.2f}x ({ours:.1f} / {floors[setting]:.1f} rows/s) | {'met' if ratio >= limit else 'missed'} |")
            for baseline, needed in BASELINE_TARGETS.get(setting.size, {}).items():
                theirs = by.get((setting, baseline))
                if theirs:
                    ratio = ours / theirs
                    lines.append(f"| {setting.label} | {holder} >= {needed}x `{baseline}` | {ratio:.2f}x ({ours:.1f} / {theirs:.1f} rows/s) | {'met' if ratio >= needed else 'missed'} |")
    return lines


def decoders_text() -> str:
    import decoders

    return " ".join(decoders.__doc__.split("\n\n")[2:4]).replace("\n", " ")


def decoder_table(costs: dict) -> str:
    sources = sorted({source for decoder in costs.values() if "missing" not in decoder for source in decoder}, key=int)
    header = ["decoder", *(f"{source} -> {size}" for source in sources for size in next(c for c in costs.values() if "missing" not in c)[source])]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, decoder in costs.items():
        if "missing" in decoder:
            lines.append(f"| {name} | not measured: {decoder['missing'].splitlines()[0]} |" + " |" * (len(header) - 2))
            continue
        lines.append(f"| {name} | " + " | ".join(f"{decoder[source][size]:.0f} us" for source in sources for size in decoder[source]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of the floor and of reghead's loaders")
    parser.add_argument("--baseline-runs", type=int, default=1, help="runs of the documented path, the snippet and the default")
    parser.add_argument("--data-dir", type=Path, default=releases.DATA_DIR, help="releases, their parquet and the datasets cache")
    parser.add_argument("--work-dir", type=Path, help="reports of the runs (default: DATA_DIR/work-decoding)")
    parser.add_argument("--output", type=Path, default=DOCS)
    parser.add_argument("--smoke", action="store_true", help="a tiny release, one run, 128 only")
    parser.add_argument("--only", action="append", help="run only this contender (repeatable; the floor always runs)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--decoders-python", default=PYTHON, help="the Python that measures the decoder table")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the sample images per decoder cost")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if shutil.which("hyperfine") is None:
        sys.exit("error: hyperfine is not installed (apt-get install hyperfine)")
    settings = SMOKE_SETTINGS if args.smoke else SETTINGS
    if args.smoke:
        args.runs, args.baseline_runs, args.repeats = 1, 1, 1
    args.work_dir = args.work_dir or args.data_dir / "work-decoding"
    args.work_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_CACHE": str(args.data_dir / "hf-cache")}
    started, results, profiles = time.time(), [], {}
    costs = decoder_costs(args)
    for number, setting in enumerate(settings):
        root = releases.release(setting.release, args.data_dir)
        args.parquet, args.release = parquet_of(setting.release, args.data_dir), root
        parquet_files = sorted(str(p) for p in (args.parquet / setting.config).glob("train-*.parquet"))
        inputs = {"map": arrow_files(args.parquet, setting.config, env), "stream": parquet_files, "tar": [str(p) for p in releases.shards(root)]}
        first_of_release = all(other.release != setting.release for other in settings[:number])
        for contender in contenders(setting, first_of_release=first_of_release):
            if args.only and contender.name != "floor" and contender.name not in args.only:
                continue
            kind = "tar" if contender.name == "snippet" else "map" if contender.name.endswith("map") else "stream"
            runs = args.runs if contender.name == "floor" or contender.name.startswith("reghead") else args.baseline_runs
            run(contender, runs=runs, work=args.work_dir, inputs=inputs[kind], args=args, env=env)
            results.append(contender)
            print(f"{setting.label} {contender.name}: {contender.figures['rows_per_s']:.1f} rows/s", flush=True)
            if not args.no_profile and setting.size == 256 and setting.config == "512" and contender.name in ("reghead map", "reghead stream"):
                profile = profile_workers(contender, work=args.work_dir, args=args, env=env)
                if profile:
                    profiles[contender.name.split()[-1]] = profile
    write_report(args, results, costs, profiles, started)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
