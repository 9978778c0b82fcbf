"""Convert and upload as you go: each parquet file goes to the Hub as soon as it is complete.

The way `push_to_hub` does it: a complete file is pre-uploaded (its content only, with
`huggingface_hub`'s `preupload_lfs_files`: Xet or classic LFS as the server offers) while its
shard is still converting, and its local copy is removed unless an output folder was asked for.
Nothing shows on the branch until every shard is converted; then one commit per config names the
files under their Hub names, and a last commit brings the card (with its preview and
croissant.json): the branch never shows half a dataset.

What survives a kill is on the disk of the work folder (`<out>/.reghead-work/`):
- `<config>/<shard>.json`: the converter's record of a finished shard (conversion.py), written
  after all its files were handed to the uploader;
- `uploaded.jsonl`: one line per pre-uploaded file (repo, shard hash, file, SHA-256, size), written
  before the local copy is removed; a later line for the same file wins. A file still on disk is
  hashed and sent only when the ledger does not hold that hash, so a file of an attempt that
  failed (a bad shard hash, a kill) is never taken for the new one. A re-run takes a shard whose
  record is there and whose files are each on disk or in the ledger as done, and sends no file
  twice (the Hub also answers "already stored" for a known object);
- `uploading/`: a hard link of the file being sent (no copy), so that the bytes sent and hashed
  stay the same whatever happens to the converter's file meanwhile.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx2  # the HTTP client huggingface_hub 2.x runs on: its network errors
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.lfs import UploadInfo
from huggingface_hub.utils import disable_progress_bars as hub_file_bars_off

from reghead_release.schema import SPLITS

from .card import CARD_FILES, DEFAULT_CONFIG, write_card
from .conversion import (
    WORK_DIR,
    Cancelled,
    ConfigResult,
    Placement,
    ShardJob,
    ShardRecord,
    exclusive_output,
    plan_config,
    plan_jobs,
    publish,
    remove_work_dir,
    run_jobs,
)
from .parquet import FILE_BYTES, Part
from .upload import REPO_TYPE, PlannedFile, PushError, PushResult, _explain, commit_dataset, prepare_repo

LEDGER = "uploaded.jsonl"
# Complete files waiting for the uploader, in full-size files' worth of bytes. When it lags, the
# converting jobs wait for it, so the disk holds the files being written (one per split and job),
# these, and the one being sent. Counted in bytes, not files: the small last files a shard ends
# with do not hold its job (and the next shard's download) back.
QUEUED_FILES = 2
# Without --output-dir, the work folder in the current directory, removed after a successful push.
UPLOAD_WORK_FOLDER = ".reghead-upload"
SAMPLE_BYTES = 512  # what UploadInfo keeps of a file's start (the Hub's pre-upload reads it)


@dataclass(frozen=True)
class Uploaded:
    """One pre-uploaded file, as the ledger records it."""

    repo: str  # <endpoint>/<repo type>/<repo id>: objects are stored per repo
    shard_sha256: str | None
    file: str  # <config>/<shard>/<part>: the part's place in the work folder
    sha256: str
    size: int
    sample: str  # base64 of the first bytes
    mode: str  # "lfs" (only a path at commit time) or "regular" (content sent in the commit)


def ledger_key(job: ShardJob, part: Part) -> str:
    return f"{job.config}/{job.folder.name}/{part.name}"


class Ledger:
    """The append-only record of pre-uploaded files; a torn last line (a kill) is ignored."""

    def __init__(self, path: Path, repo: str):
        self.path = path
        self.repo = repo
        self._entries: dict[str, Uploaded] = {}
        self._lock = threading.Lock()
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = Uploaded(**json.loads(line))
                except (ValueError, TypeError):
                    continue
                if entry.repo == repo:
                    self._entries[entry.file] = entry

    def get(self, job: ShardJob, part: Part) -> Uploaded | None:
        entry = self._entries.get(ledger_key(job, part))
        if entry is None or entry.size != part.size or entry.shard_sha256 != job.shard.sha256:
            return None
        return entry

    def get_file(self, key: str) -> Uploaded | None:
        """The latest record of the file `key` (`ledger_key`) for this repo, whatever its shard."""
        return self._entries.get(key)

    def has(self, job: ShardJob, part: Part) -> bool:
        """Whether the part is on the Hub already and needs no local copy (`finished_record`)."""
        entry = self.get(job, part)
        return entry is not None and entry.mode == "lfs"

    def add(self, entry: Uploaded) -> None:
        with self._lock, open(self.path, "a") as f:
            f.write(json.dumps(asdict(entry), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())  # recorded before the local copy goes
            self._entries[entry.file] = entry


class Uploader:
    """A thread that pre-uploads complete parquet files, in the order they are handed over."""

    def __init__(
        self,
        api: HfApi,
        repo_id: str,
        *,
        revision: str | None,
        create_pr: bool,
        ledger: Ledger,
        keep_files: bool,
        held: Callable[[ShardJob, Part], bool],
        on_uploaded: Callable[[int], None],
        stop: threading.Event,
        queued_bytes: int,
    ):
        self.api, self.repo_id, self.revision, self.create_pr = api, repo_id, revision, create_pr
        self.ledger, self.keep_files, self.held, self.on_uploaded = ledger, keep_files, held, on_uploaded
        self.stop = stop  # set when the run fails or is interrupted: a waiting submit() gives up
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()  # bounded by `queued_bytes`, in submit_part
        self._queued_bytes, self._max_queued_bytes = 0, queued_bytes
        self._room = threading.Condition()
        self._handed: set[str] = set()  # ledger keys handed over in this run, as they were made
        # Files handled in this run and still on disk, by (inode, mtime, size): a file written again
        # (a shard fetched again after a bad hash) is a new file and is hashed again.
        self._done: dict[str, tuple[int, int, int]] = {}
        self.staging = ledger.path.parent / "uploading"
        self.staging.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="reghead-upload", daemon=True)
        self._thread.start()

    def submit_part(self, job: ShardJob, part: Part) -> None:
        """Hand over a complete file; waits while the files waiting fill `queued_bytes` (bounds the disk).

        A file larger than that goes when nothing else waits.
        """
        with self._room:
            while True:
                if self.error is not None:
                    raise self.error
                if self.stop.is_set():
                    raise Cancelled(job.shard.name)
                if not self._queued_bytes or self._queued_bytes + part.size <= self._max_queued_bytes:
                    break
                self._room.wait(timeout=0.2)
            self._queued_bytes += part.size
            self._handed.add(ledger_key(job, part))
        self._queue.put((job, part))

    def submit(self, job: ShardJob, record: ShardRecord) -> None:
        """Hand over a finished shard's files not handed over yet in this run (those of an earlier run)."""
        for split in SPLITS:
            for part in record.parts[split]:
                if ledger_key(job, part) not in self._handed:
                    self.submit_part(job, part)

    def finish(self) -> None:
        """Wait until every handed-over part is uploaded; raise what stopped the uploader."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                with self._room:  # taken: no longer waiting
                    self._queued_bytes -= item[1].size
                    self._room.notify_all()
                self._upload(*item)
        except BaseException as error:  # handed to the converting threads by submit()
            self.error = error

    def _upload(self, job: ShardJob, part: Part) -> None:
        path = job.folder / part.name
        key = ledger_key(job, part)
        # Send a hard link of the file, a name only the uploader uses: a shard fetched again after
        # a bad hash may remove or replace the file meanwhile, and what is sent and recorded must be
        # the same bytes. (A path, not an open file: huggingface_hub's Xet upload takes paths.)
        staged = self.staging / key.replace("/", "--")
        staged.unlink(missing_ok=True)
        try:
            os.link(path, staged)
        except FileNotFoundError:
            return  # uploaded and removed already, or left by an attempt that was given up
        try:
            identity = _identity(staged.stat())
            if self._done.get(key) == identity:
                return  # handed over again by a shard's next attempt, which wrote it before this one was taken
            # The path only decides LFS or not (*.parquet is LFS): the commit gives the Hub name.
            operation = CommitOperationAdd(path_in_repo=f"{job.config}/{job.folder.name}-{part.name}", path_or_fileobj=str(staged))
            sha256 = operation.upload_info.sha256.hex()
            known = self.ledger.get_file(key)
            if known is None or known.sha256 != sha256:
                self._send(job, part, operation)
            removable = not self.keep_files and not self.held(job, part) and operation._upload_mode != "regular"
            if not (removable and remove_if_same(path, identity, aside=staged.with_name(staged.name + ".removing"))):
                self._done[key] = identity
        finally:
            staged.unlink(missing_ok=True)

    def _send(self, job: ShardJob, part: Part, operation: CommitOperationAdd) -> None:
        try:
            self.api.preupload_lfs_files(
                self.repo_id, [operation], repo_type=REPO_TYPE, revision=self.revision, create_pr=self.create_pr
            )
        except RuntimeError as error:  # huggingface_hub wraps a failed LFS transfer in a bare RuntimeError
            cause = error.__cause__ or error
            raise PushError(
                f"uploading {ledger_key(job, part)} to {self.repo_id!r} failed ({type(cause).__name__}: {cause}): "
                "run the same command again; converted shards and uploaded files are kept"
            ) from None
        info = operation.upload_info
        self.ledger.add(
            Uploaded(
                repo=self.ledger.repo,
                shard_sha256=job.shard.sha256,
                file=ledger_key(job, part),
                sha256=info.sha256.hex(),
                size=info.size,
                sample=base64.b64encode(info.sample[:SAMPLE_BYTES]).decode(),
                mode=operation._upload_mode or "lfs",
            )
        )
        self.on_uploaded(part.size)


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def remove_if_same(path: Path, identity: tuple[int, int, int], *, aside: Path) -> bool:
    """Remove `path` if it is still the file with `identity`; True when it was removed.

    A check then an unlink could remove a file written under the name in between (its shard's
    next attempt). So the file is first renamed to `aside`, in one step, and checked there: a
    file that is not ours goes back under its name, unless a newer one took the name meanwhile.
    """
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False  # removed with its folder (conversion.discard_folder)
    if _identity(aside.stat()) == identity:
        aside.unlink()
        return True
    try:
        os.link(aside, path)
    except FileExistsError:
        pass
    aside.unlink()
    return False


def committed_addition(path_in_repo: str, entry: Uploaded, local: Path) -> CommitOperationAdd:
    """The commit operation of a pre-uploaded file, with or without its local copy.

    An LFS file is named in the commit by its SHA-256 and size only; the operation is marked as
    uploaded the way `preupload_lfs_files` marks it, so nothing is sent again.
    """
    if entry.mode != "lfs":
        return CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=str(local))
    operation = CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=b"")
    operation.upload_info = UploadInfo(sha256=bytes.fromhex(entry.sha256), size=entry.size, sample=base64.b64decode(entry.sample))
    operation._upload_mode = "lfs"
    operation._is_uploaded = True
    return operation


@dataclass
class UploadRun:
    """What `convert_and_push` did, for the summary line."""

    results: list[ConfigResult]
    pushed: PushResult
    seconds: float
    files_sent: int


def main_config(configs: list[str]) -> str:
    """The config whose first file the card's preview grid is drawn from."""
    return DEFAULT_CONFIG if DEFAULT_CONFIG in configs else sorted(configs, key=int)[0]


def convert_and_push(
    releases: dict[str, str],
    *,
    out_dir: Path | None,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload RegHead",
    gated: bool = False,
    num_proc: int,
    verify: bool = True,
    strict: bool = True,
    progress_bar,
    **sizes,
) -> UploadRun:
    """Convert the releases ({config: folder or assets URL}) and upload each file as it is done.

    With `out_dir`, the full Hub layout stays there as `--output-dir` leaves it; without, the
    work folder `./.reghead-upload` holds only what is not uploaded yet and goes at the end.
    `sizes` (`row_group_bytes`, `file_bytes`) go to `plan_jobs`.
    """
    keep_files = out_dir is not None
    folder = Path(out_dir) if keep_files else Path(UPLOAD_WORK_FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    api = HfApi(token=token)
    # One bar for the run (the files uploaded in its postfix), not huggingface_hub's one per file.
    try:
        with exclusive_output(folder), hub_file_bars_off():
            run = _convert_and_push_locked(
                releases, folder, api, repo_id, keep_files=keep_files, private=private, revision=revision,
                create_pr=create_pr, commit_message=commit_message, gated=gated, num_proc=num_proc,
                verify=verify, strict=strict, progress_bar=progress_bar, sizes=sizes,
            )  # fmt: skip
        remove_work_dir(folder)
        if not keep_files:
            shutil.rmtree(folder, ignore_errors=True)
    except HfHubHTTPError as error:
        raise _explain(error, repo_id) from None
    except httpx2.HTTPError as error:  # the network to the Hub is gone after huggingface_hub's own retries
        raise PushError(
            f"lost the connection to the Hub while pushing to {repo_id!r} ({type(error).__name__}: {error}): "
            "run the same command again; converted shards and uploaded files are kept"
        ) from None
    run.seconds = time.perf_counter() - started
    return run


def _convert_and_push_locked(
    releases, folder: Path, api: HfApi, repo_id: str, *, keep_files: bool, private, revision, create_pr,
    commit_message, gated, num_proc, verify, strict, progress_bar, sizes,
) -> UploadRun:  # fmt: skip
    url = prepare_repo(api, repo_id, private=private, revision=revision, create_pr=create_pr)
    ledger = Ledger(folder / WORK_DIR / LEDGER, repo=f"{api.endpoint}/{REPO_TYPE}/{repo_id}")
    jobs = plan_jobs(releases, folder, verify=verify, strict=strict, **sizes)
    configs = sorted(jobs, key=int)
    all_jobs = [job for config in configs for job in jobs[config]]
    # The card's preview is drawn from the main config's first file: the first shard's first part
    # of a split stays on the disk until the card is written.
    card_job = jobs[main_config(configs)][0]
    sent = {"files": 0, "bytes": 0}
    bar = progress_bar(total=sum(job.shard.size or 0 for job in all_jobs), configs=configs)

    def on_uploaded(size: int) -> None:
        sent["files"] += 1
        sent["bytes"] += size
        bar.set_postfix_str(f"{sent['files']} files uploaded ({sent['bytes'] / 2**20:,.0f} MiB)", refresh=False)

    stop = threading.Event()
    uploader = Uploader(
        api, repo_id, revision=revision, create_pr=create_pr, ledger=ledger, keep_files=keep_files,
        held=lambda job, part: job == card_job and part.name.endswith("-000.parquet"), on_uploaded=on_uploaded, stop=stop,
        queued_bytes=QUEUED_FILES * max((job.file_bytes for job in all_jobs), default=FILE_BYTES),
    )  # fmt: skip
    try:
        records = run_jobs(
            all_jobs,
            num_proc=num_proc,
            progress=bar.update,
            on_part=uploader.submit_part,
            on_finished=uploader.submit,
            uploaded=ledger.has,
            stop=stop,
        )
        if bar.total:
            bar.update(max(0, bar.total - bar.n))  # image bytes were counted: the tar headers make up the rest
        uploader.finish()
    finally:
        bar.close()
    produced, results, data, placements = {}, [], {}, {}
    position = 0
    for config in configs:
        config_jobs, config_records = jobs[config], records[position : position + len(jobs[config])]
        position += len(config_jobs)
        produced[config] = (config_jobs, config_records)
        result, placements[config] = plan_config(config, config_jobs, config_records)
        results.append(result)
        data[config] = [_planned(name, ledger.get(job, part), job.folder / part.name) for job, part, name in placements[config]]
    if keep_files:
        # The folder is published as the plain converter does; configs it kept from an earlier run
        # are described by its card, so their files go to the Hub too, from the folder.
        results = publish(
            folder,
            produced,
            write_card=lambda described: write_card(described, folder, repo_id=repo_id, revision=revision, gated=gated),
            card_files=CARD_FILES,
        )
        for result in results:
            if result.config not in produced:
                data[result.config] = [PlannedFile.in_folder(name, folder) for name in result.all_files()]
    else:
        main = next(result for result in results if result.config == main_config(configs))
        _write_card_linking_preview(
            results, main, placements[main.config], folder, repo_id=repo_id, revision=revision, gated=gated
        )
    card = [PlannedFile.in_folder(path, folder) for path in CARD_FILES]
    pushed = commit_dataset(api, repo_id, revision=revision, create_pr=create_pr, message=commit_message, data=data, card=card)
    pushed.repo_url = url
    return UploadRun(results, pushed, 0.0, sent["files"])


def _planned(path_in_repo: str, entry: Uploaded | None, local: Path) -> PlannedFile:
    if entry is None:  # the uploader records every part before the run gets here
        raise AssertionError(f"{local} was never uploaded")
    return PlannedFile(path_in_repo, lambda: committed_addition(path_in_repo, entry, local), sha256=entry.sha256)


def _write_card_linking_preview(
    results: list[ConfigResult], main: ConfigResult, placements: list[Placement], folder: Path, *,
    repo_id: str, revision: str | None, gated: bool,
) -> None:  # fmt: skip
    """Write the card's files (`write_card`) with no output folder, the preview's source file linked in place for it."""
    first_split = f"{main.config}/{main.splits()[0]}-"
    job, part, name = next(placement for placement in placements if placement[2].startswith(first_split))
    placed = folder / name
    placed.parent.mkdir(parents=True, exist_ok=True)
    placed.unlink(missing_ok=True)
    os.link(job.folder / part.name, placed)
    try:
        write_card(results, folder, repo_id=repo_id, revision=revision, gated=gated)
    finally:
        placed.unlink()
