"""Benchmark the project against the baselines on realistic releases, and write docs/BENCHMARKS.md.

    python benchmarks/run.py                      # the full run: >= 1 GiB of shards per resolution, 3 runs
    python benchmarks/run.py --smoke --output /tmp/b.md --work-dir /tmp/bench   # a tiny run, seconds

Releases are written with the project's own sample-release module, from the real images in
`../shared/samples/reghead-512` when they are there (else drawn ones), re-encoded at JPEG
quality 95 at each resolution. Every contender (the project and the baselines) runs as its own
process, timed from start to exit; the page cache is handled the same way before every timed
run (warmed by reading the contender's input files once, or dropped with `--cache cold`), and
outputs of earlier runs are removed and flushed to disk (`sync`) before it. Runs go round-robin
over the contenders, and each figure is the median of `--runs` runs.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import io
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import procs
from procs import Measured

DEFAULT_OUTPUT = REPO / "docs" / "BENCHMARKS.md"
DEFAULT_IMAGES = REPO.parent / "shared" / "samples" / "reghead-512"
GIB = 2**30
MIB = 2**20
# What the real release weighs per image, tar headers included (RELEASE_FORMAT.md: 18.96 GiB and
# 58.79 GiB for 337,240 images); the JPEG bytes alone are about 1.5 KB less.
REAL_BYTES_PER_IMAGE = {512: 18.96 * GIB / 337_240, 1024: 58.79 * GIB / 337_240}
COLUMN = "close_m_smile"  # the expression column read alone


# --- sizes and releases -------------------------------------------------------------------------


@dataclass
class Release:
    """One benchmarked release."""

    key: str  # "512", "1024", "1024-4N"
    resolution: int
    identities: int
    samples_per_shard: int
    root: Path
    shards: list[Path] = field(default_factory=list)
    shard_bytes: int = 0
    image_bytes: int = 0  # JPEG bytes only
    write_s: float = 0.0
    reused: bool = False  # found already written in the work folder

    @property
    def images(self) -> int:
        return self.identities * 10

    def files(self) -> list[Path]:
        return procs.files_under(self.root)


def default_images_dir() -> Path | None:
    """The real sample images when they are next to the repository, else None (drawn images)."""
    return DEFAULT_IMAGES if DEFAULT_IMAGES.is_dir() else None


def prepare_images(images_dir: Path | None, work: Path) -> dict[int, Path | None]:
    """{resolution: images_dir to give write_sample_release}.

    `write_sample_release` re-encodes real images at JPEG quality 95 when it resizes them, but
    passes 512 sources through as they are at 512; so for 512 the sources are re-encoded at
    quality 95 here first (into the work folder, never into the repository).
    """
    if images_dir is None:
        return {512: None, 1024: None}
    from PIL import Image

    from reghead_release.sample import JPEG_QUALITY, real_identity_dirs

    target = work / "images-512-q95"
    for folder in real_identity_dirs(images_dir):
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for source in sorted(folder.glob("*.jpg")):
            out = target / folder.name / source.name
            if not out.exists():
                with Image.open(source) as image:
                    image = image.convert("RGB")
                    if image.size != (512, 512):
                        image = image.resize((512, 512), Image.Resampling.LANCZOS)
                    buffer = io.BytesIO()
                    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
                out.write_bytes(buffer.getvalue())
    return {512: target, 1024: images_dir}


def image_sizes(images_dir: Path | None, resolution: int) -> dict[str, float]:
    """Mean JPEG bytes of the images a release at `resolution` cycles through (source and as written)."""
    from reghead_release.sample import _real_image, draw_head, identity_name, real_identity_dirs

    if images_dir is None:
        from reghead_release.sample import _jpeg

        sizes = [len(_jpeg(draw_head(identity_name(i), "open_m_open_e", resolution))) for i in range(12)]
        return {"written": statistics.mean(sizes), "cycle": 12}
    dirs = real_identity_dirs(images_dir)
    written = [len(_real_image(str(d / f"{e}.jpg"), resolution)) for d in dirs for e in _expressions()]
    return {"written": statistics.mean(written), "cycle": len(dirs)}


def _expressions() -> tuple[str, ...]:
    from reghead_release.schema import EXPRESSIONS

    return EXPRESSIONS


def jpeg_quality(path: Path) -> int | None:
    """The libjpeg quality whose luminance table the JPEG uses (None when none matches exactly)."""
    from PIL import Image

    with Image.open(path) as image:
        table = image.quantization[0]
    for quality in range(1, 101):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="JPEG", quality=quality)
        if Image.open(io.BytesIO(buffer.getvalue())).quantization[0] == table:
            return quality
    return None


def calibrate(resolution: int, images_dir: Path | None, work: Path) -> float:
    """Bytes per identity in a shard (tar headers included), from a release of one image cycle."""
    from reghead_release.sample import real_identity_dirs, write_sample_release

    count = len(real_identity_dirs(images_dir)) if images_dir else 12
    root = work / "calibration" / str(resolution)
    procs.remove(root)
    release = write_sample_release(
        root, resolution=resolution, num_identities=count, samples_per_shard=count, images_dir=images_dir
    )
    size = sum(p.stat().st_size for p in release.shard_paths)
    procs.remove(root)
    return size / count


def plan_releases(args, images: dict[int, Path | None], work: Path) -> list[Release]:
    """The releases to benchmark: 512 and 1024 of >= `--gib` GiB each, and 1024 at 4x the identities."""
    if args.smoke:  # 512 only, 4N included: the fewest processes that run every code path
        plans = [("512", 512, 8, 4)]
    else:
        plans = []
        for resolution in (512, 1024):
            per_identity = calibrate(resolution, images[resolution], work)
            identities = math.ceil(args.gib * GIB / per_identity)
            per_shard = math.ceil(identities / args.shards)
            plans.append((str(resolution), resolution, per_shard * args.shards, per_shard))
    key, resolution, identities, per_shard = plans[-1]
    plans.append((f"{key}-4N", resolution, 4 * identities, per_shard))
    return [Release(key, res, n, spp, work / "releases" / key) for key, res, n, spp in plans]


def write_release(release: Release, images_dir: Path | None) -> None:
    """Write the release unless the work folder already holds the same one (same parameters)."""
    from reghead_release.sample import write_sample_release

    stamp = release.root / "benchmark-release.json"
    wanted = {
        "resolution": release.resolution,
        "identities": release.identities,
        "samples_per_shard": release.samples_per_shard,
        "images_dir": str(images_dir) if images_dir else None,
    }
    release.reused = stamp.is_file() and json.loads(stamp.read_text()).get("parameters") == wanted
    if not release.reused:
        procs.remove(release.root)
        started = time.perf_counter()
        write_sample_release(
            release.root,
            resolution=release.resolution,
            num_identities=release.identities,
            samples_per_shard=release.samples_per_shard,
            images_dir=images_dir,
        )
        write_s = time.perf_counter() - started
        image_bytes = _image_bytes(sorted((release.root / "data").glob("*.tar")))
        stamp.write_text(json.dumps({"parameters": wanted, "write_s": write_s, "image_bytes": image_bytes}))
    saved = json.loads(stamp.read_text())
    release.write_s = saved["write_s"]
    release.image_bytes = saved["image_bytes"]
    release.shards = sorted((release.root / "data").glob("*.tar"))
    release.shard_bytes = sum(p.stat().st_size for p in release.shards)


def _image_bytes(shards: list[Path]) -> int:
    import tarfile

    total = 0
    for shard in shards:
        with tarfile.open(shard) as archive:
            total += sum(m.size for m in archive if m.name.endswith(".jpg"))
    return total


def publish_http(releases: list[Release], site: Path) -> None:
    """Lay releases out as GitHub serves them, `<site>/<tag>/<asset>`, with hard links (no copy)."""
    from reghead_release.schema import release_tag

    procs.remove(site)
    for release in releases:
        folder = site / release_tag(release.resolution)
        folder.mkdir(parents=True, exist_ok=True)
        for path in [*release.root.glob("*.tar.gz"), *release.shards]:
            try:
                os.link(path, folder / path.name)
            except OSError:
                shutil.copy(path, folder / path.name)


# --- contenders ---------------------------------------------------------------------------------


@dataclass
class Contender:
    """One command to time, with the files to warm before and the outputs to clear."""

    name: str  # e.g. "convert"
    release: Release
    cmd: list[str]
    inputs: list[Path]
    outputs: list[Path] = field(default_factory=list)  # removed before each run
    scratch: list[Path] = field(default_factory=list)  # removed after each run (after sizing)
    env: dict = field(default_factory=dict)
    resolve: Callable[[], tuple[list[str], list[Path]]] | None = None  # (cmd, inputs) known only at run time

    @property
    def id(self) -> str:
        return f"{self.release.key}/{self.name}"


def task(name: str, **arguments) -> list[str]:
    return [sys.executable, str(HERE / "tasks.py"), name, json.dumps(arguments)]


def contenders_for(
    release: Release, work: Path, num_proc: int, http_url: str | None, smoke: bool, project: Path = REPO
) -> list[Contender]:
    """The contenders run on one release; the order is the order of a round."""
    out = work / "out" / release.key
    cache = work / "cache" / release.key
    shards = [str(p) for p in release.shards]
    res = release.resolution
    converted = out / "convert"
    listed = [
        Contender(
            "cp",
            release,
            ["cp", "-r", str(release.root / "data"), str(out / "cp")],
            release.shards,
            [out / "cp"],
            [out / "cp"],
        ),
        Contender(
            "convert",
            release,
            [
                sys.executable,
                str(project / "convert" / "push.py"),
                "--release",
                f"{res}={release.root}",
                "--output-dir",
                str(converted),
                "--num-proc",
                str(num_proc),
                "--quiet",
            ],
            release.files(),
            [converted],
        ),
    ]
    # The 4N release is for the converter's memory and linearity only.
    if release.key.endswith("-4N"):
        listed[-1].scratch.append(converted)  # nothing reads it: do not leave 4 GiB in the page cache
        return listed

    def reader(column: str | None) -> Callable[[], tuple[list[str], list[Path]]]:
        def resolve():  # the parquet files exist only once `convert` has run
            files = sorted((converted / str(res)).glob("*.parquet"))
            return task("read-parquet", files=[str(p) for p in files], columns=[column] if column else None), files

        return resolve

    stream = {"resolution": res, "split": "train", "cache_dir": str(cache / "stream")}
    local = dict(data_dir=str(release.root), **stream)
    listed += [
        Contender("read-one-column", release, [], [], resolve=reader(COLUMN)),
        Contender("read-all-columns", release, [], [], scratch=[converted], resolve=reader(None)),  # the last reader
        Contender(
            "maintainer",
            release,
            task(
                "maintainer",
                shards=shards,
                output_dir=str(out / "maintainer"),
                cache_dir=str(cache / "maintainer"),
                num_proc=num_proc,
            ),
            release.shards,
            [out / "maintainer", cache / "maintainer"],
            [out / "maintainer", cache / "maintainer"],
        ),
        Contender(
            "datasets-webdataset",
            release,
            task("datasets-webdataset", shards=shards, cache_dir=str(cache / "b4")),
            release.shards,
            [cache / "b4"],
            [cache / "b4"],
        ),
        Contender(
            "reghead-prepare",
            release,
            task("reghead-prepare", resolution=res, data_dir=str(release.root), cache_dir=str(cache / "prepare")),
            release.files(),
            [cache / "prepare"],
            [cache / "prepare"],
        ),
        Contender("webdataset-iter", release, task("webdataset-iter", shards=shards), release.shards),
        # also the local time-to-first-row figure: its first row is timed like the HTTP one's
        Contender(
            "stream-iter",
            release,
            task("reghead-stream", all=True, **local),
            release.files(),
            [cache / "stream"],
            [cache / "stream"],
        ),
    ]
    if not smoke:
        listed.append(
            Contender(
                "first-row-local-torch",
                release,
                task("reghead-stream", all=False, import_torch=True, **local),
                release.files(),
                [cache / "stream"],
                [cache / "stream"],
            )
        )
    if http_url:
        remote = dict(base_url=http_url, **stream)
        listed.append(
            Contender(
                "first-row-http",
                release,
                task("reghead-stream", all=False, **remote),
                release.files(),
                [cache / "stream"],
                [cache / "stream"],
            )
        )
        if not smoke:
            listed.append(
                Contender(
                    "first-row-http-torch",
                    release,
                    task("reghead-stream", all=False, import_torch=True, **remote),
                    release.files(),
                    [cache / "stream"],
                    [cache / "stream"],
                )
            )
    return listed


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_contender(contender: Contender, work: Path, cache_mode: str, run: int, env: dict) -> Measured:
    cmd, inputs = contender.resolve() if contender.resolve else (contender.cmd, contender.inputs)
    for path in contender.outputs:
        procs.remove(path)
    for path in contender.outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
    os.sync()  # no dirty pages from an earlier run are written back during this one
    if cache_mode == "cold":
        procs.drop_caches()
    else:
        procs.warm(inputs)
    name = f"{contender.id.replace('/', '_')}-run{run}"
    measured = procs.run_measured(cmd, env={**env, **contender.env}, cwd=REPO, log_dir=work / "logs", name=name)
    if measured.returncode != 0:
        raise SystemExit(
            f"{contender.id} failed (exit {measured.returncode}); see {work / 'logs' / name}.err:\n{measured.stderr_tail}"
        )
    if contender.name == "convert":
        measured.result["output_bytes"] = dir_bytes(contender.outputs[0])
    for path in contender.outputs:
        measured.result.setdefault("output_bytes", dir_bytes(path))
    for path in contender.scratch:
        procs.remove(path)
    return measured


def start_server(site: Path, work: Path) -> tuple[subprocess.Popen, str]:
    with open(work / "logs" / "http-server.err", "wb") as log:  # the server keeps its own copy of the handle
        proc = subprocess.Popen(
            task("serve", root=str(site)), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=REPO
        )
    url = proc.stdout.readline().decode().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"the HTTP server did not start: {url!r}")
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- figures ------------------------------------------------------------------------------------


def med(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


class Figures:
    """Medians of the runs, by contender id."""

    def __init__(self, results: dict[str, list[Measured]]):
        self.results = results

    def runs(self, cid: str) -> list[Measured]:
        return self.results[cid]

    def wall(self, cid: str) -> float:
        return med(m.wall_s for m in self.results[cid])

    def value(self, cid: str, key: str) -> float:
        return med(m.result.get(key) for m in self.results[cid])

    def first_row_whole(self, cid: str) -> float:
        return med(m.result["first_row_at"] - m.started_at for m in self.results[cid])

    def rows_per_s(self, cid: str) -> tuple[float, float]:
        """(whole process, in-process iteration) rows per second."""
        rows = self.value(cid, "rows")
        return rows / self.wall(cid), med(m.result["rows"] / m.result["iter_s"] for m in self.results[cid])

    def peak_rss(self, cid: str) -> tuple[float, float]:
        values = [m.peak_tree_rss for m in self.results[cid]]
        return statistics.median(values), max(values)


@dataclass
class Target:
    what: str
    figure: str
    goal: str
    met: bool | None


FIRST_ROW = {  # contender -> how the time-to-first-row rows name it
    "stream-iter": "local shards",
    "first-row-local-torch": "local shards, torch imported beforehand",
    "first-row-http": "HTTP 127.0.0.1",
    "first-row-http-torch": "HTTP 127.0.0.1, torch imported beforehand",
}


def evaluate(fig: Figures, releases: list[Release]) -> list[Target]:
    targets = []

    def has(r: Release, name: str) -> bool:
        return f"{r.key}/{name}" in fig.results

    main = [r for r in releases if not r.key.endswith("-4N")]
    for r in main:
        k = r.key
        if not has(r, "maintainer"):
            continue
        convert, cp, maint = fig.wall(f"{k}/convert"), fig.wall(f"{k}/cp"), fig.wall(f"{k}/maintainer")
        targets.append(
            Target(
                f"{k}: convert to parquet, SHA-256 verified, vs `cp` of the shards",
                f"{convert:.2f} s vs {cp:.2f} s = **{convert / cp:.2f}x**",
                "<= 2.0x",
                convert / cp <= 2.0,
            )
        )
        targets.append(
            Target(
                f'{k}: convert vs baseline 2 (`load_dataset("webdataset")` + `to_parquet`)',
                f"{maint:.2f} s vs {convert:.2f} s = **{maint / convert:.2f}x faster**",
                ">= 2.5x faster",
                maint / convert >= 2.5,
            )
        )
    for r in main:
        k = r.key
        if has(r, "reghead-prepare"):
            prep, b4 = fig.wall(f"{k}/reghead-prepare"), fig.wall(f"{k}/datasets-webdataset")
            targets.append(
                Target(
                    f"{k}: `RegHead.download_and_prepare()` vs baseline 4",
                    f"{prep:.2f} s vs {b4:.2f} s = **{prep / b4:.2f}x**",
                    "<= 1.0x",
                    prep / b4 <= 1.0,
                )
            )
    quad = next(r for r in releases if r.key.endswith("-4N"))
    base = quad.key.removesuffix("-4N")  # 1024 (512 in the smoke run)
    n_med, n_max = fig.peak_rss(f"{base}/convert")
    q_med, q_max = fig.peak_rss(f"{quad.key}/convert")
    targets.append(
        Target(
            f"{base}, N identities: converter peak RSS, whole process tree",
            f"**{n_max / MIB:.0f} MiB** (max of runs; median {n_med / MIB:.0f})",
            "<= 500 MiB",
            n_max <= 500 * MIB,
        )
    )
    targets.append(
        Target(
            f"{base}, 4N identities: converter peak RSS, whole process tree",
            f"**{q_max / MIB:.0f} MiB** (max of runs; median {q_med / MIB:.0f})",
            "<= 500 MiB",
            q_max <= 500 * MIB,
        )
    )
    targets.append(
        Target(
            f"{base}: converter peak RSS, 4N vs N (medians)",
            f"{q_med / MIB:.0f} vs {n_med / MIB:.0f} MiB = **{(q_med / n_med - 1) * 100:+.1f}%**",
            "within 10%",
            abs(q_med / n_med - 1) <= 0.10,
        )
    )
    t_n, t_q = fig.wall(f"{base}/convert"), fig.wall(f"{quad.key}/convert")
    targets.append(
        Target(
            f"{base}: conversion time, 4N vs N identities",
            f"{t_q:.2f} s vs {t_n:.2f} s = **{t_q / t_n:.2f}x**",
            "<= 4.4x",
            t_q / t_n <= 4.4,
        )
    )
    for r in main:
        for name, label in FIRST_ROW.items():
            cid = f"{r.key}/{name}"
            if cid not in fig.results:
                continue
            inproc, whole = fig.value(cid, "first_row_s"), fig.first_row_whole(cid)
            targets.append(
                Target(
                    f"{r.key}: streaming time to first row, {label}: in-process, from the `as_streaming_dataset` call",
                    f"**{inproc:.3f} s**",
                    "<= 0.5 s",
                    inproc <= 0.5,
                )
            )
            targets.append(
                Target(
                    f"{r.key}: streaming time to first row, {label}: whole process, interpreter start-up and imports included",
                    f"**{whole:.3f} s**",
                    "<= 0.5 s",
                    whole <= 0.5,
                )
            )
    for r in main:
        k = r.key
        if has(r, "stream-iter"):
            ours, _ = fig.rows_per_s(f"{k}/stream-iter")
            base, _ = fig.rows_per_s(f"{k}/webdataset-iter")
            targets.append(
                Target(
                    f"{k}: streaming iteration, 10 images decoded per row, vs baseline 3 (rows/s, whole process)",
                    f"{ours:.1f} vs {base:.1f} rows/s = **{ours / base:.2f}x**",
                    ">= 1.0x",
                    ours / base >= 1.0,
                )
            )
    for r in main:
        k = r.key
        one, every = f"{k}/read-one-column", f"{k}/read-all-columns"
        if one not in fig.results:
            continue
        fraction = fig.value(one, "bytes_read") / fig.value(one, "file_bytes")
        targets.append(
            Target(
                f"{k}: read one expression column: share of the parquet file bytes read",
                f"**{fraction * 100:.1f}%**",
                "<= 15%",
                fraction <= 0.15,
            )
        )
        speed = fig.wall(every) / fig.wall(one)
        targets.append(
            Target(
                f"{k}: read one expression column vs all columns (whole process)",
                f"{fig.wall(one):.2f} s vs {fig.wall(every):.2f} s = **{speed:.2f}x faster**",
                ">= 5x",
                speed >= 5,
            )
        )
    return targets


# --- the report ---------------------------------------------------------------------------------


def machine(project: Path = REPO) -> dict[str, str]:
    info = {}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?"
        )
        flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
        info["CPU"] = f"{model}, {os.cpu_count()} cores" + (" (SHA extensions)" if " sha_ni" in flags else "")
    except OSError:
        info["CPU"] = f"{platform.processor()}, {os.cpu_count()} cores"
    try:
        total = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        info["RAM"] = f"{total / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    info["OS"] = f"{platform.system()} {platform.release()}"
    info["Python"] = platform.python_version()
    info["packages"] = ", ".join(
        f"{name} {_version(name)}"
        for name in ("datasets", "pyarrow", "webdataset", "pillow", "fsspec", "aiohttp", "numpy", "torch")
    )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], check=False, cwd=project, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "reghead.py", "reghead_release", "convert"],
            check=False,
            cwd=project,
            capture_output=True,
            text=True,
        ).stdout.strip()
        where = "" if project == REPO else f"{project}, "
        info["project"] = f"{where}commit {commit}" + (
            " (with uncommitted changes to the project's code)" if dirty else ""
        )
    except OSError:
        pass
    return info


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _filesystem(path: Path) -> str:
    best = ("?", "?", "")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if str(path.resolve()).startswith(mount) and len(mount) >= len(best[2]):
                best = (device, kind, mount)
    except OSError:
        pass
    free = shutil.disk_usage(path).free / GIB
    return f"{best[1]} on {best[0]} ({free:.0f} GiB free at the start)"


def fmt_s(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


CONTENDER_LABELS = {
    "cp": "`cp -r data/` (baseline 1: the floor)",
    "convert": "project: `convert/push.py`, SHA-256 verified",
    "maintainer": 'baseline 2: `load_dataset("webdataset")` + `split_of` filter + `to_parquet` per split',
    "datasets-webdataset": 'baseline 4: `load_dataset("webdataset", data_files=..., split="train")`',
    "reghead-prepare": "project: `RegHead(data_dir=...).download_and_prepare()`",
    "first-row-local-torch": "project: streaming, first row only, local shards, torch imported first",
    "first-row-http": "project: streaming, first row only, HTTP 127.0.0.1",
    "first-row-http-torch": "project: streaming, first row only, HTTP 127.0.0.1, torch imported first",
    "webdataset-iter": 'baseline 3: `WebDataset(shards).decode("pil")` + map, to the end',
    "stream-iter": "project: streaming `train`, 10 images decoded per row, to the end",
    "read-one-column": f"parquet: read one column (`{COLUMN}`)",
    "read-all-columns": "parquet: read all columns",
}


def render(meta: dict, releases: list[Release], fig: Figures, targets: list[Target]) -> str:
    smoke, runs, cache, num_proc, cold_ok = (
        meta["smoke"],
        meta["runs"],
        meta["cache"],
        meta["num_proc"],
        meta["cold_ok"],
    )
    images_dir, sizes = meta["images_dir"], meta["sizes"]
    started = datetime.datetime.fromisoformat(meta["started_at"])
    lines = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add("```bash")
    add(" ".join(["python benchmarks/run.py", *map(shlex.quote, meta["argv"])]).strip())
    add("```")
    add("")
    if smoke:
        add(
            "**Smoke run**: tiny releases and a single run, to prove the benchmark works. The figures below mean nothing."
        )
        add("")
    reused = any(r.reused for r in releases)
    add(
        f"Run on {started:%Y-%m-%d %H:%M} UTC, {meta['seconds'] / 60:.1f} minutes in all "
        f"({'releases reused from an earlier run in the same work folder' if reused else 'release writing included'}); "
        f"load average at the start {meta['load_at_start'][0]:.2f}."
    )
    add("")
    add("## Machine")
    add("")
    for key, value in meta["machine"].items():
        add(f"- {key}: {value}")
    add(f"- disk: {meta['disk']}")
    add("")
    add("## Method")
    add("")
    add(
        "- Every contender is a separate process (`python benchmarks/tasks.py <task>`, or `convert/push.py` and `cp` as they are), "
        "timed from its start to its exit: interpreter start-up and imports are included in every time below."
    )
    add(
        f"- Each figure is the median of {runs} run{'s' if runs > 1 else ''}; runs go round-robin over all contenders (run 1 of everything, then run 2, ...). "
        "All runs are listed in the tables."
    )
    if cache == "warm":
        add(
            "- Page cache: **warm** for every contender. Before each timed run, the contender's input files are read once in full "
            "(shards, plus metadata and checksums for the project, plus the parquet files for the parquet reads), "
            "after the outputs of the previous run were deleted and `sync` flushed dirty pages. "
            + (
                "Dropping the caches (`sync; echo 3 > /proc/sys/vm/drop_caches`) works on this machine; `--cache cold` does it instead."
                if cold_ok
                else "Dropping the caches (`echo 3 > /proc/sys/vm/drop_caches`) is not permitted here."
            )
        )
    else:
        add(
            "- Page cache: **cold** for every contender: `sync; echo 3 > /proc/sys/vm/drop_caches` before each timed run."
        )
    add(
        f"- Workers: the converter runs with `--num-proc {num_proc}` (all cores) and baseline 2's `load_dataset` with `num_proc={num_proc}`; "
        "`download_and_prepare()`, baseline 4, and both iterations use their defaults (one process)."
    )
    add(
        "- Memory: the whole process tree (the contender and all its descendants, e.g. baseline 2's worker processes) is sampled every "
        "50 ms from `/proc`; *peak tree RSS* is the largest sum of the tree's resident set sizes (`/proc/<pid>/statm`), *peak tree PSS* "
        "the same with proportional set sizes (`/proc/<pid>/smaps_rollup`, shared pages split between the processes that map them). "
        "*Largest process* is the highest per-process high-water mark (`VmHWM` in `/proc/<pid>/status`, kept by the kernel)."
    )
    add(
        "- Bytes read by the parquet reader: the growth of `rchar` in `/proc/self/io` around `pyarrow.parquet.read_table` "
        "(every byte returned by read/pread, page-cache hits included)."
    )
    add("")
    add("## Releases")
    add("")
    if images_dir:
        add(
            f"Written with `reghead_release.sample.write_sample_release` from the {sizes['512']['cycle']} real identities in "
            f"`{_display_path(Path(images_dir))}`, cycled: at 512 each source image re-encoded at JPEG quality 95; at 1024 resized "
            "(Lanczos) and encoded at quality 95 by the sample module."
        )
    else:
        add(
            "Written with `reghead_release.sample.write_sample_release` with its drawn cartoon heads (the real sample images were not found); "
            "drawn images are far smaller than the real ones."
        )
    add(
        "Shards are smaller than the real ones (up to 1.9 GiB) so that a 1 GiB release still has several shards for the 2 cores; "
        "the converter's memory does not depend on shard size past its 128 MiB buffer, which these shards exceed."
    )
    add("")
    add(
        "| release | identities | images | shards | samples/shard | shard bytes | mean JPEG | real release's mean | written in |"
    )
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in releases:
        mean_jpeg = r.image_bytes / r.images
        real = REAL_BYTES_PER_IMAGE[r.resolution] - 1.5 * 1024
        add(
            f"| {r.key} | {r.identities:,} | {r.images:,} | {len(r.shards)} | {r.samples_per_shard} | {r.shard_bytes / GIB:.2f} GiB ({r.shard_bytes / 1e9:.2f} GB) "
            f"| {mean_jpeg / 1000:.1f} KB | ~{real / 1000:.0f} KB ({mean_jpeg / real * 100:.0f}%) | {r.write_s:.0f} s |"
        )
    add("")
    if images_dir:
        add(
            f"The 12 real 512 images are {sizes['source'] / 1000:.1f} KB on average as shipped (JPEG quality {sizes['source_quality']}, from their quantization tables); re-encoded at quality 95 "
            f"they are {sizes['512']['written'] / 1000:.1f} KB, and {sizes['1024']['written'] / 1000:.1f} KB upscaled to 1024. The real release "
            f"averages ~{(REAL_BYTES_PER_IMAGE[512] - 1536) / 1000:.0f} KB and ~{(REAL_BYTES_PER_IMAGE[1024] - 1536) / 1000:.0f} KB per image: "
            "re-encoding cannot add the detail the sources lost, so the benchmark images are smaller than the real ones and a GiB of "
            "shards holds more identities than it would in the real release (per-row costs weigh a little more here)."
        )
        add("")
    add("## Targets")
    add("")
    add("| target | figure | goal | |")
    add("| --- | --- | --- | --- |")
    for t in targets:
        add(f"| {t.what} | {t.figure} | {t.goal} | {'met' if t.met else '**missed**'} |")
    add("")
    add("## All figures")
    add("")
    add(
        "Times are whole-process wall seconds. *CPU s* is the user + system seconds of the whole tree (median). *Other CPU s* is, "
        "for each run, the CPU time the rest of the machine used meanwhile (other processes and kernel threads such as writeback; "
        "from `/proc/stat`, less the contender's and the runner's own): anything far above 0 means the run was disturbed."
    )
    add("")
    for r in releases:
        add(f"### {r.key} ({r.shard_bytes / GIB:.2f} GiB of shards, {r.identities:,} identities)")
        add("")
        add(
            "| contender | median s | runs (s) | CPU s | MB/s of shards | peak tree RSS | peak tree PSS | largest process | processes | output | other CPU s |"
        )
        add("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for cid, runs in fig.results.items():
            if not cid.startswith(r.key + "/"):
                continue
            name = cid.split("/", 1)[1]
            wall = fig.wall(cid)
            cpu = med(m.user_s + m.sys_s for m in runs)
            out = med(m.result.get("output_bytes") for m in runs)
            out_text = f"{out / GIB:.2f} GiB" if out and not math.isnan(out) else ""
            rate = f"{r.shard_bytes / 1e6 / wall:.0f}" if not name.startswith(("read-", "first-row")) else ""
            add(
                f"| {CONTENDER_LABELS.get(name, name)} | {wall:.2f} | {fmt_s([m.wall_s for m in runs])} | {cpu:.1f} | {rate} "
                f"| {med(m.peak_tree_rss for m in runs) / MIB:.0f} MiB | {med(m.peak_tree_pss for m in runs) / MIB:.0f} MiB "
                f"| {med(m.max_process_rss for m in runs) / MIB:.0f} MiB | {max(m.max_processes for m in runs)} | {out_text} "
                f"| {fmt_s([m.other_cpu_s for m in runs])} |"
            )
        add("")
        details = _details(r, fig)
        if details:
            lines.extend(details)
            add("")
    busy = {
        cid: [n for n, m in enumerate(runs, 1) if m.other_cpu_s > 0.2 * m.wall_s + 0.5]
        for cid, runs in fig.results.items()
    }
    disturbed = [f"{cid} run {n}" for cid, numbers in busy.items() for n in numbers]
    suspect = [cid for cid, numbers in busy.items() if 2 * len(numbers) >= len(fig.results[cid])]
    add("## Notes")
    add("")
    if disturbed:
        add(
            f"- Runs during which the rest of the machine used more than 20% of a core (*other CPU s*): {', '.join(disturbed)}. "
            + (
                f"The medians of {', '.join(suspect)} may be disturbed."
                if suspect
                else f"No contender has more than one in {runs}, so every median above is an undisturbed run."
            )
        )
    add(
        "- Baseline 2 is the most faithful account of a maintainer without this project: `datasets`' webdataset builder knows no "
        "splits, so the release is loaded once (all rows, `num_proc` workers), each split is selected with the project's "
        "`reghead.split_of` on the key column (`Dataset.filter`, which writes only an index) and written with `Dataset.to_parquet`. "
        "Its total includes the load; the per-split costs are listed above. It verifies no checksum and does not parse identities."
    )
    add(
        "- Streaming iteration: the project streams the `train` split (about 90% of the rows) but reads and SHA-256-verifies every "
        'byte of every shard; its rows/s counts train rows only. Baseline 3 yields every row, verifies nothing, and its `decode("pil")` '
        "also converts each image to RGB. Both decode all 10 JPEGs of every row (`datasets`' `Image` feature calls `load()`)."
    )
    add(
        "- Time to first row, in-process: from the `as_streaming_dataset` call to the first row (the `RegHead(...)` constructor is "
        "listed separately). Whole process: from the moment the process was started to the first row, so Python start-up and "
        "`import datasets` are in it."
    )
    add(
        "- Parquet reads: `pyarrow.parquet.read_table` of all the converted files of one resolution (all splits), one column or all."
    )
    add("- Raw figures of every run: `results.json` in the work folder.")
    notes = HERE / "FINDINGS.md"
    if notes.is_file() and not smoke:
        add("")
        lines.extend(notes.read_text().rstrip().splitlines())
    return "\n".join(lines) + "\n"


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path, REPO)
    except ValueError:
        return str(path)


def _details(r: Release, fig: Figures) -> list[str]:
    k = r.key
    out = []
    if f"{k}/maintainer" in fig.results:
        runs = fig.runs(f"{k}/maintainer")
        parts = [
            f"load {med(m.result['load_s'] for m in runs):.2f} s ({fig.value(f'{k}/maintainer', 'rows'):.0f} rows)"
        ]
        for split in ("train", "validation", "test"):
            parts.append(
                f"{split}: filter {med(m.result['splits'][split]['filter_s'] for m in runs):.2f} s + to_parquet "
                f"{med(m.result['splits'][split]['to_parquet_s'] for m in runs):.2f} s ({med(m.result['splits'][split]['rows'] for m in runs):.0f} rows)"
            )
        out.append(f"- Baseline 2, in-process: {'; '.join(parts)}.")
    if f"{k}/reghead-prepare" in fig.results:
        rows = fig.runs(f"{k}/reghead-prepare")[0].result["rows"]
        out.append(
            f"- In-process: `download_and_prepare()` + `as_dataset` {fig.value(f'{k}/reghead-prepare', 'prepare_s'):.2f} s "
            f"({', '.join(f'{s} {n:,}' for s, n in rows.items())} rows); baseline 4 {fig.value(f'{k}/datasets-webdataset', 'prepare_s'):.2f} s "
            f"({fig.value(f'{k}/datasets-webdataset', 'rows'):,.0f} rows)."
        )
    if f"{k}/stream-iter" in fig.results:
        ours, ours_in = fig.rows_per_s(f"{k}/stream-iter")
        base, base_in = fig.rows_per_s(f"{k}/webdataset-iter")
        out.append(
            f"- Iteration: project {fig.value(f'{k}/stream-iter', 'rows'):,.0f} train rows, {ours:.1f} rows/s whole process, "
            f"{ours_in:.1f} rows/s in-process; baseline 3 {fig.value(f'{k}/webdataset-iter', 'rows'):,.0f} rows, {base:.1f} rows/s whole process, "
            f"{base_in:.1f} rows/s in-process (ratio {ours_in / base_in:.2f}x in-process). Images decoded per second: "
            f"{ours_in * 10:.0f} vs {base_in * 10:.0f}."
        )
    for name, label in FIRST_ROW.items():
        cid = f"{k}/{name}"
        if cid in fig.results:
            out.append(
                f"- First row, {label}: imports {fig.value(cid, 'import_s'):.2f} s, `RegHead(...)` {fig.value(cid, 'builder_s'):.3f} s, "
                f"`as_streaming_dataset` call to first row {fig.value(cid, 'first_row_s'):.3f} s, process start to first row "
                f"{fig.first_row_whole(cid):.3f} s."
            )
    if f"{k}/webdataset-iter" in fig.results:
        cid = f"{k}/webdataset-iter"
        out.append(
            f"- For comparison, baseline 3's first sample: {fig.value(cid, 'first_row_s'):.3f} s after `WebDataset(...)`, "
            f"{fig.first_row_whole(cid):.3f} s after process start (`import webdataset` {fig.value(cid, 'import_s'):.2f} s: it imports torch)."
        )
    one = f"{k}/read-one-column"
    if one in fig.results:
        every = f"{k}/read-all-columns"
        out.append(
            f"- Parquet ({fig.value(one, 'file_bytes') / GIB:.2f} GiB in {fig.value(one, 'files'):.0f} files): one column read "
            f"{fig.value(one, 'bytes_read') / MIB:.0f} MiB ({fig.value(one, 'bytes_read') / fig.value(one, 'file_bytes') * 100:.1f}%; the column's chunks are "
            f"{fig.value(one, 'column_bytes') / fig.value(one, 'file_bytes') * 100:.1f}% of the files) in {fig.value(one, 'read_s'):.3f} s in-process; "
            f"all columns read {fig.value(every, 'bytes_read') / MIB:.0f} MiB in {fig.value(every, 'read_s'):.3f} s in-process "
            f"({fig.value(every, 'read_s') / fig.value(one, 'read_s'):.1f}x)."
        )
    return out


def column_share(files: list[str], column: str) -> int:
    """Bytes of a column's chunks in parquet files, from their metadata."""
    import pyarrow.parquet as pq

    total = 0
    for path in files:
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                if chunk.path_in_schema.split(".")[0] == column:
                    total += chunk.total_compressed_size
    return total


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny releases and 1 run: proves the benchmark works, in seconds"
    )
    parser.add_argument("--runs", type=int, help="timed runs per contender (default 3; 1 with --smoke)")
    parser.add_argument(
        "--gib",
        type=float,
        default=1.0,
        help="GiB of shards per resolution (default 1.0); 1024 is also run at 4x the identities",
    )
    parser.add_argument(
        "--shards", type=int, default=4, help="shards per resolution (default 4; 16 for the 4x release)"
    )
    parser.add_argument(
        "--work-dir",
        default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "reghead-bench"),
        help="releases, outputs and logs (default: $TMPDIR/reghead-bench); must be outside the repository",
    )
    parser.add_argument(
        "--output", default=str(DEFAULT_OUTPUT), help="where the markdown report goes (default: docs/BENCHMARKS.md)"
    )
    parser.add_argument(
        "--images-dir",
        default="auto",
        help="real images <identity>/<expression>.jpg; 'auto' (default) uses ../shared/samples/reghead-512 when present, 'none' draws images",
    )
    parser.add_argument(
        "--cache",
        choices=("warm", "cold"),
        default="warm",
        help="warm the page cache by reading the inputs before each run (default), or drop it (needs root)",
    )
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP time-to-first-row contender")
    parser.add_argument(
        "--project",
        default=str(REPO),
        help="the checkout of the project to measure (default: this one), e.g. one with a proposed change",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing: rewrite the report from the work folder's results.json"
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.smoke else 3
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    work = Path(args.work_dir).resolve()
    if work == REPO or REPO in work.parents:
        raise SystemExit(
            f"--work-dir {work} is inside the repository: releases (and the licensed sample images) must stay out of it"
        )
    if args.report_only:
        saved = json.loads((work / "results.json").read_text())
        return write_report(args, saved)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.perf_counter()
    load_at_start = os.getloadavg()
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    cold_ok = procs.can_drop_caches()
    if args.cache == "cold" and not cold_ok:
        raise SystemExit("--cache cold needs write access to /proc/sys/vm/drop_caches (root)")

    import tasks

    from reghead_release.schema import EXPRESSIONS

    assert tuple(tasks.EXPRESSIONS) == tuple(EXPRESSIONS), "benchmarks/tasks.py's EXPRESSIONS differ from the project's"

    images_dir = (
        default_images_dir()
        if args.images_dir == "auto"
        else (None if args.images_dir == "none" else Path(args.images_dir))
    )
    if images_dir is not None and not images_dir.is_dir():
        raise SystemExit(f"--images-dir {images_dir} is not a folder")
    images = prepare_images(images_dir, work)
    sizes = {str(res): image_sizes(images[res], res) for res in (512, 1024)}
    if images_dir:
        sources = sorted(Path(images_dir).glob("*/*.jpg"))
        sizes["source"] = statistics.mean(p.stat().st_size for p in sources)
        sizes["source_quality"] = jpeg_quality(sources[0])
    releases = plan_releases(args, images, work)
    for release in releases:
        log(f"writing release {release.key}: {release.identities} identities, {release.samples_per_shard} per shard")
        write_release(release, images[release.resolution])
        log(f"  {release.shard_bytes / GIB:.2f} GiB in {len(release.shards)} shards ({release.write_s:.0f} s)")

    num_proc = os.cpu_count() or 1
    project = Path(args.project).resolve()
    env = {
        **os.environ,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_DATASETS_CACHE": str(work / "cache" / "hf"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    env["REGHEAD_BENCH_PROJECT"] = str(project)
    env.pop("REGHEAD_BASE_URL", None)
    server, url = None, None
    if not args.no_http:
        publish_http([r for r in releases if not r.key.endswith("-4N")], work / "site")
        server, url = start_server(work / "site", work)
    results: dict[str, list[Measured]] = {}
    try:
        contenders = [c for r in releases for c in contenders_for(r, work, num_proc, url, args.smoke, project)]
        for run in range(1, args.runs + 1):
            for contender in contenders:
                log(f"run {run}/{args.runs} {contender.id}")
                measured = run_contender(contender, work, args.cache, run, env)
                if contender.name.startswith("read-"):
                    files = [
                        str(p)
                        for p in sorted(
                            (work / "out" / contender.release.key / "convert" / str(contender.release.resolution)).glob(
                                "*.parquet"
                            )
                        )
                    ]
                    measured.result.update(
                        file_bytes=sum(os.path.getsize(p) for p in files),
                        files=len(files),
                        column_bytes=column_share(files, COLUMN),
                    )
                results.setdefault(contender.id, []).append(measured)
                log(f"  {measured.wall_s:.2f} s, peak tree RSS {measured.peak_tree_rss / MIB:.0f} MiB")
    finally:
        if server is not None:
            stop_server(server)
    saved = {
        "meta": {
            "argv": argv,
            "smoke": args.smoke,
            "runs": args.runs,
            "cache": args.cache,
            "started_at": started_at.isoformat(),
            "seconds": time.perf_counter() - t_start,
            "load_at_start": load_at_start,
            "machine": machine(project),
            "disk": _filesystem(work),
            "images_dir": str(images_dir) if images_dir else None,
            "sizes": sizes,
            "num_proc": num_proc,
            "cold_ok": cold_ok,
            "releases": [{**asdict(r), "root": str(r.root), "shards": [str(p) for p in r.shards]} for r in releases],
        },
        "results": {cid: [asdict(m) for m in runs] for cid, runs in results.items()},
    }
    (work / "results.json").write_text(json.dumps(saved, indent=1))
    return write_report(args, saved)


def write_report(args, saved: dict) -> int:
    """Render the markdown from the saved figures (those of this run, or of `--report-only`'s work folder)."""
    meta = saved["meta"]
    releases = [
        Release(**{**r, "root": Path(r["root"]), "shards": [Path(p) for p in r["shards"]]}) for r in meta["releases"]
    ]
    results = {cid: [Measured(**m) for m in runs] for cid, runs in saved["results"].items()}
    fig = Figures(results)
    targets = evaluate(fig, releases)
    text = render(meta, releases, fig, targets)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    log(f"wrote {output}")
    for t in targets:
        log(f"  {'met    ' if t.met else 'MISSED '} {t.what}: {t.figure.replace('**', '')}")
    return 0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
