"""Release shards to the Hub's parquet layout: one job per shard, resumable, published last.

Each shard is read once by the project's reader (verified against SHA256SUMS in the same pass)
and its rows go to the parquet writer of their split. A job writes into a hidden work folder
(`<out>/.reghead-work/`) and ends by writing a small JSON record of what it produced; a re-run
skips every shard that has one. When all shards are done, the parts are put in place under the
Hub's names, `<config>/<split>-NNNNN-of-NNNNN.parquet`, each renamed into place whole, and the
work folder is removed once the dataset card (written last, by the caller) is there.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from reghead_release.errors import Problems, ReleaseError, logger
from reghead_release.reader import Record, read_shard_records
from reghead_release.release import Shard, locate_local_release, open_shard
from reghead_release.schema import ATTRIBUTE_COLUMNS, FEATURES, SPLITS, split_of

from .parquet import FILE_BYTES, ROW_GROUP_BYTES, TMP_SUFFIX, Part, SplitParquetWriter, record_image_bytes

WORK_DIR = ".reghead-work"
RECORD_VERSION = 1
# Image bytes one job may hold in row groups being gathered, all splits together: bounds memory
# whatever the shard size (the fullest split writes its row group early when it is reached).
JOB_BUFFER_BYTES = 48 * 2**20
PROGRESS_EVERY_BYTES = 4 * 2**20


@dataclass(frozen=True)
class ShardJob:
    config: str
    shard: Shard
    work_dir: str
    verify: bool = True
    strict: bool = True
    row_group_bytes: int = ROW_GROUP_BYTES
    file_bytes: int = FILE_BYTES

    @property
    def folder(self) -> Path:
        return Path(self.work_dir) / self.config / self.shard.name.removesuffix(".tar")

    @property
    def record_path(self) -> Path:
        return self.folder.with_suffix(".json")


@dataclass
class SplitStats:
    """What the card reports about one split of one shard (or, merged, of a config)."""

    rows: int = 0
    image_bytes: int = 0
    attributes: dict[str, Counter] = field(default_factory=lambda: {name: Counter() for name in ATTRIBUTE_COLUMNS})

    def add_record(self, record: Record, image_bytes: int) -> None:
        self.rows += 1
        self.image_bytes += image_bytes
        parts = record.parts
        for name, value in (("animal", parts.animal), ("style", parts.style), ("feature", parts.feature)):
            self.attributes[name][value if value is not None else "(unparsed)"] += 1
        self.attributes["accessories"].update(parts.accessories)

    def merge(self, other: "SplitStats") -> None:
        self.rows += other.rows
        self.image_bytes += other.image_bytes
        for name, counts in other.attributes.items():
            self.attributes[name].update(counts)

    def to_json(self) -> dict:
        return {"rows": self.rows, "image_bytes": self.image_bytes, "attributes": {k: dict(v) for k, v in self.attributes.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "SplitStats":
        return cls(data["rows"], data["image_bytes"], {k: Counter(v) for k, v in data["attributes"].items()})


@dataclass
class ShardRecord:
    """The JSON record a finished job leaves: its parts, keys and statistics per split."""

    version: int
    config: str
    shard: str
    sha256: str | None
    verified: bool
    parts: dict[str, list[Part]]
    keys: list[str]
    stats: dict[str, SplitStats]
    problems: str

    def to_json(self) -> str:
        data = {
            **{name: getattr(self, name) for name in ("version", "config", "shard", "sha256", "verified", "keys", "problems")},
            "parts": {split: [asdict(part) for part in parts] for split, parts in self.parts.items()},
            "stats": {split: stats.to_json() for split, stats in self.stats.items()},
        }
        return json.dumps(data, sort_keys=True)

    @classmethod
    def load(cls, path: Path) -> "ShardRecord":
        data = json.loads(path.read_text())
        return cls(
            version=data["version"],
            config=data["config"],
            shard=data["shard"],
            sha256=data["sha256"],
            verified=data["verified"],
            parts={split: [Part(**part) for part in parts] for split, parts in data["parts"].items()},
            keys=data["keys"],
            stats={split: SplitStats.from_json(stats) for split, stats in data["stats"].items()},
            problems=data["problems"],
        )


def finished_record(job: ShardJob) -> ShardRecord | None:
    """The record of an earlier run of this job, if it finished on the same shard bytes."""
    try:
        record = ShardRecord.load(job.record_path)
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    if record.version != RECORD_VERSION or record.sha256 != job.shard.sha256 or (job.verify and not record.verified):
        return None
    for parts in record.parts.values():
        for part in parts:
            path = job.folder / part.name
            if not path.is_file() or path.stat().st_size != part.size:
                return None
    return record


def run_job(
    job: ShardJob, progress: Callable[[int], None] | None = None, stop: threading.Event | None = None
) -> ShardRecord:
    """Convert one shard into parquet parts per split, then record that it is done."""
    if job.folder.exists():
        shutil.rmtree(job.folder)  # what an interrupted run left: never trusted
    writers = {
        split: SplitParquetWriter(
            folder=job.folder,
            stem=split,
            features=FEATURES,
            row_group_bytes=job.row_group_bytes,
            file_bytes=job.file_bytes,
        )
        for split in SPLITS
    }
    stats = {split: SplitStats() for split in SPLITS}
    keys = []
    problems = Problems(strict=job.strict)
    unreported = 0
    try:
        with open_shard(job.shard.location, what=job.shard.name) as raw:
            records = read_shard_records(
                raw,
                file=job.shard.name,
                expected_sha256=job.shard.sha256 if job.verify else None,
                problems=problems,
            )
            for shard_record in records:
                if stop is not None and stop.is_set():
                    raise Cancelled(job.shard.name)
                split = split_of(shard_record.sample_key)
                size = record_image_bytes(shard_record)
                writers[split].add(shard_record, size)
                keys.append(shard_record.sample_key)
                stats[split].add_record(shard_record, size)
                if sum(w.buffered_bytes for w in writers.values()) > JOB_BUFFER_BYTES:
                    max(writers.values(), key=lambda w: w.buffered_bytes).flush_row_group()
                unreported += size
                if progress and unreported >= PROGRESS_EVERY_BYTES:
                    progress(unreported)
                    unreported = 0
        parts = {split: writer.close() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    if progress and unreported:
        progress(unreported)
    record = ShardRecord(
        RECORD_VERSION, job.config, job.shard.name, job.shard.sha256, job.verify, parts, keys, stats, problems.summary()
    )
    tmp = job.record_path.with_suffix(TMP_SUFFIX)
    tmp.write_text(record.to_json())
    os.replace(tmp, job.record_path)  # the record is the job's commit point
    return record


# --- running the jobs --------------------------------------------------------------------------


class Cancelled(Exception):
    """Raised inside a job when another job failed or the run was interrupted."""


def run_jobs(jobs: list[ShardJob], *, num_proc: int, progress: Callable[[int], None]) -> list[ShardRecord]:
    """Run the jobs that are not done yet, `num_proc` at a time; records come back in job order.

    Jobs run in threads: hashing, copying into Arrow and writing parquet release the GIL, so
    threads use the cores without a second interpreter's start-up and memory.
    """
    records: dict[int, ShardRecord] = {}
    todo = []
    for position, job in enumerate(jobs):
        record = finished_record(job)
        if record is not None:
            records[position] = record
            progress(sum(stats.image_bytes for stats in record.stats.values()))
        else:
            todo.append(position)
    if todo and num_proc <= 1:
        for position in todo:
            records[position] = run_job(jobs[position], progress)
    elif todo:
        lock = threading.Lock()
        stop = threading.Event()

        def report(amount: int) -> None:
            with lock:
                progress(amount)

        with ThreadPoolExecutor(max_workers=min(num_proc, len(todo)), thread_name_prefix="reghead-job") as pool:
            futures = {pool.submit(run_job, jobs[position], report, stop): position for position in todo}
            try:
                for future in as_completed(futures):
                    records[futures[future]] = future.result()
            except BaseException:
                stop.set()  # the first failure (or Ctrl-C) stops the other jobs within a row
                for future in futures:
                    future.cancel()
                raise
    return [records[position] for position in range(len(jobs))]


# --- publishing --------------------------------------------------------------------------------


@dataclass
class ConfigResult:
    """One config as published: files, rows and bytes per split, and its statistics."""

    config: str
    files: dict[str, list[str]]  # split -> paths relative to the output folder
    stats: dict[str, SplitStats]
    num_bytes: dict[str, int]  # split -> parquet bytes

    def splits(self) -> list[str]:
        return [split for split in SPLITS if self.stats[split].rows]


def check_unique_keys(records: list[ShardRecord]) -> None:
    owner: dict[str, str] = {}
    for record in records:
        for key in record.keys:
            if key in owner:
                raise ReleaseError(
                    f"sample key {key!r} is in shard {owner[key]!r} too",
                    file=record.shard,
                    key=key,
                    hint="The release repeats a sample: download it again",
                )
            owner[key] = record.shard


def _put_in_place(source: Path, target: Path) -> None:
    """Give `target` the content of `source` in one rename, so it is never seen half-written."""
    tmp = target.with_name(target.name + TMP_SUFFIX)
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def publish_config(config: str, jobs: list[ShardJob], records: list[ShardRecord], out_dir: Path) -> ConfigResult:
    """Put a config's parts in place as `<config>/<split>-NNNNN-of-NNNNN.parquet`."""
    check_unique_keys(records)
    folder = out_dir / config
    folder.mkdir(parents=True, exist_ok=True)
    files, num_bytes, stats = {}, {}, {}
    for split in SPLITS:
        sources = [job.folder / part.name for job, record in zip(jobs, records) for part in record.parts[split]]
        names = [f"{split}-{i:05d}-of-{len(sources):05d}.parquet" for i in range(len(sources))]
        for source, name in zip(sources, names):
            _put_in_place(source, folder / name)
        for stale in folder.glob(f"{split}-*.parquet"):
            if stale.name not in names:
                stale.unlink()
        files[split] = [f"{config}/{name}" for name in names]
        num_bytes[split] = sum((folder / name).stat().st_size for name in names)
        stats[split] = SplitStats()
        for record in records:
            stats[split].merge(record.stats[split])
    for record in records:
        if record.problems != "no problems":
            logger.warning("%s %s: %s", config, record.shard, record.problems)
    return ConfigResult(config, files, stats, num_bytes)


def plan_jobs(releases: dict[str, str], out_dir: Path, *, verify: bool, strict: bool, **sizes) -> dict[str, list[ShardJob]]:
    """{config: jobs} for releases given as {config name: local release folder}."""
    work_dir = str(out_dir / WORK_DIR)
    return {
        config: [
            ShardJob(config, shard, work_dir, verify=verify, strict=strict, **sizes)
            for shard in locate_local_release(folder, int(config))
        ]
        for config, folder in releases.items()
    }


@contextmanager
def exclusive_output(out_dir: Path):
    """Hold the output folder for one run at a time (the kernel drops the lock if the run dies)."""
    work = out_dir / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReleaseError(
                "another conversion is writing to this folder", file=str(out_dir), hint="Wait for it, or choose another --output-dir"
            ) from None
        yield


def remove_work_dir(out_dir: Path) -> None:
    shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)
