"""Bad samples and bad assets the reader must name, bound and summarise (docs/RELIABILITY.md).

Each kind of bad input once: strict reads raise `ReleaseError` naming the shard, the sample,
the member and the value; lenient reads skip the sample and count it. Assets too large for
their role stop early, with a short message.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import shutil
import tarfile
import time
from pathlib import Path

import datasets
import pytest

from conftest import RangeFileServer, members, prepare, tar_bytes, write_members
from convert.push import main
from reghead import EXPRESSIONS, RegHead, ReleaseError
from reghead_release.errors import Problems
from reghead_release.reader import jpeg_size, read_shard_records
from reghead_release.release import (
    CHECKSUMS_ASSET,
    MAX_MEMBER_BYTES,
    SHA256SUMS_MEMBER,
    read_local_index,
    read_remote_index,
    sample_index_identities,
)
from reghead_release.sample import sample_json, sample_key, write_release_assets, write_sample_release


def jpeg(width: int, height: int, quality: int = 75) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def base_release(tmp_path_factory):
    return write_sample_release(tmp_path_factory.mktemp("checks") / "release", num_identities=6, samples_per_shard=2)


@pytest.fixture
def release(base_release, tmp_path):
    root = Path(shutil.copytree(base_release.root, tmp_path / "release"))
    shards = tuple(root / "data" / path.name for path in base_release.shard_paths)
    return base_release.__class__(root, base_release.resolution, base_release.keys, shards)


def damage(release, edit, *, tar_format=tarfile.PAX_FORMAT) -> Path:
    """Rewrite the first sample of shard 1 with `edit(name, data) -> (name, data)`, checksums matching."""
    path = release.shard_paths[1]
    items = members(path)
    items = [edit(name, data) if i < 11 else (name, data) for i, (name, data) in enumerate(items)]
    write_members(path, items, tar_format)
    write_release_assets(release.root, resolution=release.resolution, shard_paths=list(release.shard_paths))
    return path


def _image(expression: str, replace):
    return lambda name, data: (name, replace(data)) if name.endswith(f".{expression}.jpg") else (name, data)


# kind -> (edit of the first sample's members, the message's value), one per kind of bad input
BAD_SAMPLES = {
    "truncated JPEG": (_image("frown", lambda data: data[: len(data) // 2]), r"frown\.jpg' does not end with the JPEG end-of-image marker FF D9"),
    "wrong image size (1024 in 512)": (_image("frown", lambda data: jpeg(1024, 1024)), r"frown\.jpg' is 1024x1024 pixels, not 512x512"),
    "wrong image size (37x5)": (_image("close_m_smile", lambda data: jpeg(37, 5)), r"close_m_smile\.jpg' is 37x5 pixels, not 512x512"),
    "bad JPEG header": (_image("frown", lambda data: b"\xff\xd8\xff\xda\x00\x02" + b"\x00" * 40 + b"\xff\xd9"), r"frown\.jpg' has no readable JPEG frame header: its image data starts at byte 2"),
    "JSON too large": (
        lambda name, data: (name, data + b" " * (2 * 2**20)) if name.endswith(".json") else (name, data),
        r"json' is 2,09\d,\d{3} bytes, more than the 1,048,576 a 'json' member may hold",
    ),
    "JSON nested too deeply": (
        lambda name, data: (name, b"[" * 100_000 + b"]" * 100_000) if name.endswith(".json") else (name, data),
        r"json' is JSON nested too deeply to read: b'\[\[\[\[",
    ),
    "member name not UTF-8": (lambda name, data: (name.replace("_", "_\udcff", 1), data), r"member name '[^']*\\udcff[^']*' is not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_bad_sample_is_an_error_naming_shard_sample_and_member(release, case):
    edit, message = BAD_SAMPLES[case]
    shard = damage(release, edit, tar_format=tarfile.GNU_FORMAT if "UTF-8" in case else tarfile.PAX_FORMAT)
    with pytest.raises(ReleaseError) as error:
        prepare(release.root)
    text = str(error.value)
    assert re.search(message, text), text
    assert f"file {shard.name!r}" in text and "sample '00000002_" in text and "strict=False" in text
    assert len(text) < 600


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_bad_sample_is_skipped_and_counted_when_lenient(release, case, caplog):
    edit, _ = BAD_SAMPLES[case]
    damage(release, edit, tar_format=tarfile.GNU_FORMAT if "UTF-8" in case else tarfile.PAX_FORMAT)
    with caplog.at_level(logging.WARNING, logger="reghead"):
        ds = prepare(release.root, strict=False)
    assert sorted(k for split in ds.values() for k in split["sample_key"]) == sorted(k for k in release.keys if k != release.keys[2])
    assert re.search(r"RegHead 512 \w+ split: 1 skipped \(", caplog.text)


def test_name_not_utf8_in_the_converter_is_a_one_line_error_then_skipped_when_lenient(release, tmp_path, capsys):
    damage(release, BAD_SAMPLES["member name not UTF-8"][0], tar_format=tarfile.GNU_FORMAT)
    assert main([f"--release=512={release.root}", f"--output-dir={tmp_path / 'strict'}", "--quiet", "--num-proc=1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not UTF-8" in err and "Traceback" not in err
    assert main([f"--release=512={release.root}", f"--output-dir={tmp_path / 'lenient'}", "--quiet", "--lenient"]) == 0
    converted = datasets.load_dataset(str(tmp_path / "lenient"), "512")
    assert sorted(k for split in converted.values() for k in split["sample_key"]) == sorted(k for k in release.keys if k != release.keys[2])


class Unseekable(io.RawIOBase):
    """A stream with no size and no seek, as a chunked HTTP response."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_image_header_claiming_50_gb_is_refused_before_reading(base_release):
    items = members(base_release.shard_paths[0])[:11]
    key = items[0][0].rsplit(".", 1)[0]
    data = bytearray(tar_bytes(items).rstrip(b"\0"))
    data += b"\0" * (-len(data) % 512)
    huge = tarfile.TarInfo("00000099_id099_Owl_Photorealistic_round_eyes_a_hat_0badf00d.frown.jpg")
    huge.size = 50 * 2**30
    data += huge.tobuf(format=tarfile.PAX_FORMAT) + b"\xff" * 4096
    started = time.monotonic()
    with pytest.raises(ReleaseError, match=r"frown\.jpg' is 53,687,091,200 bytes, more than the 33,554,432 a 'frown\.jpg' member may hold"):
        list(read_shard_records(io.BufferedReader(Unseekable(bytes(data))), file="huge.tar", expected_sha256=None))
    assert time.monotonic() - started < 30  # generous: proves it ends, nothing was read
    assert key  # the first sample was read whole before it


def test_jpeg_size_walks_the_marker_segments():
    assert jpeg_size(jpeg(37, 5)) == (37, 5)
    assert jpeg_size(memoryview(jpeg(512, 512))) == (512, 512)
    progressive = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (640, 48)).save(progressive, format="JPEG", progressive=True)
    assert jpeg_size(progressive.getvalue()) == (640, 48)
    assert "marker should start" in jpeg_size(b"\xff\xd8\xff\xe0\x00\x10" + b"\x00" * 14 + b"junk")
    assert "inside its header" in jpeg_size(b"\xff\xd8\xff\xe0\x00\x10")
    assert "length 0" in jpeg_size(b"\xff\xd8\xff\xe0\x00\x00" + b"\x00" * 10)
    assert "first 64 marker segments" in jpeg_size(b"\xff\xd8" + b"\xff\xfe\x00\x02" * 100)


def test_jpeg_size_remembers_the_last_header_only_for_the_same_bytes():
    small, large = jpeg(37, 5), jpeg(512, 512)
    assert [jpeg_size(data) for data in (large, large, small, large)] == [(512, 512), (512, 512), (37, 5), (512, 512)]
    frame_end = large.index(b"\xff\xc0") + 9
    assert "inside its frame header" in jpeg_size(large[: frame_end - 1])  # one byte short of the remembered header
    assert jpeg_size(large[:frame_end]) == (512, 512)
    same_start_other_size = large[: frame_end - 4] + (640).to_bytes(2, "big") + (48).to_bytes(2, "big") + large[frame_end:]
    assert jpeg_size(same_start_other_size) == (48, 640)


def test_image_size_is_not_compared_without_a_resolution(base_release):
    records = list(read_shard_records(open(base_release.shard_paths[0], "rb"), file="s.tar", expected_sha256=None))
    assert len(records) == 2
    problems = Problems()
    with pytest.raises(ReleaseError, match="is 512x512 pixels, not 1024x1024"):
        list(read_shard_records(open(base_release.shard_paths[0], "rb"), file="s.tar", expected_sha256=None, problems=problems, resolution=1024))


# --- assets ------------------------------------------------------------------------------------


def write_checksums(root: Path, text: bytes | None = None, *, members_: list[tuple[tarfile.TarInfo, bytes]] | None = None) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members_ or [(tarfile.TarInfo(SHA256SUMS_MEMBER), text)]:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (root / CHECKSUMS_ASSET).write_bytes(gzip.compress(buffer.getvalue(), mtime=0))


def sums_text(root: Path) -> bytes:
    with tarfile.open(root / CHECKSUMS_ASSET) as archive:
        return archive.extractfile(SHA256SUMS_MEMBER).read()


def test_shard_listed_twice_with_two_hashes_is_refused(release):
    text = sums_text(release.root)
    first = text.splitlines()[0]
    write_checksums(release.root, text + bytes(reversed(first[:64])) + first[64:] + b"\n")
    with pytest.raises(ReleaseError, match=r"SHA256SUMS'?: shard 'reghead-v1-512-000000.tar' is listed twice with different hashes: [0-9a-f]{64} on line 1, [0-9a-f]{64} on line 4"):
        prepare(release.root)


def test_shard_listed_twice_with_the_same_hash_is_fine(release):
    text = sums_text(release.root)
    write_checksums(release.root, text + text.splitlines()[0] + b"\n")
    assert sum(len(split) for split in prepare(release.root).values()) == len(release.keys)


def zero_bomb(first: bytes, inflated: int) -> bytes:
    """A gzip file: `first`, then `inflated` zero bytes, in about inflated / 1000 bytes (gzip members chained)."""
    block = gzip.compress(bytes(16 * 2**20), compresslevel=9, mtime=0)
    return gzip.compress(first, mtime=0) + block * (inflated // (16 * 2**20))


@pytest.mark.parametrize("claimed", [True, False])
def test_checksums_bomb_stops_early_with_a_short_message(release, claimed):
    """1 MiB of checksums.tar.gz inflating to 1 GiB: its member header says so, or an unwanted member hides it."""
    info = tarfile.TarInfo(SHA256SUMS_MEMBER if claimed else "checksums/padding")
    info.size = 2**30
    bomb = zero_bomb(info.tobuf(format=tarfile.PAX_FORMAT), 2**30)
    assert len(bomb) < 2 * 2**20
    (release.root / CHECKSUMS_ASSET).write_bytes(bomb)
    started = time.monotonic()
    with pytest.raises(ReleaseError) as error:
        read_local_index(release.root)
    assert time.monotonic() - started < 30  # generous: inflating 1 GiB would take far longer on CI
    expected = "is 1,073,741,824 bytes, more than the 1,048,576 bytes it may hold" if claimed else "inflates to more than"
    assert expected in str(error.value) and CHECKSUMS_ASSET in str(error.value)
    assert len(str(error.value)) < 300


def test_extracted_checksums_too_large_are_refused_before_reading(release):
    (release.root / "checksums").mkdir()
    (release.root / SHA256SUMS_MEMBER).write_bytes(b"0" * (MAX_MEMBER_BYTES[SHA256SUMS_MEMBER] + 1))
    with pytest.raises(ReleaseError, match=r"SHA256SUMS is 1,048,577 bytes, more than the 1,048,576 bytes it may hold"):
        read_local_index(release.root)


def test_a_bad_line_is_quoted_short(release):
    write_checksums(release.root, b"x" * 500_000 + b"\n")
    with pytest.raises(ReleaseError, match=r"line 1 is not '<sha256>  <path>': 'xxxx") as error:
        read_local_index(release.root)
    assert len(str(error.value)) < 300


def test_remote_asset_larger_than_its_bound_stops_early(tmp_path):
    folder = tmp_path / "site" / "reghead-webdataset-v1-512"
    folder.mkdir(parents=True)
    (folder / CHECKSUMS_ASSET).write_bytes(b"\x1f\x8b" + bytes(64 * 2**20))
    with RangeFileServer(tmp_path / "site") as server:
        with pytest.raises(ReleaseError, match=r"checksums.tar.gz'?: is more than 5,242,880 bytes"):
            read_remote_index(f"{server.url}/reghead-webdataset-v1-512")
        # the client stops at the bound; what the server got out is that plus the sockets' buffers
        assert server.bytes_sent < 32 * 2**20


def test_sample_index_rows_deeply_nested_are_a_short_error():
    with pytest.raises(ReleaseError, match=r"line 2.*nested too deeply") as error:
        sample_index_identities('{"identity": "id0_Owl_Photorealistic_x_a_y"}\n' + "[" * 100_000 + "]" * 100_000, file="m")
    assert len(str(error.value)) < 300


def test_sample_index_rows_with_unknown_key_names():
    rows = [
        {"identity": "id0_A_Photorealistic_x_a_y"},
        {"name": "id1_B_Photorealistic_x_a_y", "count": 10},
        {"key": "00000002_id2_C_Photorealistic_x_a_y_0badf00d", "shard": "data/reghead-v1-512-000000.tar"},
        "id3_D_Photorealistic_x_a_y",
        {"nothing": 1},
    ]
    text = "\n".join(json.dumps(row) for row in rows)
    assert sample_index_identities(text, file="m") == ("id0_A_Photorealistic_x_a_y", "id1_B_Photorealistic_x_a_y", "id2_C_Photorealistic_x_a_y", "id3_D_Photorealistic_x_a_y")


# --- summaries ---------------------------------------------------------------------------------


def header_only_jpeg() -> bytes:
    """A small JPEG whose frame header says 512x512 (its pixels are 8x8: nothing here decodes it)."""
    data = bytearray(jpeg(8, 8))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (512).to_bytes(2, "big") * 2
    return bytes(data)


def many_identities(count: int) -> list[str]:
    """Article-less accessories (resolved by the vocabulary), fallbacks, names the vocabulary
    cannot settle and unparsed names among clean ones."""
    names = []
    for i in range(count):
        if i % 10 == 3:
            names.append(f"id{i:03d}_Owl_Photorealistic_round_eyes_gold_hoop_earrings")
        elif i % 10 == 9:  # `spotted fur` is never seen alone: it could end with `gold hoop earrings`
            names.append(f"id{i:03d}_Mole_Photorealistic_spotted_fur_gold_hoop_earrings_a_wreath")
        elif i % 10 == 6:
            names.append(f"id{i:03d}_St._Bernard_Photorealistic_fluffy_cheeks_sunglasses_a_party_hat")
        elif i % 50 == 7:
            names.append(f"id{i:03d}_Mole_Watercolour_spotted_fur_sunglasses")
        else:
            names.append(f"id{i:03d}_Mr._Toad_Plastic_Toy_Render_{'round_eyes' if i % 2 else 'fluffy_cheeks'}_a_wreath")
    return names


def write_many(root: Path, names: list[str], *, per_shard: int, bad_every: int) -> None:
    image = header_only_jpeg()
    shard_paths = []
    (root / "data").mkdir(parents=True)
    for first in range(0, len(names), per_shard):
        path = root / "data" / f"reghead-v1-512-{len(shard_paths):06d}.tar"
        items = []
        for position in range(first, min(first + per_shard, len(names))):
            key = sample_key(position, names[position])
            items.append((f"{key}.json", sample_json(key, names[position])))
            for expression in EXPRESSIONS:
                cut = position % bad_every == 5 and expression == "frown"
                items.append((f"{key}.{expression}.jpg", image[:-2] if cut else image))
        write_members(path, items)
        shard_paths.append(path)
    write_release_assets(root, resolution=512, shard_paths=shard_paths)


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    root = tmp_path_factory.mktemp("many") / "release"
    write_many(root, many_identities(2_000), per_shard=500, bad_every=100)
    return root


def reghead_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "reghead" and r.levelno >= logging.WARNING]


def test_thousands_of_identities_log_a_handful_of_summary_lines(many, caplog):
    with caplog.at_level(logging.DEBUG, logger="reghead"):
        ds = prepare(many, strict=False)
    assert sum(len(split) for split in ds.values()) == 2_000 - 20
    lines = reghead_warnings(caplog)
    # per split: the counts, then one line per kind (skipped truncated JPEG, noted ambiguous and unparsed identity)
    assert len(lines) <= 3 * 4, lines
    train = [line for line in lines if line.startswith("RegHead 512 train split")]
    assert re.match(r"RegHead 512 train split: \d+ skipped \(truncated JPEG\), \d+ noted \(ambiguous identity\), \d+ noted \(unparsed identity\)$", train[0])
    assert re.match(r"RegHead 512 train split: skipped [\d,]+ samples \(truncated JPEG\); the first 3: file 'reghead-v1-512-000000.tar', sample '00000005_", train[1])
    assert re.match(r"RegHead 512 train split: noted [\d,]+ samples \(ambiguous identity\); the first 3: .*feature 'spotted fur gold hoop earrings' is kept whole", train[2])
    assert "noted" in train[3] and "no known style" in train[3]
    debug = [r for r in caplog.records if r.name == "reghead" and r.levelno == logging.DEBUG]
    assert len(debug) >= 20  # the detail of each sample, at debug level only
    rows = {row["identity"]: row for row in ds["train"].select_columns(["identity", "feature", "accessories"])}
    resolved = next(row for name, row in rows.items() if name.endswith("gold_hoop_earrings"))
    assert (resolved["feature"], resolved["accessories"]) == ("round eyes", ["gold hoop earrings"])


def test_datasets_verbosity_error_silences_the_summaries(release, caplog):
    damage(release, _image("frown", lambda data: data[: len(data) // 2]))
    datasets.logging.set_verbosity_error()
    try:
        with caplog.at_level(logging.WARNING, logger="reghead"):
            prepare(release.root, strict=False)
    finally:
        datasets.logging.set_verbosity_warning()
    assert reghead_warnings(caplog) == []


def test_converter_summarises_each_shard_job_and_quiet_silences_it(release, tmp_path, caplog):
    damage(release, _image("frown", lambda data: data[: len(data) // 2]))
    with caplog.at_level(logging.WARNING, logger="reghead"):
        assert main([f"--release=512={release.root}", f"--output-dir={tmp_path / 'a'}", "--lenient", "--num-proc=1"]) == 0
    lines = reghead_warnings(caplog)
    assert lines == [
        "512 reghead-v1-512-000001.tar: 1 skipped (truncated JPEG)",
        lines[1],
    ] and lines[1].startswith("512 reghead-v1-512-000001.tar: skipped a sample (truncated JPEG): file 'reghead-v1-512-000001.tar', sample '00000002_")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="reghead"):
        assert main([f"--release=512={release.root}", f"--output-dir={tmp_path / 'b'}", "--lenient", "--quiet"]) == 0
    assert reghead_warnings(caplog) == []


def test_512_shards_renamed_1024_are_refused(release):
    renamed = []
    for path in release.shard_paths:
        target = path.with_name(path.name.replace("-512-", "-1024-"))
        path.rename(target)
        renamed.append(target)
    write_release_assets(release.root, resolution=1024, shard_paths=renamed)
    with pytest.raises(ReleaseError, match=r"file 'reghead-v1-1024-000000.tar', sample '00000000_.*' is 512x512 pixels, not 1024x1024 as in the 1024 release"):
        RegHead(config_name="1024", data_dir=str(release.root)).download_and_prepare()
