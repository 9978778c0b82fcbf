"""Pushing a converted release to the loopback Hub test server and reading it back through the Hub."""

from __future__ import annotations

import shutil

import datasets
import pytest
from huggingface_hub import DatasetCard, HfApi, constants

from conftest import ALICE_TOKEN
from convert.push import main
from convert.upload import PushError, push_folder
from reghead import EXPRESSIONS, FEATURES

REPO_ID = "alice/reghead"
RAW_IMAGES = datasets.Features({**FEATURES, **{e: datasets.Image(decode=False) for e in EXPRESSIONS}})


@pytest.fixture(scope="module")
def converted(releases, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "reghead"
    args = [f"--release={res}={release.root}" for res, release in releases.items()]
    assert main([*args, f"--output-dir={out}", "--quiet"]) == 0
    return out


def lfs_uploads(hub) -> int:
    return hub.count("PUT")


def test_push_round_trips_through_load_dataset(hub, converted):
    result = push_folder(converted, repo_id=REPO_ID, token=ALICE_TOKEN)
    assert result.uploaded and result.commits
    remote = set(HfApi(token=ALICE_TOKEN).list_repo_files(REPO_ID, repo_type="dataset"))
    assert {"README.md", "images/preview.png"} <= remote
    assert {p.relative_to(converted).as_posix() for p in converted.rglob("*.parquet")} <= remote
    assert lfs_uploads(hub) == sum(1 for _ in converted.rglob("*.parquet")) + 1  # + the preview image

    for config in ("512", "1024"):
        from_hub = datasets.load_dataset(REPO_ID, config)
        local = datasets.load_dataset(str(converted), config)
        assert from_hub.keys() == local.keys()
        for split in local:
            assert list(from_hub[split].cast(RAW_IMAGES)) == list(local[split].cast(RAW_IMAGES))
    streamed = next(iter(datasets.load_dataset(REPO_ID, "512", split="train", streaming=True)))
    assert streamed["close_m_smile"].size == (512, 512)
    assert datasets.load_dataset(REPO_ID, "1024", split="test").num_rows >= 1
    assert hub.blocked_hosts == []


def test_pushing_again_sends_nothing(hub, converted):
    push_folder(converted, repo_id=REPO_ID, token=ALICE_TOKEN)
    uploads, head = lfs_uploads(hub), hub.head(REPO_ID)
    again = push_folder(converted, repo_id=REPO_ID, token=ALICE_TOKEN)
    assert (again.uploaded, again.commits, again.deleted) == ([], [], [])
    assert lfs_uploads(hub) == uploads and hub.head(REPO_ID) == head


def test_rerun_after_a_partial_upload_sends_only_what_is_missing(hub, converted, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(converted, partial)
    shutil.rmtree(partial / "1024")  # as if the run stopped after the 512 files
    push_folder(partial, repo_id=REPO_ID, token=ALICE_TOKEN)
    before = lfs_uploads(hub)
    result = push_folder(converted, repo_id=REPO_ID, token=ALICE_TOKEN)
    missing = sorted(p.relative_to(converted).as_posix() for p in (converted / "1024").glob("*.parquet"))
    assert sorted(p for p in result.uploaded if p.endswith(".parquet")) == missing
    assert lfs_uploads(hub) - before == len(missing)


def test_stale_files_are_deleted(hub, converted, tmp_path):
    push_folder(converted, repo_id=REPO_ID, token=ALICE_TOKEN)
    smaller = tmp_path / "smaller"
    shutil.copytree(converted, smaller)
    stale = sorted((smaller / "512").glob("validation-*.parquet"))[-1]
    stale.unlink()
    result = push_folder(smaller, repo_id=REPO_ID, token=ALICE_TOKEN)
    assert result.deleted == [stale.relative_to(smaller).as_posix()]


def test_private_repo_revision_and_pull_request(hub, converted):
    push_folder(converted, repo_id="alice/private-reghead", token=ALICE_TOKEN, private=True)
    api = HfApi(token=ALICE_TOKEN)
    assert api.repo_info("alice/private-reghead", repo_type="dataset").private
    push_folder(converted, repo_id=REPO_ID, token=ALICE_TOKEN, revision="v1")
    assert "README.md" in api.list_repo_files(REPO_ID, repo_type="dataset", revision="v1")
    result = push_folder(converted, repo_id="alice/pr-reghead", token=ALICE_TOKEN, create_pr=True)
    assert result.pull_request and len(result.commits) == 1
    assert "README.md" in api.list_repo_files("alice/pr-reghead", repo_type="dataset", revision="refs/pr/1")


def test_card_validates_on_the_hub(hub, converted):
    DatasetCard.load(converted / "README.md").validate(repo_type="dataset")


def test_wrong_token_is_a_clear_error_without_the_token(hub, converted):
    with pytest.raises(PushError) as error:
        push_folder(converted, repo_id=REPO_ID, token="hf_wrong_secret_token")
    assert "401" in str(error.value) and "token" in str(error.value)
    assert "hf_wrong_secret_token" not in str(error.value)


def test_classic_lfs_server_switches_xet_off(hub, converted, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)  # as in a shell where hf_xet is installed
    push_folder(converted, repo_id=REPO_ID, token=ALICE_TOKEN)
    assert constants.HF_HUB_DISABLE_XET is True
    assert lfs_uploads(hub) > 0


def test_push_from_the_command_line(hub, releases, tmp_path, capsys):
    out = tmp_path / "out"
    args = [f"--release=512={releases[512].root}", f"--output-dir={out}", f"--repo-id={REPO_ID}", f"--token={ALICE_TOKEN}"]
    assert main([*args, "--num-proc=1"]) == 0
    printed = capsys.readouterr().out
    assert "Pushed to" in printed and ALICE_TOKEN not in printed
    assert datasets.load_dataset(REPO_ID, "512", split="train").num_rows >= 1
