"""The converter: Hub layout, parquet settings, agreement with the builder, determinism, resuming."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from convert import conversion
from convert.push import main, parse_args
from reghead import EXPRESSIONS, FEATURES, RegHead, split_of
from reghead_release.sample import write_sample_release

REPO = Path(__file__).resolve().parent.parent
RAW_IMAGES = datasets.Features({**FEATURES, **{e: datasets.Image(decode=False) for e in EXPRESSIONS}})


def convert_releases(releases, out: Path, *extra: str) -> Path:
    args = [f"--release={res}={release.root}" for res, release in releases.items()]
    assert main([*args, f"--output-dir={out}", "--quiet", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def converted(releases, tmp_path_factory):
    return convert_releases(releases, tmp_path_factory.mktemp("converted") / "reghead")


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """The folder's files; the card names the folder it is in (its snippets read it), so that is left out."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes().replace(folder.as_posix().encode(), b"<out>")
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_hub_layout(converted):
    names = sorted(p.relative_to(converted).as_posix() for p in converted.rglob("*") if p.is_file())
    assert "README.md" in names and "images/preview.png" in names and "croissant.json" in names
    parquet = [n for n in names if n.endswith(".parquet")]
    assert {n.split("/")[0] for n in parquet} == {"512", "1024"}
    for name in parquet:
        config, file = name.split("/")
        split, index, of, total, tag = file.removesuffix(".parquet").split("-")
        assert split in ("train", "validation", "test") and of == "of" and len(index) == len(total) == 5
        assert len(tag) == 8 and int(tag, 16) >= 0  # what made the file: the same tag, the same bytes
        assert int(index) < int(total) == sum(1 for n in parquet if n.startswith(f"{config}/{split}-"))
    assert not (converted / conversion.WORK_DIR).exists()


@pytest.mark.parametrize("resolution", [512, 1024])
def test_load_dataset_equals_the_builder_byte_for_byte(converted, releases, resolution):
    loaded = datasets.load_dataset(str(converted), str(resolution))
    builder = RegHead(config_name=str(resolution), data_dir=str(releases[resolution].root))
    builder.download_and_prepare()
    built = builder.as_dataset()
    assert loaded.keys() == built.keys()
    for split in built:
        assert loaded[split].features == FEATURES
        assert list(loaded[split].cast(RAW_IMAGES)) == list(built[split].cast(RAW_IMAGES))


def test_load_dataset_options(converted, releases):
    test = datasets.load_dataset(str(converted), "1024", split="test")
    assert all(split_of(key) == "test" for key in test["sample_key"])
    assert test[0]["frown"].size == (1024, 1024)
    stream = datasets.load_dataset(str(converted), "512", streaming=True)
    assert next(iter(stream["train"]))["open_m_open_e"].size == (512, 512)
    two = datasets.load_dataset(str(converted), "512", split="train", columns=["sample_key", "close_m_smile"])
    assert list(two.features) == ["sample_key", "close_m_smile"]
    assert isinstance(two.features["close_m_smile"], datasets.Image)
    owls = [
        row["animal"]
        for row in datasets.load_dataset(str(converted), "512", split="train", streaming=True, filters=[("animal", "==", "Owl")])
    ]
    assert owls and set(owls) == {"Owl"}
    # Downloaded (not streamed), a filtered split is smaller than the card's recorded split size,
    # so datasets' size check is switched off, as the card says.
    toys = datasets.load_dataset(
        str(converted), "512", split="train", filters=[("style", "==", "Plastic Toy Render")], verification_mode="no_checks"
    )
    assert toys.num_rows >= 1 and set(toys["style"]) == {"Plastic Toy Render"}


def test_parquet_settings(converted):
    path = next((converted / "1024").glob("train-*.parquet"))
    file = pq.ParquetFile(path)
    assert b"huggingface" in file.schema_arrow.metadata
    assert b"content_defined_chunking" in file.metadata.metadata
    group = file.metadata.row_group(0)
    for i in range(group.num_columns):
        column = group.column(i)
        image = column.path_in_schema.split(".")[0] in EXPRESSIONS
        if image:
            assert column.compression == "UNCOMPRESSED"
            assert "PLAIN_DICTIONARY" not in column.encodings and "RLE_DICTIONARY" not in column.encodings
            assert not column.is_stats_set
        else:
            assert column.compression == "SNAPPY"
            assert column.is_stats_set
        assert column.has_offset_index


def test_row_groups_and_files_are_sized_by_bytes(tmp_path):
    release = write_sample_release(tmp_path / "rel", resolution=512, num_identities=30, samples_per_shard=30)
    group_cap, file_cap = 1_000_000, 3_000_000  # a row (10 drawn images) is about 0.28 MB
    jobs = conversion.plan_jobs({"512": str(release.root)}, tmp_path / "out", verify=True, strict=True, row_group_bytes=group_cap, file_bytes=file_cap)
    [record] = conversion.run_jobs(jobs["512"], num_proc=1, progress=lambda n: None)
    train = record.parts["train"]
    assert len(train) > 1
    for part in train:
        meta = pq.ParquetFile(jobs["512"][0].folder / part.name).metadata
        assert meta.num_row_groups > 1
        image_bytes = [
            sum(meta.row_group(g).column(c).total_uncompressed_size for c in range(meta.num_columns) if meta.row_group(g).column(c).path_in_schema.endswith(".bytes"))
            for g in range(meta.num_row_groups)
        ]
        assert max(image_bytes) <= group_cap + 2**16  # + page headers
        assert part.size <= file_cap + 2**18  # + the small columns and the footer


def test_same_release_gives_the_same_bytes(releases, tmp_path):
    one = convert_releases(releases, tmp_path / "one", "--num-proc=1")
    two = convert_releases(releases, tmp_path / "two", "--num-proc=2")
    assert "croissant.json" in folder_bytes(one) and folder_bytes(one) == folder_bytes(two)


def test_interrupted_run_resumes_without_redoing_finished_shards(releases, tmp_path, monkeypatch):
    reference = folder_bytes(convert_releases(releases, tmp_path / "reference"))
    out = tmp_path / "out"
    real_run_job = conversion.run_job
    calls = []
    interrupt_at = [3]

    def run_job_then_stop(job, *args):
        calls.append(job.shard.name)
        if len(calls) in interrupt_at:
            raise KeyboardInterrupt  # as if the maintainer pressed Ctrl-C during the third shard
        return real_run_job(job, *args)

    monkeypatch.setattr(conversion, "run_job", run_job_then_stop)
    with pytest.raises(KeyboardInterrupt):
        convert_releases(releases, out, "--num-proc=1")
    assert not (out / "README.md").exists()
    assert not list(out.glob("*/*.parquet")), "no file may have its final name before the run is complete"
    calls.clear()
    interrupt_at.clear()
    convert_releases(releases, out, "--num-proc=1")
    total = sum(len(r.shard_paths) for r in releases.values())
    assert len(calls) == total - 2, "the two finished shards are not converted again"
    assert folder_bytes(out) == reference


def test_checksum_mismatch_stops_the_run(releases, copy_release, tmp_path, capsys):
    root = copy_release(releases[512])
    shard = sorted((root / "data").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    code = main([f"--release=512={root}", f"--output-dir={tmp_path / 'out'}", "--quiet", "--num-proc=1"])
    error = capsys.readouterr().err
    assert code == 1
    assert shard.name in error and "SHA-256 mismatch" in error
    assert not (tmp_path / "out" / "README.md").exists()


def test_card_numbers_and_yaml(converted, releases):
    card = DatasetCard.load(converted / "README.md")
    configs = {c["config_name"]: c for c in card.data["configs"]}
    assert configs["512"]["default"] is True
    infos = {i["config_name"]: i for i in card.data["dataset_info"]}
    counts = {s["name"]: s["num_examples"] for s in infos["1024"]["splits"]}
    expected = {}
    for key in releases[1024].keys:
        expected[split_of(key)] = expected.get(split_of(key), 0) + 1
    assert counts == expected
    assert card.data["license"] == "other" and card.data["license_link"].startswith("https://")
    text = (converted / "README.md").read_text()
    assert "![" in text and "images/preview.png" in text
    assert "open_m_open_e" in text and "Doberman Dog" in text
    assert "extra_gated_fields" not in card.data


def test_gated_card(releases, tmp_path):
    out = convert_releases({512: releases[512]}, tmp_path / "out", "--gated")
    card = DatasetCard.load(out / "README.md")
    assert "extra_gated_prompt" in card.data and "Country" in card.data["extra_gated_fields"]
    assert [c["config_name"] for c in card.data["configs"]] == ["512"]


def test_help_documents_every_option():
    result = subprocess.run([sys.executable, str(REPO / "convert" / "push.py"), "--help"], capture_output=True, text=True, check=True)
    parser_options = [a for a in vars(parse_args([])) if a not in ("release", "releases")]
    for option in parser_options:
        assert f"--{option.replace('_', '-')}" in result.stdout
    assert "--release RES=DIR" in result.stdout


def test_demo_with_no_arguments(tmp_path):
    """The README's main job: no arguments, then load_dataset("reghead-parquet", "512") in the same folder."""
    subprocess.run([sys.executable, str(REPO / "convert" / "push.py"), "--quiet"], cwd=tmp_path, check=True)
    loaded = subprocess.run(
        [sys.executable, "-c", 'import datasets; ds = datasets.load_dataset("reghead-parquet", "512"); print(sum(ds.num_rows.values()))'],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )
    assert loaded.stdout.strip() == "24"


def test_bad_release_argument_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--release", "768=somewhere"])
    assert "expected RES=DIR" in capsys.readouterr().err


def test_missing_release_folder_is_a_clear_error(tmp_path, capsys):
    assert main([f"--release=512={tmp_path / 'nowhere'}", f"--output-dir={tmp_path / 'out'}", "--quiet"]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_image_columns_hold_the_tar_members_byte_for_byte(converted, releases):
    """Each image cell of the parquet files is its tar member's bytes and base name; rows are in tar order."""
    import tarfile

    for resolution, release in releases.items():
        members, order = {}, []
        for shard in release.shard_paths:
            with tarfile.open(shard) as archive:
                for member in archive:
                    members[member.name] = archive.extractfile(member).read()
                    key = member.name.split(".")[0]
                    if not order or order[-1] != key:
                        order.append(key)
        seen = []
        for path in sorted((converted / str(resolution)).glob("*.parquet")):
            table = pq.read_table(path)
            for row in table.to_pylist():
                seen.append(row["sample_key"])
                for expression in EXPRESSIONS:
                    name = f"{row['sample_key']}.{expression}.jpg"
                    assert row[expression] == {"bytes": members[name], "path": name}
                assert row["sample_json"].encode() == members[f"{row['sample_key']}.json"]
        assert sorted(seen) == sorted(order)
        for split in ("train", "validation", "test"):
            in_split = [key for key in seen if split_of(key) == split]
            assert in_split == [key for key in order if split_of(key) == split]
