"""Release shards to the Hub's parquet layout: one job per shard, resumable, published all at once.

Each shard is read once by the project's reader (verified against SHA256SUMS in the same pass)
and its rows go to the parquet writer of their split. A job writes into a hidden work folder
(`<out>/.reghead-work/`) and ends by writing a small JSON record of what it produced, with the
settings that shaped it (strict or lenient, verified or not, the reader's version, the file and
row group sizes); a re-run skips every shard that has a record made with the same settings.

Publishing is all or nothing for a reader of the folder: at every instant, `load_dataset(out,
config)` reads either the dataset that was there before or the new one. The design:

- The card names its data files exactly (no globs), so files beside it that it does not name are
  never read.
- A published file is named `<config>/<split>-NNNNN-of-NNNNN-<tag>.parquet`, where the tag is a
  digest of what made it (the shards' hashes, the settings, the reader's version, the parts). A
  name the old card uses therefore holds the same bytes the new run would put there: new files
  are written beside the old ones without ever changing a file the old card names.
- The converter keeps its own record, `<out>/.reghead-published.json`: per config, the files,
  statistics, sizes and SHA-256s it published (what the card and croissant.json render), and
  every file it made in the folder. It removes and publishes only files in that record: a user's
  own files are never touched, even under a name like `512/train-extra-analysis.parquet`.
- The steps (`publish`): (1) add the files about to be made to the record, so a kill leaves
  nothing unaccounted for; (2) put each new parquet file in place, each in one rename; (3) write
  the card (the preview image and `croissant.json`, then `README.md`, each in one rename): this
  switches readers from the old dataset to the new one; (4) record the published configs; (5)
  remove the files of the record that nothing names any more, then record that. A kill before
  (3) leaves the old card and its files; after it, the new card and its files; the next run
  finishes the cleanup.
- Configs of an earlier run that this run does not produce are kept and described from the
  record (the card gets one `ConfigResult` per config in the folder); their files are removed
  only when they are gone from the record or missing. A folder converted by a version without a
  record has its glob card first rewritten to name its files exactly, and those files (the Hub
  names the card matched) are then treated as made by the converter.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
from functools import partial
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import datasets
import pyarrow

from reghead_release import reader as _reader, schema as _schema, tar as _tar
from reghead_release.errors import ChecksumMismatch, Problems, ReleaseError, logger
from reghead_release.http import is_url
from reghead_release.reader import Record, read_shard_records
from reghead_release.release import Shard, open_shard, read_release
from reghead_release.schema import ATTRIBUTE_COLUMNS, FEATURES, SPLITS, Vocabulary, split_of

from . import parquet as _parquet
from .parquet import FILE_BYTES, ROW_GROUP_BYTES, TMP_SUFFIX, Part, SplitParquetWriter, record_image_bytes

WORK_DIR = ".reghead-work"
PUBLISHED_RECORD = ".reghead-published.json"  # the converter's record of what it made in <out>
CARD_PATH = "README.md"
RECORD_VERSION = 3  # 3: each part's SHA-256
PUBLISHED_VERSION = 1
# The names the converter gives published files, with or without the tag of older versions.
PUBLISHED_NAME = re.compile(r"^(?P<config>\d+)/(?P<split>[a-z]+)-\d{5}-of-\d{5}(-[0-9a-f]{8})?\.parquet$")
# Image bytes one job may hold in row groups being gathered, all splits together: bounds memory
# whatever the shard size (the fullest split writes its row group early when it is reached).
JOB_BUFFER_BYTES = 48 * 2**20
PROGRESS_EVERY_BYTES = 4 * 2**20
# Downloads of a remote shard, in all, before a SHA-256 mismatch stops the run.
HASH_ATTEMPTS = 3
DISCARDED_SUFFIX = ".discarded"  # a shard's folder on its way out (conversion.discard_folder)
UNPARSED = "(unparsed)"  # what the statistics count for an attribute the identity name did not give


def reader_version() -> str:
    """A digest of the code and libraries that turn a shard into parquet bytes.

    A finished shard is reused only by a run of the same version: any change to the reader, the
    tar layer, the schema, the parquet writer or this module, or to pyarrow or datasets, redoes it.
    """
    digest = hashlib.sha256()
    for module in (_tar, _reader, _schema, _parquet):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    digest.update(f"pyarrow {pyarrow.__version__} datasets {datasets.__version__}".encode())
    return digest.hexdigest()[:16]


READER_VERSION = reader_version()


@dataclass(frozen=True)
class ShardJob:
    config: str
    shard: Shard
    work_dir: str
    verify: bool = True
    strict: bool = True
    row_group_bytes: int = ROW_GROUP_BYTES
    file_bytes: int = FILE_BYTES
    vocabulary: Vocabulary | None = field(default=None, compare=False, repr=False)  # the release's, for identity names

    @property
    def folder(self) -> Path:
        return Path(self.work_dir) / self.config / self.shard.name.removesuffix(".tar")

    @property
    def record_path(self) -> Path:
        return self.folder.with_suffix(".json")

    @property
    def layout(self) -> list[int]:
        return [self.row_group_bytes, self.file_bytes]


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
            self.attributes[name][value if value is not None else UNPARSED] += 1
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
    """The JSON record a finished job leaves: its parts, keys and statistics per split, and the
    settings that made them (`strict`, `verified`, the `reader` version, the `layout` sizes)."""

    version: int
    config: str
    shard: str
    sha256: str | None
    verified: bool
    parts: dict[str, list[Part]]
    keys: list[str]
    stats: dict[str, SplitStats]
    problems: str
    strict: bool = True
    reader: str = READER_VERSION
    layout: list[int] = field(default_factory=lambda: [ROW_GROUP_BYTES, FILE_BYTES])

    SETTINGS = ("version", "config", "shard", "sha256", "verified", "keys", "problems", "strict", "reader", "layout")

    def to_json(self) -> str:
        data = {
            **{name: getattr(self, name) for name in self.SETTINGS},
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
            strict=data["strict"],
            reader=data["reader"],
            layout=data["layout"],
        )


def finished_record(job: ShardJob, uploaded: Callable[[ShardJob, Part], bool] | None = None) -> ShardRecord | None:
    """The record of an earlier run of this job, if it finished on the same shard bytes with the same settings.

    Same strictness (a lenient run's output lacks the samples a strict run must stop on), same
    reader version and sizes; a verified record serves a run with or without verification (the
    bytes are the same), an unverified one only a run without. A part counts as there when its
    file is, or when `uploaded(job, part)` says it is already on the Hub (an upload-as-you-go run
    removes the local copy).
    """
    try:
        record = ShardRecord.load(job.record_path)
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    same_settings = (
        record.version == RECORD_VERSION
        and record.sha256 == job.shard.sha256
        and record.strict == job.strict
        and record.reader == READER_VERSION
        and record.layout == job.layout
        and (record.verified or not job.verify)
    )
    if not same_settings:
        return None
    for parts in record.parts.values():
        for part in parts:
            path = job.folder / part.name
            on_disk = path.is_file() and path.stat().st_size == part.size
            if not on_disk and not (uploaded is not None and uploaded(job, part)):
                return None
    return record


def run_job(
    job: ShardJob,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    on_part: Callable[[Part], None] | None = None,
) -> ShardRecord:
    """Convert one shard into parquet parts per split, then record that it is done.

    `on_part` is told of each part as soon as it is complete, before the job ends.
    """
    discard_folder(job.folder)  # what an interrupted run or a failed attempt left: never trusted
    writers = {
        split: SplitParquetWriter(
            folder=job.folder,
            stem=split,
            features=FEATURES,
            row_group_bytes=job.row_group_bytes,
            file_bytes=job.file_bytes,
            on_part=on_part,
        )
        for split in SPLITS
    }
    stats = {split: SplitStats() for split in SPLITS}
    keys = []
    problems = Problems(strict=job.strict)
    unreported = 0
    try:
        with open_shard(job.shard.location, what=job.shard.name) as raw:
            samples = read_shard_records(
                raw,
                file=job.shard.name,
                expected_sha256=job.shard.sha256 if job.verify else None,
                problems=problems,
                resolution=int(job.config),
                vocabulary=job.vocabulary,
            )
            for sample in samples:
                if stop is not None and stop.is_set():
                    raise Cancelled(job.shard.name)
                split = split_of(sample.sample_key)
                size = record_image_bytes(sample)
                writers[split].add(sample, size)
                keys.append(sample.sample_key)
                stats[split].add_record(sample, size)
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
    problems.log_summary(f"{job.config} {job.shard.name}")  # once per shard, at its end
    record = ShardRecord(
        RECORD_VERSION, job.config, job.shard.name, job.shard.sha256, job.verify, parts, keys, stats, problems.summary(),
        strict=job.strict, reader=READER_VERSION, layout=job.layout,
    )
    job.record_path.parent.mkdir(parents=True, exist_ok=True)  # a shard whose samples were all skipped made no part
    tmp = job.record_path.with_suffix(TMP_SUFFIX)
    tmp.write_text(record.to_json())
    os.replace(tmp, job.record_path)  # the record is the job's commit point
    return record


def discard_folder(folder: Path) -> None:
    """Remove `folder`, moving it aside first in one rename.

    An uploader may be removing the parts it has sent from the same folder, by name. After the
    rename no name it knows leads to the old files: the two never remove the same file, and a
    file the new attempt writes under an old name is a new file.
    """
    aside = folder.with_name(folder.name + DISCARDED_SUFFIX)
    if aside.exists():
        shutil.rmtree(aside)  # a run stopped while removing it
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside)


# --- running the jobs --------------------------------------------------------------------------


class Cancelled(Exception):
    """Raised inside a job when another job failed or the run was interrupted."""


def run_job_refetching(
    job: ShardJob,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    on_part: Callable[[Part], None] | None = None,
) -> ShardRecord:
    """`run_job`; a shard read over HTTP whose SHA-256 fails is fetched again from scratch, a few times.

    A bad hash from a server is most often a transfer gone wrong; a local file would only fail again.
    """
    attempts = HASH_ATTEMPTS if is_url(job.shard.location) else 1
    for attempt in range(1, attempts + 1):
        try:
            return run_job(job, progress, stop, on_part)
        except ChecksumMismatch as error:
            if attempt == attempts:
                if attempts == 1:
                    raise
                raise ChecksumMismatch(
                    file=job.shard.name,
                    expected=error.expected,
                    actual=error.actual,
                    hint=f"Downloaded {attempts} times from {job.shard.location}, never with the listed hash: "
                    "the release asset or its SHA256SUMS is damaged on the server",
                ) from None
            logger.warning("%s: %s; downloading it again (%d/%d)", job.shard.name, error, attempt, attempts)
    raise AssertionError("unreachable")


def run_jobs(
    jobs: list[ShardJob],
    *,
    num_proc: int,
    progress: Callable[[int], None],
    on_finished: Callable[[ShardJob, ShardRecord], None] | None = None,
    on_part: Callable[[ShardJob, Part], None] | None = None,
    uploaded: Callable[[ShardJob, Part], bool] | None = None,
    stop: threading.Event | None = None,
) -> list[ShardRecord]:
    """Run the jobs that are not done yet, `num_proc` at a time; records come back in job order.

    With `num_proc` above 1, each job runs in a process of its own (convert/workers.py): the jobs'
    Python work holds the GIL, so jobs in threads of one process would take turns on one core.
    The parent keeps one thread per running job. `on_finished` is told of every finished job (also
    those an earlier run finished) in that thread: when it blocks, that job's slot waits, which is
    how an uploader that lags holds the conversion back. `on_part` is told of each part as soon as
    it is complete, in the same thread, and the job waits for it. `uploaded` tells
    `finished_record` which parts are on the Hub already. `stop` is set when the run fails or is
    interrupted; the jobs end within a sample, and an `on_finished` that waits watches it too.
    """
    from . import workers as _workers  # it builds on this module

    records: dict[int, ShardRecord] = {}
    todo = []
    for position, job in enumerate(jobs):
        record = finished_record(job, uploaded)
        if record is not None:
            records[position] = record
            progress(sum(stats.image_bytes for stats in record.stats.values()))
            if on_finished is not None:
                on_finished(job, record)
        else:
            todo.append(position)

    stop = stop if stop is not None else threading.Event()

    def run(job: ShardJob, report: Callable[[int], None]) -> ShardRecord:
        run_one = run_job_refetching if num_proc <= 1 else _workers.run_in_process  # one job needs no second process
        record = run_one(job, report, stop, on_part=partial(on_part, job) if on_part is not None else None)
        if on_finished is not None:
            on_finished(job, record)
        return record

    if todo and num_proc <= 1:
        for position in todo:
            records[position] = run(jobs[position], progress)
    elif todo:
        lock = threading.Lock()

        def report(amount: int) -> None:
            with lock:
                progress(amount)

        with ThreadPoolExecutor(max_workers=min(num_proc, len(todo)), thread_name_prefix="reghead-job") as pool:
            futures = {pool.submit(run, jobs[position], report): position for position in todo}
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
    """One config as published: files, rows and bytes per split, its statistics, each file's SHA-256."""

    config: str
    files: dict[str, list[str]]  # split -> paths relative to the output folder
    stats: dict[str, SplitStats]
    num_bytes: dict[str, int]  # split -> parquet bytes
    sha256: dict[str, str] = field(default_factory=dict)  # path -> SHA-256 (hex) of its content

    def splits(self) -> list[str]:
        return [split for split in SPLITS if self.stats[split].rows]

    def all_files(self) -> list[str]:
        return [name for split in SPLITS for name in self.files.get(split, [])]

    def to_json(self) -> dict:
        return {
            "config": self.config,
            "files": self.files,
            "stats": {split: stats.to_json() for split, stats in self.stats.items()},
            "num_bytes": self.num_bytes,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, data: dict) -> "ConfigResult":
        stats = {split: SplitStats.from_json(value) for split, value in data["stats"].items()}
        sha256 = data.get("sha256", {})  # a record of an older version has none: see `with_hashes`
        return cls(data["config"], data["files"], stats, data["num_bytes"], sha256)

    def with_hashes(self, out_dir: Path) -> "ConfigResult":
        """This config with the SHA-256 of each file its record lacks, read from `out_dir`."""
        sha256 = dict(self.sha256)
        for name in self.all_files():
            if name not in sha256:
                with open(out_dir / name, "rb") as f:
                    sha256[name] = hashlib.file_digest(f, "sha256").hexdigest()
        return replace(self, sha256=sha256)


@dataclass
class Published:
    """The converter's own record in the output folder (`.reghead-published.json`).

    `configs`: what the card describes, per config. `made`: every file the converter made in the
    folder and has not removed yet (data files, the card, its images), relative paths. Only these
    files are ever removed or pushed.
    """

    configs: dict[str, ConfigResult] = field(default_factory=dict)
    made: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, out_dir: Path) -> "Published | None":
        """The record, or None when the folder has none (never converted, or by an older version)."""
        try:
            data = json.loads((out_dir / PUBLISHED_RECORD).read_text())
            if data["version"] != PUBLISHED_VERSION:
                raise ValueError(data["version"])
            configs = {item["config"]: ConfigResult.from_json(item) for item in data["configs"]}
            return cls(configs, set(data["made"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as error:
            raise ReleaseError(
                f"the converter's record of this folder is damaged ({error!r})",
                file=str(out_dir / PUBLISHED_RECORD),
                hint="Convert into a new output folder, or remove the record and the converted files",
            ) from None

    def save(self, out_dir: Path) -> None:
        data = {
            "version": PUBLISHED_VERSION,
            "configs": [self.configs[config].to_json() for config in sorted(self.configs, key=int)],
            "made": sorted(self.made),
        }
        path = out_dir / PUBLISHED_RECORD
        tmp = path.with_name(path.name + TMP_SUFFIX)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)


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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + TMP_SUFFIX)
    tmp.unlink(missing_ok=True)
    if target.exists() and os.path.samefile(source, target):
        return  # put in place by an interrupted run (and a rename between two links does nothing)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _split_tag(config: str, split: str, records: list[ShardRecord]) -> str:
    """8 hex digits naming what made a split's files: the same tag means the same bytes."""
    made_of = [
        [record.shard, record.sha256, record.strict, record.reader, record.layout, [asdict(part) for part in record.parts[split]]]
        for record in records
    ]
    return hashlib.sha256(json.dumps([config, split, made_of]).encode()).hexdigest()[:8]


# Where a finished part goes: (its job, the part, its name in the output folder or the Hub repo).
Placement = tuple["ShardJob", Part, str]


def plan_config(config: str, jobs: list[ShardJob], records: list[ShardRecord]) -> tuple[ConfigResult, list[Placement]]:
    """A config as it will be published, and where each of its parts goes; nothing is written.

    The names are known once every shard is converted; the parts themselves need not be on the
    disk any more (an upload-as-you-go run sent them already).
    """
    check_unique_keys(records)
    files, num_bytes, stats, sha256, placements = {}, {}, {}, {}, []
    for split in SPLITS:
        parts = [(job, part) for job, record in zip(jobs, records) for part in record.parts[split]]
        tag = _split_tag(config, split, records)
        names = [f"{config}/{split}-{i:05d}-of-{len(parts):05d}-{tag}.parquet" for i in range(len(parts))]
        placements += [(job, part, name) for (job, part), name in zip(parts, names)]
        files[split] = names
        sha256.update((name, part.sha256) for (_, part), name in zip(parts, names))
        num_bytes[split] = sum(part.size for _, part in parts)
        stats[split] = SplitStats()
        for record in records:
            stats[split].merge(record.stats[split])
    if not any(stats[split].rows for split in SPLITS):
        problems = "; ".join(f"{record.shard}: {record.problems}" for record in records)
        raise ReleaseError(
            f"no sample of the {config} release could be read ({problems})",
            file=jobs[0].shard.name if jobs else config,
            hint="Every sample was skipped: download the release again",
        )
    return ConfigResult(config, files, stats, num_bytes, sha256), placements


# Called with the name of each step of `publish` before it is done (tests stop publishing there).
PUBLISH_HOOK: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if PUBLISH_HOOK is not None:
        PUBLISH_HOOK(name)


def publish(
    out_dir: Path,
    produced: dict[str, tuple[list[ShardJob], list[ShardRecord]]],
    *,
    write_card: Callable[[list[ConfigResult]], None],
    card_files: tuple[str, ...] = (CARD_PATH,),
) -> list[ConfigResult]:
    """Publish the configs `produced` ({config: (jobs, records)}) beside what the folder holds.

    Returns every config the card now describes: those produced, and those of earlier runs that
    are still complete in the folder. See the module docstring for the steps and why a reader of
    the folder sees either the old dataset or the new one at every instant.
    """
    before = Published.load(out_dir)
    if before is None:
        before = _adopt_older_conversion(out_dir)
    new, placements = {}, []
    for config, (jobs, records) in produced.items():
        new[config], moves = plan_config(config, jobs, records)
        placements += moves
    kept = {
        config: result.with_hashes(out_dir)  # a record of an older version has no SHA-256s
        for config, result in before.configs.items()
        if config not in new and all((out_dir / name).is_file() for name in result.all_files())
    }
    configs = {**kept, **new}
    results = [configs[config] for config in sorted(configs, key=int)]
    wanted = {name for result in results for name in result.all_files()} | set(card_files)

    _step("record the files to make")
    Published(before.configs, before.made | wanted).save(out_dir)
    for job, part, name in placements:
        _step(f"place {name}")
        _put_in_place(job.folder / part.name, out_dir / name)
    _step("write the card")
    write_card(results)
    _step("record the published configs")
    Published(configs, before.made | wanted).save(out_dir)
    for name in sorted(before.made - wanted):
        _step(f"remove {name}")
        (out_dir / name).unlink(missing_ok=True)
        (out_dir / (name + TMP_SUFFIX)).unlink(missing_ok=True)  # what a kill mid-rename left
    _step("record the files left")
    Published(configs, wanted).save(out_dir)
    return results


def _adopt_older_conversion(out_dir: Path) -> Published:
    """The record of a folder converted by a version that kept none: its card, pinned to its files.

    Such a card names its data files by globs (`512/train-*`), which would also match the new
    files put beside them; it is rewritten first (in one rename) to name the files it matches
    today. Those files, under the converter's names, are taken as made by the converter.
    """
    card_path = out_dir / CARD_PATH
    if not card_path.is_file():
        return Published()
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(card_path)
    made = {CARD_PATH}
    for config in card.data.get("configs") or []:
        for entry in config.get("data_files") or []:
            patterns = entry["path"] if isinstance(entry.get("path"), list) else [entry.get("path")]
            matched = sorted(
                name
                for pattern in patterns
                if isinstance(pattern, str)
                for name in (path.relative_to(out_dir).as_posix() for path in out_dir.glob(pattern))
                if PUBLISHED_NAME.match(name)
            )
            entry["path"] = matched
            made.update(matched)
    _step("pin the older card")
    tmp = card_path.with_name(card_path.name + TMP_SUFFIX)
    card.save(tmp)
    os.replace(tmp, card_path)
    return Published({}, made)


def plan_jobs(releases: dict[str, str], out_dir: Path, *, verify: bool, strict: bool, **sizes) -> dict[str, list[ShardJob]]:
    """{config: jobs} for releases given as {config name: local release folder or assets URL `<base>/<tag>`}."""
    work_dir = str(out_dir / WORK_DIR)
    jobs = {}
    for config, source in releases.items():
        index, shards = read_release(source, int(config))
        vocabulary = index.vocabulary()
        jobs[config] = [ShardJob(config, shard, work_dir, verify=verify, strict=strict, vocabulary=vocabulary, **sizes) for shard in shards]
    return jobs


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
    """Remove the work folder: only the converter's files are in it."""
    shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)
