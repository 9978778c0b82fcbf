"""From the GitHub release to the Hub in one command: `convert/push.py --from-release`.

The release is served by a loopback GitHub-like server (302 to signed URLs that expire, Range,
dropped connections, a throttled rate) and pushed to the loopback Hub server.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import datasets
import pytest
from huggingface_hub import HfApi

from conftest import ALICE_TOKEN, publish
from convert.conversion import DISCARDED_SUFFIX, HASH_ATTEMPTS, RECORD_VERSION, ShardJob, ShardRecord, discard_folder
from convert.hub_upload import LEDGER, UPLOAD_WORK_FOLDER, Ledger, Uploader, _identity, remove_if_same
from convert.parquet import Part
from convert.push import main
from github_server import GitHubReleaseServer
from http_server import Fault
from reghead import EXPRESSIONS, FEATURES
from reghead_release import http
from reghead_release.release import Shard
from reghead_release.schema import release_tag

REPO_ID = "alice/reghead"
ROOT = Path(__file__).resolve().parent.parent
RAW_IMAGES = datasets.Features({**FEATURES, **{e: datasets.Image(decode=False) for e in EXPRESSIONS}})
# Slow enough that a run of the 512 sample (3 shards, ~7 MB) takes seconds: room to kill it mid-way.
THROTTLED_RATE = 2_000_000


@pytest.fixture
def site(tmp_path, releases):
    """Both sample releases laid out as GitHub serves them: `<site>/<tag>/<asset>`."""
    site = tmp_path / "site"
    for resolution, release in releases.items():
        publish(release.root, site, resolution)
    return site


@pytest.fixture
def github(site):
    with GitHubReleaseServer(site) as server:
        yield server


def parquet_files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def reference_dir(releases, tmp_path_factory):
    """The 512 sample converted from its local folder: what the Hub must end up holding, byte for byte."""
    out = tmp_path_factory.mktemp("reference") / "reghead"
    assert main([f"--release=512={releases[512].root}", f"--output-dir={out}", "--quiet"]) == 0
    return out


@pytest.fixture
def reference(reference_dir):
    return parquet_files(reference_dir)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_SECONDS", 0.05)


def hub_parquet(hub) -> dict[str, bytes]:
    files = HfApi(token=ALICE_TOKEN).list_repo_files(REPO_ID, repo_type="dataset")
    return {path: hub.read(REPO_ID, path) for path in sorted(files) if path.endswith(".parquet")}


def shard_reads(server, name: str) -> int:
    return sum(1 for _, path, _ in server.requests if path.endswith(name))


def test_full_run_to_the_hub_reads_back_exactly(hub, github, reference, reference_dir, releases, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--from-release", "512", f"--base-url={github.url}", f"--repo-id={REPO_ID}", f"--token={ALICE_TOKEN}", "--quiet"]
    assert main(args) == 0
    assert hub_parquet(hub) == reference
    assert {"README.md", "images/preview.png", "croissant.json"} <= set(HfApi(token=ALICE_TOKEN).list_repo_files(REPO_ID, repo_type="dataset"))
    # croissant.json names every uploaded file by its Hub URL and SHA-256 (the local copies are gone)
    files = [entry for entry in json.loads(hub.read(REPO_ID, "croissant.json"))["distribution"] if entry["@type"] == "cr:FileObject"]
    assert {entry["@id"]: entry["sha256"] for entry in files} == {name: hashlib.sha256(data).hexdigest() for name, data in reference.items()}
    assert all(entry["contentUrl"] == f"{hub.url}/datasets/{REPO_ID}/resolve/main/{entry['@id']}" for entry in files)
    from_hub = datasets.load_dataset(REPO_ID, "512")
    expected = datasets.load_dataset(str(reference_dir), "512")
    assert sorted(from_hub) == sorted(expected)
    for split in expected:
        assert list(from_hub[split].cast(RAW_IMAGES)) == list(expected[split].cast(RAW_IMAGES))
    # Each shard was read once, through the redirect; nothing was left on the disk.
    for shard in releases[512].shard_paths:
        assert shard_reads(github, Path(shard).name) == 1
    assert github.redirects == len(releases[512].shard_paths) + 2  # + checksums and metadata
    assert not (tmp_path / UPLOAD_WORK_FOLDER).exists()
    # The branch never showed half a dataset: the data commit, then the card.
    commits = HfApi(token=ALICE_TOKEN).list_repo_commits(REPO_ID, repo_type="dataset")
    assert len(commits) == 3  # the repo's initial commit, the 512 files, the card (with croissant.json)
    data_commit = set(HfApi(token=ALICE_TOKEN).list_repo_files(REPO_ID, repo_type="dataset", revision=commits[1].commit_id))
    assert "croissant.json" not in data_commit and "README.md" not in data_commit
    # The same command again: the release is read again, but nothing is sent and nothing committed.
    head, requests = hub.head(REPO_ID), len(hub.requests)
    assert main(args) == 0
    assert hub.head(REPO_ID) == head and uploads(hub, requests) == []


def test_output_dir_keeps_the_hub_layout(hub, github, reference, tmp_path):
    out = tmp_path / "out"
    args = ["--from-release", "512", f"--base-url={github.url}", f"--repo-id={REPO_ID}", f"--token={ALICE_TOKEN}"]
    assert main([*args, f"--output-dir={out}", "--quiet"]) == 0
    assert parquet_files(out) == reference
    assert (out / "README.md").is_file() and not (out / ".reghead-work").exists()
    assert hub_parquet(hub) == reference


def test_convert_only_from_the_release_url(github, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("REGHEAD_BASE_URL", github.url)
    out = tmp_path / "out"
    assert main(["--from-release", "512", f"--output-dir={out}", "--quiet"]) == 0
    assert parquet_files(out) == reference


def test_mixed_with_a_local_release(github, releases, tmp_path):
    out = tmp_path / "out"
    args = ["--from-release", "1024", f"--base-url={github.url}", f"--release=512={releases[512].root}"]
    assert main([*args, f"--output-dir={out}", "--quiet"]) == 0
    assert datasets.load_dataset(str(out), "1024", split="train").num_rows >= 1
    assert datasets.load_dataset(str(out), "512", split="train").num_rows >= 1
    assert shard_reads(github, "reghead-v1-512-000000.tar") == 0


def test_wrong_combinations_are_refused(releases, capsys):
    with pytest.raises(SystemExit):
        main(["--from-release", "512", f"--release=512={releases[512].root}"])
    assert "resolution 512 given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([f"--release=512={releases[512].root}", "--base-url=http://127.0.0.1:1"])
    assert "--base-url goes with --from-release" in capsys.readouterr().err


def test_missing_release_names_the_asset_and_the_tag(github, tmp_path, capsys):
    assert main(["--from-release", "512", f"--base-url={github.url}/nowhere", f"--output-dir={tmp_path / 'out'}", "--quiet"]) == 1
    error = capsys.readouterr().err
    assert "'checksums.tar.gz'" in error and f"{release_tag(512)!r}" in error and "404" in error


def test_a_shard_with_a_bad_hash_is_fetched_again_then_named(releases, site, tmp_path, capsys):
    shard = site / release_tag(512) / "reghead-v1-512-000001.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1  # a flipped bit in an image: the tar still reads, the hash does not match
    shard.write_bytes(bytes(data))
    expected = hashlib.sha256(Path(releases[512].root / "data" / shard.name).read_bytes()).hexdigest()
    with GitHubReleaseServer(site) as server:
        args = ["--from-release", "512", f"--base-url={server.url}", f"--output-dir={tmp_path / 'out'}", "--quiet", "--num-proc=1"]
        assert main(args) == 1
        assert shard_reads(server, shard.name) == HASH_ATTEMPTS
    error = capsys.readouterr().err
    assert shard.name in error and expected in error and hashlib.sha256(data).hexdigest() in error
    assert f"Downloaded {HASH_ATTEMPTS} times" in error
    assert not list((tmp_path / "out").glob("*/*.parquet"))


def test_an_expired_signed_url_mid_shard_goes_back_to_the_asset_url(site, reference, tmp_path):
    name = "reghead-v1-512-000001.tar"
    with GitHubReleaseServer(site, signed_ttl=0.2) as server:
        server.fail_next(name, Fault(drop_after=300_000))  # the connection drops mid-shard...
        http_backoff = http.BACKOFF_SECONDS
        http.BACKOFF_SECONDS = 0.5  # ...and the signed URL has expired when the client comes back
        try:
            out = tmp_path / "out"
            assert main(["--from-release", "512", f"--base-url={server.url}", f"--output-dir={out}", "--quiet", "--num-proc=1"]) == 0
        finally:
            http.BACKOFF_SECONDS = http_backoff
        resumed = [rng for _, path, rng in server.requests if path.endswith(name)]
        assert resumed[0] is None and resumed[1].startswith("bytes=") and len(resumed) == 2
        assert server.redirects == 3 + 2 + 1  # every shard, the two small assets, and the resume
        # A client that kept the first signed URL would have been refused:
        stale = server.signed_url(f"/{release_tag(512)}/{name}")
        time.sleep(0.3)
        with pytest.raises(Exception, match="403"):
            http.HttpFile(stale, attempts=1)
    assert parquet_files(out) == reference


# --- killed and resumed ------------------------------------------------------------------------


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REGHEAD_HTTP_BACKOFF": "0.05"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "convert" / "push.py"), *args, "--quiet"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def kill_when(process: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + 120
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the run ended ({process.returncode}) before {what}: {process.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"never saw {what}")
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def stored_objects(hub) -> set[str]:
    return {path.name for path in (hub.root / "blobs" / "lfs").glob("*/*") if not path.name.endswith(".incomplete")}


def uploads(hub, since: int = 0) -> list[str]:
    return [path.rpartition("/")[2] for method, path in hub.requests[since:] if method == "PUT" and "/__lfs/upload/" in path]


@pytest.mark.parametrize("num_proc", [1, 2], ids=["one job", "job processes"])
def test_killed_during_download_and_during_upload_resumes_without_sending_twice(hub, site, reference, tmp_path, num_proc):
    work = tmp_path / "run"
    work.mkdir()
    ledger = work / UPLOAD_WORK_FOLDER / ".reghead-work" / LEDGER
    with GitHubReleaseServer(site, rate=THROTTLED_RATE) as server:
        args = ["--from-release", "512", f"--base-url={server.url}", f"--repo-id={REPO_ID}", f"--token={ALICE_TOKEN}", f"--num-proc={num_proc}"]

        run = start_cli(*args, cwd=work)  # 1: killed while the first shard downloads
        kill_when(run, lambda: server.bytes_sent > 1_000_000, "1 MB downloaded")
        assert uploads(hub) == [] and not ledger.exists()

        run = start_cli(*args, cwd=work)  # 2: killed once a file is uploaded, the next shards downloading
        kill_when(run, lambda: ledger.is_file() and ledger.read_text().count("\n") >= 1, "a file uploaded")
        recorded = [json.loads(line) for line in ledger.read_text().splitlines()]
        done_shard = recorded[0]["file"].split("/")[1] + ".tar"
        before_objects, before_requests, before_reads = stored_objects(hub), len(hub.requests), len(server.requests)
        assert {entry["sha256"] for entry in recorded} <= before_objects
        assert len(before_objects) < len(reference), "the second run was killed before it uploaded everything"

        run = start_cli(*args, cwd=work)  # 3: runs to the end
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr.decode()[-3000:]

        sent_after = uploads(hub, before_requests)
        assert sent_after and not set(sent_after) & before_objects, "a file stored before the kill was sent again"
        assert not [p for _, p, _ in server.requests[before_reads:] if p.endswith(done_shard)], "a converted shard was read again"
    assert hub_parquet(hub) == reference
    assert not (work / UPLOAD_WORK_FOLDER).exists()


def test_files_sent_before_a_bad_hash_are_replaced_by_the_good_download(hub, site, reference_dir, tmp_path, monkeypatch):
    """Small files, so that a shard's first files are uploaded before its hash is known to be wrong.

    The throttle gives the uploader the time to send the bad file while the rest of the shard arrives.
    """
    from convert.hub_upload import convert_and_push
    from convert.push import converting_bar

    monkeypatch.chdir(tmp_path)
    name = "reghead-v1-512-000000.tar"
    with GitHubReleaseServer(site, rate=THROTTLED_RATE) as server:
        server.corrupt_next(name, at=0.3)  # the first download has a flipped bit in an image, the second is right
        run = convert_and_push(
            {"512": f"{server.url}/{release_tag(512)}"}, out_dir=None, repo_id=REPO_ID, token=ALICE_TOKEN,
            num_proc=1, progress_bar=converting_bar, row_group_bytes=150_000, file_bytes=300_000,
        )  # fmt: skip
        assert shard_reads(server, name) == 2
    final = {hashlib.sha256(data).hexdigest() for data in hub_parquet(hub).values()}
    # The file holding the flipped bit was sent before the hash failed; the commit names the good one.
    assert run.files_sent == len(final) + 1
    assert len(stored_objects(hub) - final) == 2  # that file and the card's preview image
    from_hub = datasets.load_dataset(REPO_ID, "512")
    expected = datasets.load_dataset(str(reference_dir), "512")
    for split in expected:
        assert list(from_hub[split].cast(RAW_IMAGES)) == list(expected[split].cast(RAW_IMAGES))


def test_the_uploader_removes_its_file_but_never_one_written_again_under_the_name(tmp_path):
    path, aside = tmp_path / "train-000.parquet", tmp_path / "train-000.parquet.removing"
    path.write_bytes(b"sent")
    sent = _identity(path.stat())
    assert remove_if_same(path, sent, aside=aside) and not path.exists() and not aside.exists()
    assert not remove_if_same(path, sent, aside=aside)  # gone already: its folder was discarded
    path.write_bytes(b"sent")
    sent = _identity(path.stat())
    path.unlink()
    path.write_bytes(b"written again")  # the shard's next attempt, between the upload and the removal
    assert not remove_if_same(path, sent, aside=aside)
    assert path.read_bytes() == b"written again" and not aside.exists()


def test_a_discarded_shard_folder_leaves_no_name_leading_to_its_files(tmp_path):
    folder = tmp_path / "reghead-v1-512-000000"
    folder.mkdir()
    (folder / "train-000.parquet").write_bytes(b"old")
    (tmp_path / f"{folder.name}{DISCARDED_SUFFIX}").mkdir()  # left by a run stopped while removing it
    seen = []
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        seen.append((Path(path).name, folder.exists()))  # an uploader removing by name finds nothing
        real_rmtree(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(shutil, "rmtree", rmtree)
        discard_folder(folder)
        discard_folder(folder)  # nothing there: nothing to do
    assert seen == [(f"{folder.name}{DISCARDED_SUFFIX}", True), (f"{folder.name}{DISCARDED_SUFFIX}", False)]
    assert list(tmp_path.iterdir()) == []


def test_the_uploader_holds_jobs_back_by_bytes_and_takes_each_file_once(tmp_path):
    """Jobs wait while full-size files fill the queue, not for a shard's small last files; the
    files a finished shard handed over as they were made are not handed over again."""
    taken, go = [], threading.Event()

    class Waiting(Uploader):
        def _upload(self, job, part):
            go.wait()  # an uploader that lags
            taken.append(part.name)

    job = ShardJob("512", Shard(0, "reghead-v1-512-000000.tar", "unused", None), str(tmp_path))
    uploader = Waiting(
        None, REPO_ID, revision=None, create_pr=False, ledger=Ledger(tmp_path / LEDGER, repo=REPO_ID), keep_files=True,
        held=lambda job, part: False, on_uploaded=lambda size: None, stop=threading.Event(), queued_bytes=1000,
    )  # fmt: skip
    parts = [Part(f"train-00{n}.parquet", 1, 600, "unused") for n in range(3)] + [Part(f"{s}-000.parquet", 1, 100, "unused") for s in ("validation", "test")]
    uploader.submit_part(job, parts[0])
    deadline = time.monotonic() + 5
    while uploader._queued_bytes and time.monotonic() < deadline:  # the uploader takes it, and waits
        time.sleep(0.01)
    assert not uploader._queued_bytes
    for part in (parts[1], parts[3], parts[4]):  # 800 bytes waiting: no wait
        uploader.submit_part(job, part)
    blocked = threading.Thread(target=uploader.submit_part, args=(job, parts[2]))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # 1,400 bytes would wait
    go.set()
    blocked.join(5)
    assert not blocked.is_alive()
    uploader.submit(job, ShardRecord(RECORD_VERSION, "512", job.shard.name, None, True, {"train": parts[:3], "validation": [parts[3]], "test": [parts[4]]}, [], {}, ""))
    uploader.finish()
    assert taken == [p.name for p in (parts[0], parts[1], parts[3], parts[4], parts[2])]


def test_pull_request_from_the_release(hub, github, reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--from-release", "512", f"--base-url={github.url}", f"--repo-id={REPO_ID}", f"--token={ALICE_TOKEN}"]
    assert main([*args, "--create-pr", "--quiet"]) == 0
    api = HfApi(token=ALICE_TOKEN)
    files = api.list_repo_files(REPO_ID, repo_type="dataset", revision="refs/pr/1")
    assert {"README.md", *reference} <= set(files)
    assert len(api.list_repo_commits(REPO_ID, repo_type="dataset", revision="refs/pr/1")) == 2  # initial + the PR's one
    assert api.list_repo_files(REPO_ID, repo_type="dataset") == [".gitattributes"]  # main is untouched


def test_a_failed_upload_stops_the_run_and_the_rerun_sends_only_the_rest(hub, github, reference, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--from-release", "512", f"--base-url={github.url}", f"--repo-id={REPO_ID}", f"--token={ALICE_TOKEN}", "--num-proc=1"]
    hub.fail_next("PUT", "/__lfs/upload/", status=403)  # the first file's transfer is refused: not retried
    assert main([*args, "--quiet"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: uploading 512/reghead-v1-512-000000/") and "run the same command again" in error
    assert hub.head(REPO_ID) is not None and HfApi(token=ALICE_TOKEN).list_repo_files(REPO_ID, repo_type="dataset") == [".gitattributes"]
    before_objects, before_requests, before_reads = stored_objects(hub), len(hub.requests), len(github.requests)
    assert main([*args, "--quiet"]) == 0
    assert not set(uploads(hub, before_requests)) & before_objects
    assert len([p for _, p, _ in github.requests[before_reads:] if p.endswith("-000000.tar")]) <= 1
    assert hub_parquet(hub) == reference
