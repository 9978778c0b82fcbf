"""The benchmark of issues 13 and 11: whole processes timed by hyperfine, results in docs/BENCHMARKS.md.

    python benchmarks/run.py                                  # subset (3 shards) and full (11 shards), 3 runs
    python benchmarks/run.py --release full --runs 1          # full size only, one run
    python benchmarks/run.py --smoke --output /tmp/BENCH.md   # tiny release, 1 run: does it all still work
    python benchmarks/run.py --release full --runs 1 --issue 11 --readback   # issue 11's rows only

Each contender is one shell command; hyperfine runs it `--runs` times after emptying its output
folder, `sync` and reading its input once (a warm page cache), and wraps it in tree.py for the
CPU seconds (user + sys of the whole process tree, the converter's job processes included) and
the peak memory (the sum over the tree of RSS, and of PSS). Releases come from releases.py
(written once into --data-dir); outputs go to --work-dir and are deleted after each contender.
The converter is profiled once with py-spy.
Issue 11's rows read the release from a loopback GitHub-like server and push to a loopback Hub
(tests/), both in this process, once at full speed and once throttled to --throttle MB/s.
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
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

sys.path.insert(0, str(REPO / "tests"))

import releases  # noqa: E402
from machine import machine  # noqa: E402
from github_server import GitHubReleaseServer  # noqa: E402
from hub_server import HubServer  # noqa: E402

from reghead_release.schema import release_tag  # noqa: E402

PYTHON = sys.executable
DOCS = REPO / "docs" / "BENCHMARKS.md"
DISK_SAMPLE_S = 0.5  # the disk sampler's period
HUB_USER, HUB_TOKEN = "bench", "hf_bench_token"  # the loopback Hub's one user
THROTTLED = " throttled"  # suffix of issue 11's rows with the GitHub-like server throttled
PROFILE_RATE = 100  # py-spy samples per second of each busy thread
# Samples of threads waiting (for work, a lock or the GIL) are not CPU: py-spy --native keeps them.
PROFILE_IDLE = (
    r"pthread_cond_(timed)?wait|PyThread_acquire_lock|take_gil|sem_(timed|clock)?wait|epoll_wait|\bpoll \("
    r"|Condition\.wait|Event\.wait|Queue\.get|Queue\.put|Future\.result|_wait_for_tstate_lock"
)
# Profile categories, first match wins: a sample counts where any frame of its stack matches.
PROFILE_SPLIT = {
    "imports": r"_find_and_load|_load_unlocked|exec_module",
    "hash (SHA-256)": r"(?i)sha256|EVP_Digest|EVP_update|hashlib",
    "parquet write": r"write_table|write_batch|parquet::",
    "Arrow (columns, batches)": r"arrow::|pyarrow|rows_to_batch|from_buffers|_to_arrow|RecordBatch",
    "card": r"write_card|dataset_card|convert/card\.py",
    "parse (tar, samples, records)": r"reghead_release/",
}


@dataclass
class Contender:
    """One row of the table: a command, the files it reads, the folder it writes."""

    name: str
    command: list[str]
    inputs: list[Path]
    out: Path
    env: dict = field(default_factory=dict)  # e.g. HF_ENDPOINT for issue 11's rows
    reset: str = ""  # shell, before each run and after the last: e.g. delete the Hub repo
    check: str = ""  # shell, once after the last run (before `reset`): e.g. read the pushed dataset back
    figures: dict = field(default_factory=dict)


@dataclass
class Target:
    text: str
    numerator: str
    denominator: str | None  # None: the numerator's CPU s/GiB
    limit: float
    at_most: bool = True
    figure: str = "cpu_per_gib"  # without a denominator: the numerator's figure


TARGETS = [
    Target("converter CPU seconds per GiB <= 3.0 (issue 13)", "convert", None, 3.0),
    Target("converter wall <= 1.5x `cp` (issue 13, at full size)", "convert", "cp", 1.5),
    Target("do-it-yourself wall >= 2.5x converter's (issue 13)", "diy", "convert", 2.5, at_most=False),
    Target("converter peak RSS <= 500 MiB at 2 jobs (issue 13)", "convert", None, 500, figure="rss"),
    Target(
        "builder `download_and_prepare()` <= 0.8x the webdataset builder's (issue 13)",
        "reghead prepare", "webdataset prepare", 0.8,
    ),  # fmt: skip
    Target("from-release, throttled, <= 1.1x the download alone (issue 11)",
           "from-release" + THROTTLED, "download" + THROTTLED, 1.1),
    Target("from-release <= 0.6x the three-step path (issue 11)", "from-release", "three-step", 0.6),
    *(Target(f"from-release{t} {text} (issue 11)", "from-release" + t, None, limit, figure=figure)
      for t in ("", THROTTLED) for text, limit, figure in (("peak extra disk <= 5 GiB", 5, "disk"),
                                                           ("peak RSS <= 600 MiB", 600, "rss"))),
]  # fmt: skip
UNITS = {"cpu_per_gib": "CPU s/GiB", "disk": "GiB", "rss": "MiB", "pss": "MiB"}


def issue13_contenders(root: Path, work: Path) -> list[Contender]:
    shards = releases.shards(root)
    release_files = [*shards, *(p for p in root.iterdir() if p.is_file())]
    push = [PYTHON, str(REPO / "convert" / "push.py"), "--release", f"512={root}", "--quiet", "--output-dir"]

    def job(name: str, out: str, *inputs: Path) -> list[str]:
        return [PYTHON, str(BENCH / "jobs.py"), name, str(work / out), *map(str, inputs)]

    return [
        Contender("cp", ["cp", *map(str, shards), str(work / "cp")], shards, work / "cp"),
        Contender("convert", [*push, str(work / "convert")], release_files, work / "convert"),
        Contender("diy", job("diy", "diy", *shards), shards, work / "diy"),
        Contender("reghead prepare", job("reghead", "reghead", root), release_files, work / "reghead"),
        Contender("webdataset prepare", job("webdataset", "webdataset", *shards), shards, work / "webdataset"),
    ]


def publish(root: Path, site: Path) -> Path:
    """The release laid out as GitHub serves it, `<site>/<tag>/<asset>`, in hard links (no disk)."""
    folder = site / release_tag(512)
    folder.mkdir(parents=True, exist_ok=True)
    for path in [*releases.shards(root), root / "checksums.tar.gz", root / "metadata.tar.gz"]:
        if not (folder / path.name).exists():
            try:
                os.link(path, folder / path.name)
            except OSError:  # another file system
                os.symlink(path, folder / path.name)
    return site


def issue11_contenders(
    root: Path, work: Path, *, github: str, hub: str, suffix: str, readback: bool
) -> list[Contender]:
    """Issue 11's rows: the release from `github` (`<base>/<tag>/<asset>`) to a repo on the `hub`.

    Each runs in its output folder, with the Hugging Face caches and TMPDIR in it, so that the disk
    sampler sees everything it writes; the Hub repo is deleted before each run and after the last.
    """
    push, tag = [PYTHON, str(REPO / "convert" / "push.py"), "--quiet"], f"{github}/{release_tag(512)}"
    names = [p.name for p in releases.shards(root)]

    def download(dl: Path) -> list[str]:
        pairs = [(dl / "data" / name, f"{tag}/{name}") for name in names]
        pairs += [(dl / name, f"{tag}/{name}") for name in ("checksums.tar.gz", "metadata.tar.gz")]
        pairs = [a for out, url in pairs for a in ("-o", str(out), url)]
        return ["curl", "-sSfL", "--parallel", "--create-dirs", *pairs]

    def contender(name: str, *steps: list[str], check: list[str] | None = None) -> Contender:
        slug = name.replace(" ", "-")
        out, repo = work / (slug + suffix.replace(" ", "-")), f"{HUB_USER}/{slug}"
        steps = [[str(a).format(out=out, repo=repo) for a in step] for step in steps]
        script = " && ".join(["cd " + shlex.quote(str(out)), "mkdir -p tmp", *map(shlex.join, steps)])
        env = {"HF_ENDPOINT": hub, "HF_TOKEN": HUB_TOKEN, "HF_HOME": str(out / "hf"), "TMPDIR": str(out / "tmp"),
               "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_UPDATE_DOWNLOAD_COUNTS": "0"}  # fmt: skip
        delete = {"type": "dataset", "organization": HUB_USER, "name": slug}
        reset = shlex.join(["curl", "-sS", "-o", "/dev/null", "-X", "DELETE", "-d", json.dumps(delete),
                            "-H", f"Authorization: Bearer {HUB_TOKEN}", f"{hub}/api/repos/delete"])  # fmt: skip
        reset += f" && rm -rf {shlex.quote(str(work / 'hub' / 'blobs' / 'lfs'))}"  # else uploads would be skipped
        said = shlex.quote(str(work / f"{slug}.readback"))  # its one line, for the report
        check_shell = shlex.join(a.format(out=out, repo=repo) for a in check) + f" > {said}" if check else ""
        return Contender(name + suffix, ["sh", "-c", script], [], out, env, reset=reset, check=check_shell)

    dl = "{out}/dl"
    shards = [f"{dl}/data/{name}" for name in names]
    readback_job = [PYTHON, str(BENCH / "jobs.py"), "readback", "{out}", "{repo}", str(root)]
    return [
        contender("download", download(Path(dl))),
        contender("from-release", [*push, "--from-release", "512", "--base-url", github, "--repo-id", "{repo}"],
                  check=readback_job if readback and not suffix else None),
        contender("three-step", download(Path(dl)),
                  [*push, "--release", f"512={dl}", "--output-dir", "{out}/parquet", "--repo-id", "{repo}"]),
        contender("diy push", download(Path(dl)),
                  [PYTHON, str(BENCH / "jobs.py"), "diy-push", "{out}/diy", "{repo}", *shards]),
    ]  # fmt: skip


class DiskSampler(threading.Thread):
    """The peak bytes allocated under a folder (like `du`), sampled every DISK_SAMPLE_S while a contender runs."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder, self.peak, self._done = folder, 0, threading.Event()

    def sample(self) -> None:
        total = 0
        for folder, _, files in os.walk(self.folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
                except FileNotFoundError:  # removed meanwhile
                    pass
        self.peak = max(self.peak, total)

    def run(self) -> None:
        while not self._done.wait(DISK_SAMPLE_S):
            self.sample()

    def stop(self) -> float:
        """The peak in GiB."""
        self._done.set()
        self.join()
        return self.peak / 2**30


def hyperfine(contender: Contender, runs: int, work: Path) -> None:
    """Time `runs` runs of the contender; its figures: median wall, CPU s and max RSS of all runs."""
    times, export = work / f"{contender.out.name}.time", work / f"{contender.out.name}.json"
    times.unlink(missing_ok=True)
    out = shlex.quote(str(contender.out))
    warm = f" && cat {shlex.join(map(str, contender.inputs))} > /dev/null" if contender.inputs else ""
    reset = f"{contender.reset} && " if contender.reset else ""
    prepare = f"{reset}rm -rf {out} && mkdir -p {out} && sync{warm}"
    cleanup = " && ".join(filter(None, [contender.check, contender.reset, f"rm -rf {out}"]))
    command = shlex.join([PYTHON, str(BENCH / "tree.py"), str(times), *contender.command])
    sampler = DiskSampler(contender.out)
    sampler.start()
    done = subprocess.run(
        ["hyperfine", "--runs", str(runs), "--prepare", prepare, "--cleanup", cleanup,
         "--export-json", str(export), "--command-name", contender.name, "--style", "basic", command],
        check=False, env={**os.environ, "PYTHONPATH": str(REPO), **contender.env},
    )  # fmt: skip
    disk = sampler.stop()
    if done.returncode:
        sys.exit(f"error: {contender.name!r} failed (hyperfine's output above): {command}")
    result = json.loads(export.read_text())["results"][0]
    rows = [[float(v) for v in line.split()] for line in times.read_text().splitlines() if line.strip()]
    contender.figures = {
        "wall": result["median"],
        "walls": result["times"],
        "cpu": statistics.median(user + system for _, user, system, *_ in rows),
        "rss": max(rss for _, _, _, rss, _ in rows) / 1024,
        "pss": max(pss for *_, pss in rows) / 1024,
        "disk": disk,
    }
    if contender.check:
        contender.figures["readback"] = (work / f"{contender.out.name}.readback").read_text().strip()


def profile(contender: Contender, report: Path) -> dict[str, float] | None:
    """CPU seconds per category of one py-spy run (all threads, native frames), or None without py-spy."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(PYTHON).parent))
    if spy is None:
        return None
    subprocess.run(["rm", "-rf", str(contender.out)], check=True)
    subprocess.run(
        [spy, "record", "-r", str(PROFILE_RATE), "--native", "--subprocesses", "-f", "raw", "-o", str(report), "--", *contender.command],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO), **contender.env},
    )  # fmt: skip
    subprocess.run(["rm", "-rf", str(contender.out)], check=True)
    split = dict.fromkeys([*PROFILE_SPLIT, "other"], 0.0)
    for line in report.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if re.search(PROFILE_IDLE, stack):
            continue
        name = next((name for name, pattern in PROFILE_SPLIT.items() if re.search(pattern, stack)), "other")
        split[name] += int(count) / PROFILE_RATE
    return split


def sha256_floor() -> float:
    """CPU s/GiB of hashlib's SHA-256 alone, in 64 MiB blocks: the least any verified conversion spends."""
    import hashlib

    block, start = os.urandom(64 * 2**20), time.process_time()
    for _ in range(16):
        hashlib.sha256(block).digest()
    return time.process_time() - start


def ratio_lines(results: dict[str, dict[str, Contender]]) -> list[str]:
    lines = ["| release | target | value | |", "|---|---|---|---|"]
    for kind, contenders in results.items():
        for target in TARGETS:
            top = contenders.get(target.numerator)
            bottom = contenders.get(target.denominator) if target.denominator else top
            if not (top and top.figures and bottom and bottom.figures):
                continue
            if target.denominator is None:
                value = top.figures[target.figure]
                shown = f"{value:.2f} {UNITS[target.figure]}"
            else:
                value = top.figures["wall"] / bottom.figures["wall"]
                shown = f"{value:.2f}x ({top.figures['wall']:.1f} s / {bottom.figures['wall']:.1f} s)"
            met = value <= target.limit if target.at_most else value >= target.limit
            lines.append(f"| {kind} | {target.text} | {shown} | {'met' if met else 'missed'} |")
    return lines


def write_report(args, results, sizes, split, started, output: Path) -> None:
    lines = ["# Benchmarks", "", "```bash", shlex.join(["python", "benchmarks/run.py", *args.argv]), "```", ""]
    if args.smoke:
        lines += ["**Smoke run**: a tiny release and one run; the figures mean nothing.", ""]
    elif "full" not in sizes:
        lines += ["**Not at full size**: the issues' targets are for `python benchmarks/run.py` (subset and full).", ""]
    now, minutes = datetime.datetime.now(datetime.timezone.utc), (time.time() - started) / 60
    lines += [f"Run on {now:%Y-%m-%d %H:%M} UTC, {minutes:.1f} minutes in all.", ""]
    lines += ["## Machine", "", *machine(), ""]
    lines += ["## Method", "", (
        f"Every contender is a whole process (start-up and imports included), timed by hyperfine, median of "
        f"{args.runs} run(s). Before each run its output folder is emptied, `sync` is run and its input files are "
        "read once (a warm page cache). CPU is user + sys of the whole process tree (the converter's job "
        "processes included) and peak RSS and PSS the sums over the tree, sampled every 0.1 s (`benchmarks/tree.py`): "
        "RSS counts the pages processes share (libraries) once per process, PSS divides them among them; the "
        "highest of all runs. The converter runs with SHA-256 verification and "
        "content-defined chunking on (its defaults), on all cores; `diy` is `datasets`' packaged webdataset "
        "builder, rows routed to the project's splits, then `to_parquet` per split; `reghead prepare` and "
        "`webdataset prepare` are the two builders' `download_and_prepare()` into an empty cache. Peak disk is "
        f"the most bytes allocated under the contender's output folder, sampled every {DISK_SAMPLE_S} s."), "",
        "Issue 11's rows read the release from the loopback GitHub-like server of `tests/github_server.py` (302 to "
        "expiring signed URLs, Range), once at full loopback speed and once throttled to "
        f"{args.throttle:g} MB/s over all connections (the `{THROTTLED.strip()}` rows), and push to the loopback Hub "
        "of `tests/hub_server.py` (classic LFS, `HF_HUB_DISABLE_XET=1`); both servers run in the benchmark's "
        "process, on the same cores, and their CPU is not counted. `download` is curl fetching every asset at once; "
        "`from-release` is `convert/push.py --from-release 512 --repo-id`; `three-step` is the download, then "
        "`convert/push.py --release 512=DL --output-dir OUT --repo-id` (convert, then push); `diy push` is the "
        "download, then `diy` with `push_to_hub` instead of `to_parquet`. Each runs in its output folder with "
        "`HF_HOME` and `TMPDIR` inside it, so its peak disk includes the Hugging Face caches and the upload work "
        "folder; the Hub server's storage is not in it: for the benchmark the server checks each LFS body's "
        "SHA-256 against its oid and keeps a sparse file of the right size (no disk), and the repo is deleted "
        "before each run and after the last. With `--readback` the Hub keeps `from-release`'s files and, after its "
        "last run, `datasets.load_dataset(repo, \"512\", streaming=True)` must give every split the release's "
        "sample keys (metadata/webdataset_samples.jsonl), no more, no fewer. At full size these rows are run once "
        "(`--runs 1`): each moves 19 GiB.", ""]
    lines += ["## Releases", "", releases.__doc__.split("\n\n")[1].replace("\n", " "), "",
              "| release | shards | GiB | identities | shard sizes (GB) |", "|---|---|---|---|---|"]  # fmt: skip
    for kind, (count, gib, identities, low, high) in sizes.items():
        lines.append(f"| {kind} | {count} | {gib:.2f} | {identities:,} | {low:.2f}-{high:.2f} |")
    header = "| release | contender | wall s (median) | CPU s/GiB | peak RSS MiB | peak PSS MiB | peak disk GiB | all walls s |"
    lines += ["", "## Results", "", header, "|---|---|---|---|---|---|---|---|"]
    for kind, contenders in results.items():
        for c in contenders.values():
            f, walls = c.figures, ", ".join(f"{w:.1f}" for w in c.figures["walls"])
            lines.append(f"| {kind} | {c.name} | {f['wall']:.2f} | {f['cpu_per_gib']:.2f} | {f['rss']:.0f} "
                         f"| {f['pss']:.0f} | {f['disk']:.2f} | {walls} |")
    lines += [f"\n{c.figures['readback']} (`--readback`)" for cs in results.values() for c in cs.values()
              if "readback" in c.figures]  # fmt: skip
    lines += ["", "## Targets", "", *ratio_lines(results), ""]
    if split:
        kind, seconds = split
        total, per_gib = sum(seconds.values()), results[kind]["convert"].figures["cpu_per_gib"]
        lines += ["## Converter profile", "",
                  f"One run of the converter on `{kind}` under `py-spy record --native -r {PROFILE_RATE}` (all "
                  "threads, waits left out; each sample goes to the first category any frame of its stack matches, "
                  "in this order). py-spy counts a busy thread's wall time and slows the run, so only the shares are "
                  "kept; CPU s/GiB is each share of the timed runs' CPU s/GiB. The hash share py-spy finds has been "
                  "below what SHA-256 alone costs here, "
                  f"{sha256_floor():.2f} CPU s/GiB (hashlib, 64 MiB blocks): read it as a lower bound.", "",
                  "| part | share | CPU s/GiB |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {name} | {part / total:.0%} | {part / total * per_gib:.2f} |" for name, part in seconds.items()]
        lines.append("")
    lines += ["## Re-running", "", "```bash",
              "apt-get install hyperfine && pip install py-spy   # the timer and the profiler",
              "python benchmarks/run.py                                     # both issues, subset and full size, 3 runs",
              "python benchmarks/run.py --release full --issue 13          # issue 13's rows at full size, 3 runs",
              "python benchmarks/run.py --release full --runs 1 --issue 11 --readback   # issue 11's rows",
              "python benchmarks/run.py --smoke --output /tmp/BENCHMARKS.md",
              "```", "",
              f"Releases are written once into `--data-dir` (default {releases.DATA_DIR}; full size: 19 GiB) and "
              "reused; outputs go to `--work-dir` and are deleted after each contender (full size: up to ~40 GiB "
              "more, for `diy`'s Arrow cache and parquet).", ""]  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines))


def run_contenders(contenders, args, work: Path, gib: float, results: dict, *, hub: HubServer | None = None) -> None:
    for contender in contenders:
        if args.only and contender.name not in args.only:
            continue
        if hub is not None:  # only a run whose files are read back keeps them
            hub.keep_lfs = bool(contender.check)
        hyperfine(contender, args.runs, work)
        contender.figures["cpu_per_gib"] = contender.figures["cpu"] / gib
        results[contender.name] = contender


def release_size(root: Path) -> tuple:
    """(shards, GiB, identities, smallest and largest shard in GB) of a release."""
    sizes = [p.stat().st_size for p in releases.shards(root)]
    with tarfile.open(root / "metadata.tar.gz") as archive:
        identities = json.load(archive.extractfile("metadata/release_manifest.json"))["num_identities"]
    return len(sizes), sum(sizes) / 2**30, identities, min(sizes) / 1e9, max(sizes) / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--release", action="append", choices=releases.KINDS, help="default: subset and full")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", action="append", help="run only this contender (repeatable)")
    parser.add_argument("--data-dir", type=Path, default=releases.DATA_DIR, help="the release cache")
    parser.add_argument("--work-dir", type=Path, help="outputs of the contenders (default: DATA_DIR/work)")
    parser.add_argument("--output", type=Path, help="default: docs/BENCHMARKS.md (BENCHMARKS-issue11.md for --issue 11 alone)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="the smoke release, one run")
    parser.add_argument("--issue", action="append", choices=("13", "11"), help="run this issue's rows (default: both)")
    parser.add_argument("--throttle", type=float, default=100, help="MB/s of issue 11's throttled rows (default: 100)")
    parser.add_argument("--readback", action="store_true", help="read `from-release`'s dataset back from the Hub")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if shutil.which("hyperfine") is None:
        sys.exit("error: hyperfine is not installed (apt-get install hyperfine)")
    if args.smoke:
        args.release, args.runs = ["smoke"], 1
    kinds = args.release or ["subset", "full"]
    args.issue = args.issue or ["13", "11"]
    if args.output is None:
        args.output = DOCS.with_name("BENCHMARKS-issue11.md") if set(args.issue) == {11} else DOCS
    work = args.work_dir or args.data_dir / "work"
    started = time.time()
    results, sizes, split = {}, {}, None
    for kind in kinds:
        root = releases.release(kind, args.data_dir)
        sizes[kind] = release_size(root)
        work_kind = work / kind
        work_kind.mkdir(parents=True, exist_ok=True)
        results[kind] = {}
        if "13" in args.issue:
            run_contenders(issue13_contenders(root, work_kind), args, work_kind, sizes[kind][1], results[kind])
        for rate in [None, args.throttle] if "11" in args.issue else []:
            site, hub_root = publish(root, work_kind / "site"), work_kind / "hub"
            with GitHubReleaseServer(site, rate=rate and rate * 1e6) as github, \
                    HubServer(hub_root, tokens={HUB_TOKEN: HUB_USER}, keep_lfs=False) as hub:  # fmt: skip
                suffix = THROTTLED if rate else ""
                contenders = issue11_contenders(
                    root, work_kind, github=github.url, hub=hub.url, suffix=suffix, readback=args.readback
                )
                run_contenders(contenders, args, work_kind, sizes[kind][1], results[kind], hub=hub)
            shutil.rmtree(hub_root)
            shutil.rmtree(site)
        if not (args.no_profile or split) and "convert" in results[kind]:  # once, on the first release
            seconds = profile(results[kind]["convert"], work_kind / "convert.pyspy")
            split = (kind, seconds) if seconds else None
    write_report(args, results, sizes, split, started, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
