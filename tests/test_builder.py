"""The RegHead builder against sample releases: rows equal to the tar members, byte for byte."""

from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict
from pathlib import Path

import datasets
import pytest

from reghead import EXPRESSIONS, FEATURES, RegHead, ReleaseError, split_of
from reghead_release import tar
from reghead_release.sample import identity_name, identity_parts, write_sample_release

EXPECTED_FEATURES = datasets.Features(
    {
        "sample_key": datasets.Value("string"),
        "identity": datasets.Value("string"),
        "identity_index": datasets.Value("int32"),
        "animal": datasets.Value("string"),
        "style": datasets.Value("string"),
        "feature": datasets.Value("string"),
        "accessories": datasets.List(datasets.Value("string")),
        "open_m_open_e": datasets.Image(),
        "halfo_m_o_e": datasets.Image(),
        "close_m_o_e": datasets.Image(),
        "close_m_halfo_e": datasets.Image(),
        "close_m_0_25o_e": datasets.Image(),
        "close_m_0_75o_e": datasets.Image(),
        "close_m_close_e": datasets.Image(),
        "close_m_smile": datasets.Image(),
        "raise_eyebrows": datasets.Image(),
        "frown": datasets.Image(),
        "sample_json": datasets.Value("string"),
    }
)


def tar_samples(root: Path) -> dict[str, dict[str, bytes]]:
    """{key: {field: bytes}} read with Python's tarfile, independently of the project's reader."""
    samples = defaultdict(dict)
    for shard in sorted(root.rglob("*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive:
                key, _, field = member.name.partition(".")
                samples[key][field] = archive.extractfile(member).read()
    return dict(samples)


def raw_rows(dataset: datasets.Dataset) -> list[dict]:
    """Rows with images as {"bytes", "path"} instead of decoded pictures."""
    return list(dataset.cast(datasets.Features({**dataset.features, **{e: datasets.Image(decode=False) for e in EXPRESSIONS}})))


def prepare(**kwargs) -> datasets.DatasetDict:
    builder = RegHead(**kwargs)
    builder.download_and_prepare()
    return builder.as_dataset()


def test_features_are_exact():
    assert RegHead(config_name="512").info.features == EXPECTED_FEATURES
    assert list(FEATURES) == list(EXPECTED_FEATURES)  # the column order too


@pytest.mark.parametrize("resolution", [512, 1024])
def test_rows_equal_the_tar_members(releases, resolution):
    release = releases[resolution]
    ds = prepare(config_name=str(resolution), data_dir=str(release.root))
    expected = tar_samples(release.root)
    rows = [row for split in ds.values() for row in raw_rows(split)]
    assert sorted(row["sample_key"] for row in rows) == sorted(expected) == sorted(release.keys)
    for row in rows:
        members = expected[row["sample_key"]]
        for expression in EXPRESSIONS:
            assert row[expression]["bytes"] == members[f"{expression}.jpg"]
            assert row[expression]["path"] == f"{row['sample_key']}.{expression}.jpg"
        assert row["sample_json"] == members["json"].decode("utf-8")
        position = int(row["sample_key"][:8])
        animal, style, feature, accessories = identity_parts(position)
        assert row["identity"] == identity_name(position) == json.loads(row["sample_json"])["identity"]
        assert (row["identity_index"], row["animal"], row["style"], row["feature"], row["accessories"]) == (
            position, animal, style, feature, accessories
        )


def test_prepare_with_two_processes(releases):
    builder = RegHead(config_name="512", data_dir=str(releases[512].root))
    builder.download_and_prepare(num_proc=2)
    keys = [key for split in builder.as_dataset().values() for key in split["sample_key"]]
    assert sorted(keys) == sorted(releases[512].keys)


def test_images_decode_at_the_release_resolution(releases):
    ds = prepare(config_name="1024", data_dir=str(releases[1024].root))
    assert ds["train"][0]["frown"].size == (1024, 1024)


def test_splits_are_disjoint_stable_and_shared_by_both_resolutions(releases):
    by_resolution = {}
    for resolution in (512, 1024):
        ds = prepare(config_name=str(resolution), data_dir=str(releases[resolution].root))
        by_resolution[resolution] = {split: set(ds[split]["sample_key"]) for split in ds}
    splits = by_resolution[512]
    assert splits == by_resolution[1024]
    assert not (splits["train"] & splits["validation"] or splits["train"] & splits["test"] or splits["validation"] & splits["test"])
    for split, keys in splits.items():
        assert all(split_of(key) == split for key in keys)
    assert set().union(*splits.values()) == set(releases[512].keys)


@pytest.mark.parametrize("layout, extracted", [("readme", False), ("readme", True), ("flat", False), ("flat", True)])
def test_release_layouts(tmp_path, layout, extracted):
    release = write_sample_release(tmp_path / "rel", num_identities=6, samples_per_shard=2, layout=layout, extracted=extracted)
    ds = prepare(config_name="512", data_dir=str(release.root))
    assert sum(ds.num_rows.values()) == 6


def test_extracted_metadata_is_enough(tmp_path):
    release = write_sample_release(tmp_path / "rel", num_identities=4, layout="readme", extracted=True)
    (release.root / "metadata.tar.gz").unlink()
    (release.root / "checksums.tar.gz").unlink()
    assert sum(prepare(config_name="512", data_dir=str(release.root)).num_rows.values()) == 4


@pytest.mark.parametrize("tar_format", ["pax", "gnu"])
def test_awkward_names_and_tar_formats(tmp_path, tar_format):
    names = [
        "id000_Przewalski's_Horse_Video_Game_NPC_Style_curved_horns_an_astronaut's_helmet",
        "id1000_Three-toed_Sloth_Computer_Animated_Film-Style_3D_a_single_horn_a_party_hat_an_eyepatch",
        "id99999_Grey_Wolf_Plastic_Toy_Render_" + "very_" * 30 + "long_fur_a_hat",
        "id7_Emperor_Penguin_Watercolour_round_eyes_a_hat",  # no known style: kept, attributes null
    ]
    release = write_sample_release(tmp_path / "rel", identities=names, tar_format=tar_format)
    ds = prepare(config_name="512", data_dir=str(release.root))
    rows = {row["identity"]: row for split in ds.values() for row in split}
    assert set(rows) == set(names)
    assert rows[names[0]]["animal"] == "Przewalski's Horse"
    assert rows[names[0]]["accessories"] == ["an astronaut's helmet"]
    assert rows[names[1]]["identity_index"] == 1000
    assert rows[names[1]]["feature"] == "a single horn"
    assert rows[names[2]]["identity_index"] == 99999
    assert (rows[names[3]]["identity_index"], rows[names[3]]["animal"], rows[names[3]]["style"]) == (7, None, None)


def test_empty_split_has_the_full_schema(tmp_path):
    release = write_sample_release(tmp_path / "rel", num_identities=3)
    ds = prepare(config_name="512", data_dir=str(release.root))
    empty = [split for split in ds if ds[split].num_rows == 0]
    assert empty, "three identities leave at least one split empty"
    assert all(ds[split].features == EXPECTED_FEATURES for split in empty)


def test_checksum_mismatch_raises_naming_the_shard(releases, copy_release):
    root = copy_release(releases[512])
    shard = sorted((root / "data").glob("*.tar"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside an image: the tar itself stays readable
    shard.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match=rf"{shard.name}.*SHA-256 mismatch"):
        prepare(config_name="512", data_dir=str(root))
    # Switched off, the same shard is read (and its bytes are what the tar holds now).
    ds = prepare(config_name="512", data_dir=str(root), verify_checksums=False)
    assert sum(ds.num_rows.values()) == len(releases[512].keys)
    builder = RegHead(config_name="512", data_dir=str(root))
    builder.download_and_prepare(verification_mode="no_checks")


def test_wrong_resolution_is_refused(releases):
    with pytest.raises(ReleaseError, match="belongs to the 512 release"):
        RegHead(config_name="1024", data_dir=str(releases[512].root)).download_and_prepare()


def test_streaming_a_local_release(releases):
    release = releases[512]
    stream = RegHead(config_name="512", data_dir=str(release.root)).as_streaming_dataset()
    first = next(iter(stream["train"]))
    assert first["sample_key"] == next(k for k in release.keys if split_of(k) == "train")
    keys = {split: [row["sample_key"] for row in stream[split]] for split in stream}
    assert sorted(k for ks in keys.values() for k in ks) == sorted(release.keys)


def test_url_release_prepares_and_streams(http_site, releases):
    ds = prepare(config_name="1024", base_url=http_site.url)
    assert sorted(k for split in ds.values() for k in split["sample_key"]) == sorted(releases[1024].keys)
    streamed = [row["sample_key"] for row in RegHead(config_name="512", base_url=http_site.url).as_streaming_dataset(split="validation")]
    assert streamed == [k for k in releases[512].keys if split_of(k) == "validation"]
    assert any(path.endswith("/reghead-webdataset-v1-1024/checksums.tar.gz") for _, path, _ in http_site.requests)


def test_base_url_from_the_environment(http_site, releases, monkeypatch):
    monkeypatch.setenv("REGHEAD_BASE_URL", http_site.url)
    row = next(iter(RegHead(config_name="512").as_streaming_dataset(split="train")))
    assert row["sample_key"] in releases[512].keys


def test_streaming_over_http_yields_before_the_shard_is_read(tmp_path):
    from conftest import RangeFileServer, publish

    release = write_sample_release(tmp_path / "rel", resolution=1024, num_identities=40, samples_per_shard=40)
    shard_size = release.shard_paths[0].stat().st_size
    with RangeFileServer(publish(release.root, tmp_path / "site", 1024).parent) as server:
        rows = iter(RegHead(config_name="1024", base_url=server.url).as_streaming_dataset(split="train"))
        first = next(rows)
        served = server.bytes_sent
    assert first["sample_key"] == release.keys[0]
    assert served < shard_size / 2, f"{served} bytes were sent for the first row of a {shard_size}-byte shard"


class CountingFile(io.FileIO):
    """A file that counts the bytes the kernel hands it."""

    bytes_read = 0

    def readinto(self, buffer):
        count = super().readinto(buffer)
        CountingFile.bytes_read += count or 0
        return count


def test_validation_and_test_read_only_their_own_samples(tmp_path, monkeypatch):
    import reghead

    release = write_sample_release(tmp_path / "release", num_identities=80, samples_per_shard=40)
    monkeypatch.setattr(reghead, "open_shard", lambda location, **_: io.BufferedReader(CountingFile(location), 1 << 16))
    shard_bytes = sum(path.stat().st_size for path in release.shard_paths)
    others = [k for k in release.keys if split_of(k) != "train"]
    assert others
    builder = RegHead(config_name="512", data_dir=str(release.root))
    builder.download_and_prepare()
    assert sorted(k for split in builder.as_dataset().values() for k in split["sample_key"]) == sorted(release.keys)
    # The train split reads every byte (and verifies it); the others go straight to their samples,
    # reading each one and at most one block beyond it.
    beyond = CountingFile.bytes_read - shard_bytes
    sample_bytes = shard_bytes / len(release.keys)
    assert 0 < beyond <= len(others) * (2 * sample_bytes + tar.FIRST_READ_BYTES)


def test_a_split_read_after_an_unfinished_train_read_reads_its_shards_whole(releases):
    release = releases[512]
    builder = RegHead(config_name="512", data_dir=str(release.root))
    stream = builder.as_streaming_dataset()
    next(iter(stream["train"]))  # the train read stops inside the first shard: it noted no spans
    assert [row["sample_key"] for row in stream["test"]] == [k for k in release.keys if split_of(k) == "test"]
