"""Pushing a converted folder to a Hub dataset repo with `huggingface_hub`, sending only what changed.

Files are compared with the repo by content (LFS SHA-256, or the git blob id of small files), so a
re-run after a partial upload sends only what is missing or different. `commit_dataset` makes the
commits of both ways to push (this folder push, and `hub_upload`'s upload as you go): parquet
files in one commit per config, the card with its preview and croissant.json last; with
`create_pr` everything is one commit. Each commit names its parent: if the branch moved
meanwhile, the tree is read again and the commit retried.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError
from datasets.utils import tqdm as hf_tqdm
from huggingface_hub.utils import build_hf_headers, get_session

from reghead_release.errors import logger

from .card import CARD_FILES
from .conversion import PUBLISHED_NAME, Published

REPO_TYPE = "dataset"
MAX_COMMIT_ATTEMPTS = 3


class PushError(Exception):
    """The Hub refused the push; the message says why and what to do, and never holds the token."""


@dataclass
class PushResult:
    repo_url: str
    commits: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    pull_request: str | None = None


def local_files(folder: Path) -> dict[str, Path]:
    """{path in repo: local path}: the dataset's files only, never anything else in the folder.

    They are the files the converter's record says it made (the configs' parquet files, the card,
    its images and croissant.json); a folder without a record (converted by an older version)
    sends those of `CARD_FILES` it has and the parquet files under the converter's names. A
    `.env` or `notes.txt` beside them is never sent.
    """
    published = Published.load(folder)
    if published is not None:
        names = published.made
    else:
        names = set(CARD_FILES) | {
            path.relative_to(folder).as_posix() for path in folder.glob("*/*.parquet")
            if PUBLISHED_NAME.match(path.relative_to(folder).as_posix())
        }
    return {name: folder / name for name in sorted(names) if (folder / name).is_file()}


def _git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _same_content(entry, path: Path) -> bool:
    if entry.size != path.stat().st_size:
        return False
    if entry.lfs is not None:
        with open(path, "rb") as f:
            return entry.lfs.sha256 == hashlib.file_digest(f, "sha256").hexdigest()
    return entry.blob_id == _git_blob_id(path)


def use_xet_only_if_offered(api: HfApi, repo_id: str, revision: str | None) -> bool:
    """Switch huggingface_hub to classic LFS when the server hands out no Xet write token.

    With `hf_xet` installed, huggingface_hub uploads through Xet storage unconditionally; a
    Hub-compatible server that speaks only classic LFS (a mirror, a test server) needs it off.
    Returns whether Xet stays in use.
    """
    if constants.HF_HUB_DISABLE_XET:
        return False
    url = f"{api.endpoint}/api/{REPO_TYPE}s/{repo_id}/xet-write-token/{revision or 'main'}"
    response = get_session().get(url, headers=build_hf_headers(token=api.token))
    if response.status_code == 200:
        return True
    logger.info("%s offers no Xet storage (HTTP %s): uploading with classic LFS", api.endpoint, response.status_code)
    constants.HF_HUB_DISABLE_XET = True
    return False


def _explain(error: HfHubHTTPError, repo_id: str) -> PushError:
    status = error.response.status_code if error.response is not None else None
    if status in (401, 403):
        return PushError(
            f"the Hub refused access to dataset repo {repo_id!r} (HTTP {status}): pass a token with write "
            "access (--token, the HF_TOKEN variable, or `hf auth login`)"
        )
    server_message = getattr(error, "server_message", None) or ""
    return PushError(f"the Hub refused the push to {repo_id!r} (HTTP {status}): {server_message}".rstrip(": "))


def prepare_repo(api: HfApi, repo_id: str, *, private: bool, revision: str | None, create_pr: bool) -> str:
    """Create the dataset repo (and the branch) if missing, choose Xet or classic LFS; the repo's URL."""
    url = api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
    if revision and not create_pr:
        api.create_branch(repo_id, repo_type=REPO_TYPE, branch=revision, exist_ok=True)
    use_xet_only_if_offered(api, repo_id, revision)
    return str(url)


def push_folder(
    folder: Path,
    *,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload RegHead",
    endpoint: str | None = None,
) -> PushResult:
    """Create the repo if needed and upload the converted `folder`, only what differs from the repo."""
    api = HfApi(token=token, endpoint=endpoint)
    try:
        url = prepare_repo(api, repo_id, private=private, revision=revision, create_pr=create_pr)
        data: dict[str, list[PlannedFile]] = {}
        card: list[PlannedFile] = []
        for path in local_files(folder):
            planned = PlannedFile.in_folder(path, folder)
            top = path.split("/")[0]
            (data.setdefault(top, []) if top.isdigit() else card).append(planned)
        result = commit_dataset(api, repo_id, revision=revision, create_pr=create_pr, message=commit_message, data=data, card=card)
    except HfHubHTTPError as error:
        raise _explain(error, repo_id) from None
    result.repo_url = url
    return result


def stale_files(remote, ours) -> list[str]:
    """Files on the Hub under the converter's names that the dataset no longer has (never one added by hand)."""
    return sorted(path for path in remote if (PUBLISHED_NAME.match(path) or path in CARD_FILES) and path not in ours)


@dataclass
class PlannedFile:
    """A file of the dataset as it will be committed: where it goes, how to tell the Hub has it, how to add it.

    Its content is known by its SHA-256 (what an LFS pointer on the Hub holds: a pre-uploaded file
    whose local copy is gone) or by a local copy, compared by content with the Hub's (`_same_content`).
    """

    path_in_repo: str
    make: Callable[[], CommitOperationAdd]
    sha256: str | None = None
    local: Path | None = None

    @classmethod
    def in_folder(cls, path_in_repo: str, folder: Path) -> "PlannedFile":
        """A file committed from `folder` as it is there."""
        local = folder / path_in_repo
        return cls(path_in_repo, partial(CommitOperationAdd, path_in_repo=path_in_repo, path_or_fileobj=str(local)), local=local)

    def on_the_hub(self, entry) -> bool:
        if entry is None:
            return False
        if self.local is not None:
            return _same_content(entry, self.local)
        return self.sha256 is not None and getattr(entry.lfs, "sha256", None) == self.sha256


def commit_dataset(
    api: HfApi,
    repo_id: str,
    *,
    revision: str | None,
    create_pr: bool,
    message: str,
    data: dict[str, list[PlannedFile]],
    card: list[PlannedFile],
) -> PushResult:
    """One commit per config (data), then the card and the removal of stale files; or one PR.

    Data first, the card last: the card never points at missing files. Files the branch already
    holds with the same content are left out, so a re-run after a partial push commits only the
    rest. Each commit names its parent: if the branch moved meanwhile, its tree is read again.
    """
    result = PushResult(repo_url=f"{api.endpoint}/datasets/{repo_id}")
    for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
        try:
            info = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision)
            remote = {
                entry.path: entry
                for entry in api.list_repo_tree(repo_id, repo_type=REPO_TYPE, revision=revision, recursive=True, expand=False)
                if hasattr(entry, "blob_id")
            }
            everything = [planned for files in [*data.values(), card] for planned in files]
            missing = {
                planned.path_in_repo
                for planned in hf_tqdm(everything, desc="Comparing with the Hub", unit=" files")
                if not planned.on_the_hub(remote.get(planned.path_in_repo))
            }
            # Only files under the converter's names: a file someone added to the repo by hand stays.
            stale = stale_files(remote, {planned.path_in_repo for planned in everything})
            batches = [
                ([planned for planned in files if planned.path_in_repo in missing], [])
                for _, files in sorted(data.items(), key=lambda item: int(item[0]))
            ]
            batches.append(([planned for planned in card if planned.path_in_repo in missing], stale))
            batches = [(adds, deletes) for adds, deletes in batches if adds or deletes]
            if create_pr and batches:
                batches = [([f for adds, _ in batches for f in adds], [p for _, dels in batches for p in dels])]
            result.unchanged = len(everything) - len(missing)
            parent = info.sha
            for adds, deletes in batches:
                operations = [planned.make() for planned in adds] + [CommitOperationDelete(path_in_repo=p) for p in deletes]
                commit = api.create_commit(
                    repo_id,
                    operations,
                    commit_message=message,
                    repo_type=REPO_TYPE,
                    revision=revision,
                    create_pr=create_pr,
                    parent_commit=None if create_pr else parent,
                )
                parent = commit.oid
                result.commits.append(commit.oid)
                result.uploaded += [planned.path_in_repo for planned in adds]
                result.deleted += deletes
                if commit.pr_url:
                    result.pull_request = commit.pr_url
            return result
        except HfHubHTTPError as error:
            moved = error.response is not None and error.response.status_code == 412
            if not moved or attempt == MAX_COMMIT_ATTEMPTS:
                raise
            logger.warning("the branch of %s moved during the push; reading its tree again (%d/%d)", repo_id, attempt, MAX_COMMIT_ATTEMPTS)
    raise AssertionError("unreachable")
