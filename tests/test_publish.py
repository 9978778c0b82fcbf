"""Publishing a conversion: all or nothing for a reader of the folder, only the converter's files
touched or pushed, finished shards reused only with the same settings, clear errors on disk faults."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import datasets
import pytest
import yaml

from conftest import ALICE_TOKEN
from convert import conversion
from convert.card import CARD_FILES
from convert.push import main
from convert.upload import local_files, push_folder
from reghead_release.sample import write_release_assets, write_sample_release

USER_FILES = {
    "512/train-extra-analysis.parquet": b"the user's own analysis, not a converted file",
    ".env": b"HF_TOKEN=hf_secret_in_a_dotenv\n",
    "notes.txt": b"my notes\n",
}


class Killed(BaseException):
    """Stands for SIGKILL at a step of publishing: nothing after it runs, no cleanup is done."""


@pytest.fixture(scope="module")
def old_and_new(tmp_path_factory):
    """Two different 512 releases (6 and 8 identities) and a 1024 one, the first's prefix."""
    root = tmp_path_factory.mktemp("publish-releases")
    return {
        "old": write_sample_release(root / "old", num_identities=6, samples_per_shard=2),
        "new": write_sample_release(root / "new", num_identities=8, samples_per_shard=3),
        "1024": write_sample_release(root / "1024", resolution=1024, num_identities=4, samples_per_shard=2),
    }


def convert(out: Path, *releases: str, extra: tuple[str, ...] = ()) -> int:
    return main([*(f"--release={r}" for r in releases), f"--output-dir={out}", "--quiet", "--num-proc=1", *extra])


def loaded_keys(out: Path, config: str = "512") -> list[str]:
    ds = datasets.load_dataset(str(out), config)
    return sorted(key for split in ds.values() for key in split["sample_key"])


def add_user_files(out: Path) -> None:
    for name, data in USER_FILES.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)


def assert_user_files_untouched(out: Path) -> None:
    for name, data in USER_FILES.items():
        assert (out / name).read_bytes() == data, name


@pytest.fixture
def stop_at(monkeypatch):
    """stop_at(k): publishing raises Killed before its k-th step; returns the steps seen."""
    steps: list[str] = []

    def arm(k: int | None) -> list[str]:
        steps.clear()

        def hook(name: str) -> None:
            steps.append(name)
            if k is not None and len(steps) == k + 1:
                raise Killed(name)

        monkeypatch.setattr(conversion, "PUBLISH_HOOK", hook)
        return steps

    return arm


# --- all or nothing ---------------------------------------------------------------------------


def test_a_kill_at_any_step_of_publishing_leaves_a_loadable_folder(old_and_new, tmp_path, stop_at):
    old, new = old_and_new["old"], old_and_new["new"]
    snapshot = tmp_path / "snapshot"
    assert convert(snapshot, f"512={old.root}") == 0
    add_user_files(snapshot)
    stop_at(0)  # the new run converts its shards, then is killed before publishing anything
    with pytest.raises(Killed):
        convert(snapshot, f"512={new.root}")
    steps = stop_at(None)
    assert convert(tmp_path / "count", f"512={new.root}") == 0
    count = len(steps)
    assert count >= 6 and "write the card" in steps

    seen = set()
    for k in range(count):
        out = tmp_path / f"killed-at-{k}"
        shutil.copytree(snapshot, out)
        stop_at(k)
        with pytest.raises(Killed):
            convert(out, f"512={new.root}")
        keys = loaded_keys(out)
        assert keys in (sorted(old.keys), sorted(new.keys)), f"killed at step {k} ({steps[k]})"
        seen.add("new" if keys == sorted(new.keys) else "old")
        assert_user_files_untouched(out)
        stop_at(None)
        assert convert(out, f"512={new.root}") == 0  # the next run finishes the job
        assert loaded_keys(out) == sorted(new.keys)
        assert_user_files_untouched(out)
        made = json.loads((out / conversion.PUBLISHED_RECORD).read_text())["made"]
        on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
        assert on_disk == set(made) | set(USER_FILES) | {conversion.PUBLISHED_RECORD}, "nothing of the old run is left"
    assert seen == {"old", "new"}


def test_configs_of_an_earlier_run_are_kept_and_described(old_and_new, tmp_path):
    out = tmp_path / "out"
    assert convert(out, f"512={old_and_new['old'].root}", f"1024={old_and_new['1024'].root}") == 0
    assert convert(out, f"512={old_and_new['new'].root}") == 0
    card = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert sorted(c["config_name"] for c in card["configs"]) == ["1024", "512"]
    assert sorted(i["config_name"] for i in card["dataset_info"]) == ["1024", "512"]
    assert loaded_keys(out, "1024") == sorted(old_and_new["1024"].keys)
    assert loaded_keys(out, "512") == sorted(old_and_new["new"].keys)


def test_a_folder_converted_by_an_older_version_is_pinned_then_replaced(old_and_new, tmp_path, stop_at):
    """Older versions named files `<split>-NNNNN-of-NNNNN.parquet` and the card named them by globs."""
    out = tmp_path / "out"
    assert convert(out, f"512={old_and_new['old'].root}") == 0
    record = json.loads((out / conversion.PUBLISHED_RECORD).read_text())
    text = (out / "README.md").read_text()
    for name in record["made"]:
        if name.endswith(".parquet"):
            old_name = name.rsplit("-", 1)[0] + ".parquet"
            (out / name).rename(out / old_name)
            text = text.replace(name, old_name)
    front = yaml.safe_load(text.split("---")[1])
    for config in front["configs"]:
        for entry in config["data_files"]:
            entry["path"] = f"{config['config_name']}/{entry['split']}-*"
    (out / "README.md").write_text("---\n" + yaml.safe_dump(front, sort_keys=False) + "---" + text.split("---", 2)[2])
    (out / conversion.PUBLISHED_RECORD).unlink()
    assert loaded_keys(out) == sorted(old_and_new["old"].keys)
    add_user_files(out)  # the older card's glob would read them now; the pinned card never does

    steps = stop_at(1)
    with pytest.raises(Killed):
        convert(out, f"512={old_and_new['new'].root}")
    assert steps == ["pin the older card", "record the files to make"]
    assert loaded_keys(out) == sorted(old_and_new["old"].keys)  # the pinned card reads the same files
    probe = [None]

    def kill_at_the_card(name):
        if name == "write the card":
            probe[0] = loaded_keys(out)  # every new file is beside the old ones, under the pinned card
            raise Killed(name)

    stop_at(None)
    conversion.PUBLISH_HOOK = kill_at_the_card  # restored by stop_at's monkeypatch
    with pytest.raises(Killed):
        convert(out, f"512={old_and_new['new'].root}")
    assert probe[0] == sorted(old_and_new["old"].keys)
    stop_at(None)
    assert convert(out, f"512={old_and_new['new'].root}") == 0
    assert loaded_keys(out) == sorted(old_and_new["new"].keys)
    assert not list(out.glob("512/*-of-0000?.parquet")), "the older version's files are removed"
    assert_user_files_untouched(out)


# --- only the converter's files ----------------------------------------------------------------


def test_user_files_are_neither_removed_nor_pushed(old_and_new, tmp_path, hub):
    out = tmp_path / "out"
    add_user_files(out)
    assert convert(out, f"512={old_and_new['old'].root}") == 0
    assert convert(out, f"512={old_and_new['new'].root}") == 0
    assert_user_files_untouched(out)
    files = local_files(out)
    assert set(USER_FILES).isdisjoint(files) and conversion.PUBLISHED_RECORD not in files
    assert set(CARD_FILES) <= set(files)
    assert all(name.startswith("512/") and name.endswith(".parquet") for name in set(files) - set(CARD_FILES))
    result = push_folder(out, repo_id="alice/reghead", token=ALICE_TOKEN)
    assert sorted(result.uploaded) == sorted(files)
    from huggingface_hub import HfApi

    assert set(HfApi().list_repo_files("alice/reghead", repo_type="dataset")) == set(files) | {".gitattributes"}
    HfApi(token=ALICE_TOKEN).upload_file(path_or_fileobj=b"added by hand", path_in_repo="512/notes-by-hand.txt", repo_id="alice/reghead", repo_type="dataset")
    assert convert(out, f"512={old_and_new['old'].root}") == 0
    result = push_folder(out, repo_id="alice/reghead", token=ALICE_TOKEN)
    assert result.deleted and all(name.endswith(".parquet") for name in result.deleted)
    remote = set(HfApi().list_repo_files("alice/reghead", repo_type="dataset"))
    assert remote == set(local_files(out)) | {".gitattributes", "512/notes-by-hand.txt"}


# --- reusing finished shards -------------------------------------------------------------------


def spoil_json(release, shard: int, count: int) -> None:
    """Make the JSON of the first `count` samples of a shard invalid, checksums updated."""
    path = release.shard_paths[shard]
    with tarfile.open(path) as archive:
        items = [(m.name, archive.extractfile(m).read()) for m in archive]
    spoiled = [name for name, _ in items if name.endswith(".json")][:count]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in items:
            data = b"{not json" if name in spoiled else data
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            archive.addfile(info, io.BytesIO(data))
    write_release_assets(release.root, resolution=release.resolution, shard_paths=list(release.shard_paths))


@pytest.fixture
def bad_release(tmp_path):
    release = write_sample_release(tmp_path / "bad", num_identities=6, samples_per_shard=2)
    spoil_json(release, 1, 1)
    return release


def test_a_lenient_shard_is_not_reused_by_a_strict_run(bad_release, tmp_path, capsys):
    out = tmp_path / "out"
    assert convert(out, f"512={bad_release.root}", extra=("--lenient",)) == 0
    assert len(loaded_keys(out)) == 5
    capsys.readouterr()
    assert convert(out, f"512={bad_release.root}") == 1
    assert "is not valid JSON" in capsys.readouterr().err


def test_shards_are_redone_when_the_reader_or_the_sizes_change(old_and_new, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert convert(out, f"512={old_and_new['old'].root}") == 0
    jobs = conversion.plan_jobs({"512": str(old_and_new["old"].root)}, out, verify=True, strict=True)["512"]
    conversion.run_jobs(jobs, num_proc=1, progress=lambda n: None)
    assert all(conversion.finished_record(job) for job in jobs)
    assert not any(conversion.finished_record(conversion.ShardJob(**{**job.__dict__, "strict": False})) for job in jobs)
    assert not any(conversion.finished_record(conversion.ShardJob(**{**job.__dict__, "file_bytes": 10**6})) for job in jobs)
    assert all(conversion.finished_record(conversion.ShardJob(**{**job.__dict__, "verify": False})) for job in jobs)
    monkeypatch.setattr(conversion, "READER_VERSION", "another-reader")
    assert not any(conversion.finished_record(job) for job in jobs)


# --- lenient conversions and disk faults --------------------------------------------------------


def test_a_shard_whose_samples_are_all_bad_is_skipped_when_lenient(tmp_path):
    release = write_sample_release(tmp_path / "rel", num_identities=6, samples_per_shard=2)
    spoil_json(release, 0, 2)
    out = tmp_path / "out"
    assert convert(out, f"512={release.root}", extra=("--lenient",)) == 0
    assert loaded_keys(out) == sorted(release.keys[2:])


def test_a_release_whose_samples_are_all_bad_is_a_one_line_error(tmp_path, capsys):
    release = write_sample_release(tmp_path / "rel", num_identities=4, samples_per_shard=2)
    spoil_json(release, 0, 2)
    spoil_json(release, 1, 2)
    assert convert(tmp_path / "out", f"512={release.root}", extra=("--lenient",)) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: file 'reghead-v1-512-000000.tar': no sample of the 512 release could be read")
    assert "2 skipped (invalid JSON)" in error and error.count("\n") == 1


def test_an_output_folder_that_cannot_be_written_is_a_one_line_error(old_and_new, tmp_path, capsys):
    (tmp_path / "blocked").write_text("a file where the output folder's parent should be")
    out = tmp_path / "blocked" / "out"
    assert convert(out, f"512={old_and_new['old'].root}") == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: cannot write '{out}'") and error.count("\n") == 1 and "Traceback" not in error
