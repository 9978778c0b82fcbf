"""Bad input and faults: each case of docs/RELIABILITY.md, built from a sample release in tmp_path."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reghead_release.http as reghead_http
from conftest import ALICE_TOKEN, all_keys, keys_read, members, prepare, publish, tar_bytes, write_members
from convert import conversion
from convert.push import main
from convert.upload import PushError, push_folder
from http_server import Fault, RangeFileServer
from reghead import EXPRESSIONS, RegHead, ReleaseError
from reghead_release.errors import Problems
from reghead_release.reader import read_shard_rows
from reghead_release.sample import write_release_assets, write_sample_release

REPO = Path(__file__).resolve().parent.parent


# --- building bad releases ---------------------------------------------------------------------


@pytest.fixture
def release(tmp_path):
    return write_sample_release(tmp_path / "release", num_identities=6, samples_per_shard=2)


def damage(release, edit, shard: int = 1) -> Path:
    """Rewrite one shard's members with `edit(members) -> members`, with matching checksums."""
    path = release.shard_paths[shard]
    write_members(path, edit(members(path)))
    write_release_assets(release.root, resolution=release.resolution, shard_paths=list(release.shard_paths))
    return path


# --- shards and assets -------------------------------------------------------------------------


@pytest.mark.parametrize("verify", [True, False])
def test_shard_truncated_mid_member(release, verify):
    shard = release.shard_paths[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ReleaseError, match=rf"{shard.name}.*(truncated|manifest says)"):
        prepare(release.root, verify_checksums=verify)


def test_truncated_shard_without_a_manifest_size_is_caught_by_the_reader(release):
    shard = release.shard_paths[0]
    data = shard.read_bytes()
    with pytest.raises(ReleaseError, match="truncated"):
        list(read_shard_rows(io.BytesIO(data[: len(data) // 2]), file=shard.name, expected_sha256=None))


def test_shard_checksum_mismatch(release):
    shard = release.shard_paths[2]
    data = bytearray(shard.read_bytes())
    data[5000] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match=rf"{shard.name}.*SHA-256 mismatch: SHA256SUMS expects [0-9a-f]{{64}}, the shard has [0-9a-f]{{64}}"):
        prepare(release.root)


def test_shard_listed_but_missing(release):
    release.shard_paths[1].unlink()
    with pytest.raises(ReleaseError, match=rf"{release.shard_paths[1].name}.*listed in SHA256SUMS"):
        prepare(release.root)


def test_extra_shard_not_in_the_manifest_is_ignored_with_a_warning(release, caplog):
    extra = release.root / "data" / "reghead-v1-512-000099.tar"
    extra.write_bytes(release.shard_paths[0].read_bytes())
    with caplog.at_level(logging.WARNING, logger="reghead"):
        ds = prepare(release.root)
    assert all_keys(ds) == sorted(release.keys)
    assert "reghead-v1-512-000099.tar is not listed" in caplog.text


def test_corrupt_metadata_archive(release):
    (release.root / "metadata.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    with pytest.raises(ReleaseError, match="metadata.tar.gz.*damaged"):
        prepare(release.root)


def test_empty_shard(release):
    damage(release, lambda items: [])
    with pytest.raises(ReleaseError, match=rf"{release.shard_paths[1].name}.*holds no samples"):
        prepare(release.root)


def test_zero_byte_shard(release):
    release.shard_paths[1].write_bytes(b"")
    write_release_assets(release.root, resolution=512, shard_paths=list(release.shard_paths))
    with pytest.raises(ReleaseError, match="holds no samples"):
        prepare(release.root)


# --- single samples: strict raises, lenient skips and counts -----------------------------------


def _not_a_jpeg(items):
    return [(n, b"GIF89a not a jpeg" if n.endswith(".close_m_smile.jpg") and i < 11 else d) for i, (n, d) in enumerate(items)]


def _invalid_json(items):
    return [(n, b"{not json" if n.endswith(".json") and i < 11 else d) for i, (n, d) in enumerate(items)]


def _other_identity(items):
    def edit(data: bytes) -> bytes:
        record = json.loads(data)
        record["identity"] = "id999_Someone_Photorealistic_else_a_hat"
        return json.dumps(record).encode()

    return [(n, edit(d) if n.endswith(".json") and i < 11 else d) for i, (n, d) in enumerate(items)]


def _unsafe_names(items):
    key = items[0][0].split(".")[0]
    return [("../" + n if n.startswith(key) else n, d) for n, d in items]


def _absolute_names(items):
    key = items[0][0].split(".")[0]
    return [("/tmp/" + n if n.startswith(key) else n, d) for n, d in items]


BAD_SAMPLES = {
    "missing field": (lambda items: [(n, d) for i, (n, d) in enumerate(items) if not (i < 11 and n.endswith(".frown.jpg"))], "has no \\['frown.jpg'\\]"),
    "not a JPEG": (_not_a_jpeg, "is not a JPEG \\(it starts with b'GIF89a"),
    "invalid JSON": (_invalid_json, "is not valid JSON"),
    "identity mismatch": (_other_identity, "the JSON names identity 'id999_Someone"),
    "unsafe member name": (_unsafe_names, "absolute or climbs out"),
    "absolute member name": (_absolute_names, "absolute or climbs out"),
}


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_bad_sample_raises_when_strict(release, case):
    edit, message = BAD_SAMPLES[case]
    shard = damage(release, edit)
    with pytest.raises(ReleaseError, match=message) as error:
        prepare(release.root)
    assert shard.name in str(error.value) and "strict=False" in str(error.value)


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_bad_sample_is_skipped_and_counted_when_lenient(release, case, caplog):
    edit, _ = BAD_SAMPLES[case]
    damage(release, edit)
    with caplog.at_level(logging.WARNING, logger="reghead"):
        ds = prepare(release.root, strict=False)
    first_of_shard = release.keys[2]  # the first sample of the damaged shard
    assert all_keys(ds) == sorted(k for k in release.keys if k != first_of_shard)
    assert "skipped a sample" in caplog.text
    assert re.search(r"(?<!\d)1 skipped", caplog.text)


def test_unsafe_member_names_are_never_written(release, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "release")
    damage(release, _unsafe_names)
    prepare(release.root, strict=False)
    escaped = release.keys[2] + ".frown.jpg"
    assert not (tmp_path / escaped).exists() and not Path("/tmp", escaped).exists()


def test_metadata_archive_with_unsafe_members_is_read_not_extracted(release, tmp_path):
    target = tmp_path / "evil.txt"
    with tarfile.open(release.root / "metadata.tar.gz", "w:gz") as archive:
        for name, data in [("../evil.txt", b"x"), (str(target), b"x")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    prepare(release.root)  # the manifest is optional: SHA256SUMS still lists the shards
    assert not target.exists() and not (release.root.parent / "evil.txt").exists()


def test_unknown_extra_field_is_ignored_with_a_note(release, caplog):
    damage(release, lambda items: [*items[:11], (items[0][0].split(".")[0] + ".depth.png", b"\x89PNG"), *items[11:]])
    with caplog.at_level(logging.WARNING, logger="reghead"):
        ds = prepare(release.root)
    assert all_keys(ds) == sorted(release.keys)
    assert "unknown field 'depth.png' is ignored" in caplog.text


def test_same_key_in_two_shards(release):
    first = members(release.shard_paths[0])[:11]
    damage(release, lambda items: items + first, shard=2)
    with pytest.raises(ReleaseError, match=rf"already read in shard '{release.shard_paths[0].name}'"):
        prepare(release.root)


def test_same_key_in_two_shards_stops_the_converter(release, tmp_path, capsys):
    first = members(release.shard_paths[0])[:11]
    damage(release, lambda items: items + first, shard=2)
    assert main([f"--release=512={release.root}", f"--output-dir={tmp_path / 'out'}", "--quiet", "--num-proc=1"]) == 1
    assert "is in shard" in capsys.readouterr().err


def test_key_that_does_not_match_the_pattern_is_kept_and_reported(tmp_path, caplog):
    release = write_sample_release(tmp_path / "r", identities=["id3_Owl_Watercolour_big_eyes_a_hat", "Not-An-Identity"], samples_per_shard=2)
    with caplog.at_level(logging.WARNING, logger="reghead"):
        ds = prepare(release.root)
    rows = {row["identity"]: row for split in ds.values() for row in split}
    assert set(rows) == {"id3_Owl_Watercolour_big_eyes_a_hat", "Not-An-Identity"}
    assert (rows["id3_Owl_Watercolour_big_eyes_a_hat"]["identity_index"], rows["id3_Owl_Watercolour_big_eyes_a_hat"]["style"]) == (3, None)
    assert rows["Not-An-Identity"]["identity_index"] is None
    assert "no known style" in caplog.text and "does not start with 'id<digits>_'" in caplog.text
    assert "noted (unparsed identity)" in caplog.text


# --- the converter under faults ----------------------------------------------------------------


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """The folder's files; the card names the folder it is in (its snippets read it), so that is left out."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes().replace(folder.as_posix().encode(), b"<out>")
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def final_parquet(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*-of-*.parquet"))


@pytest.fixture
def big_release(tmp_path):
    """Enough shards that a run can be stopped half way."""
    return write_sample_release(tmp_path / "big", resolution=1024, num_identities=24, samples_per_shard=2)


def test_disk_full_then_rerun(big_release, tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    assert main([f"--release=1024={big_release.root}", f"--output-dir={reference}", "--quiet", "--num-proc=1"]) == 0
    out = tmp_path / "out"
    real_write = pq.ParquetWriter.write_table
    writes = []

    def write_until_full(self, *args, **kwargs):
        writes.append(1)
        if len(writes) == 7:
            raise OSError(28, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_until_full)
    assert main([f"--release=1024={big_release.root}", f"--output-dir={out}", "--quiet", "--num-proc=1"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert final_parquet(out) == [] and not (out / "README.md").exists()
    assert not list(out.rglob("*.tmp")), "the part being written is removed"
    monkeypatch.setattr(pq.ParquetWriter, "write_table", real_write)
    assert main([f"--release=1024={big_release.root}", f"--output-dir={out}", "--quiet", "--num-proc=1"]) == 0
    assert folder_bytes(out) == folder_bytes(reference)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_signal_mid_run_then_rerun(big_release, tmp_path, sig):
    command = [sys.executable, str(REPO / "convert" / "push.py"), f"--release=1024={big_release.root}", "--quiet"]
    reference = tmp_path / "reference"
    subprocess.run([*command, f"--output-dir={reference}"], check=True)
    out = tmp_path / "out"
    run = subprocess.Popen([*command, f"--output-dir={out}", "--num-proc=2"])
    records = out / conversion.WORK_DIR / "1024"
    deadline = time.monotonic() + 60
    while not list(records.glob("*.json")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(sig)
    run.wait(timeout=60)
    assert run.returncode != 0, "the run was stopped before it finished"
    for path in final_parquet(out):
        assert pq.ParquetFile(path).metadata.num_rows > 0  # any file with a final name is complete
    assert not (out / "README.md").exists()
    time.sleep(0.5)  # workers die with the run: nothing may still be writing
    subprocess.run([*command, f"--output-dir={out}"], check=True)
    assert folder_bytes(out) == folder_bytes(reference)


def test_two_runs_on_one_folder_are_refused(release, tmp_path, capsys):
    out = tmp_path / "out"
    with conversion.exclusive_output(out):
        assert main([f"--release=512={release.root}", f"--output-dir={out}", "--quiet"]) == 1
    assert "another conversion is writing to this folder" in capsys.readouterr().err


# --- the network --------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path, release, monkeypatch):
    monkeypatch.setattr(reghead_http, "BACKOFF_SECONDS", 0.01)
    publish(release.root, tmp_path / "site", 512)
    with RangeFileServer(tmp_path / "site") as server:
        yield server


def test_404_asset_names_the_url_and_tag(site):
    (Path(site.root) / "reghead-webdataset-v1-512" / "metadata.tar.gz").unlink()
    with pytest.raises(ReleaseError, match=r"'metadata.tar.gz' of release 'reghead-webdataset-v1-512'.*/reghead-webdataset-v1-512/metadata.tar.gz answered HTTP 404"):
        RegHead(config_name="512", base_url=site.url).as_streaming_dataset()


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried(site, release, status):
    shard = release.shard_paths[1].name
    site.fail_next(shard, Fault(status=status), times=2)
    ds = RegHead(config_name="512", base_url=site.url)
    ds.download_and_prepare()
    assert all_keys(ds.as_dataset()) == sorted(release.keys)
    assert sum(1 for _, path, _ in site.requests if path.endswith(shard)) == 3


def test_server_errors_give_up_after_bounded_attempts(site, release, monkeypatch):
    monkeypatch.setattr(reghead_http, "MAX_ATTEMPTS", 3)
    site.fail_next(release.shard_paths[0].name, Fault(status=503), times=10)
    with pytest.raises(ReleaseError, match="HTTP 503; gave up after 3 attempts"):
        RegHead(config_name="512", base_url=site.url).download_and_prepare()


@pytest.mark.parametrize("streaming", [False, True])
def test_connection_dropped_mid_shard_is_resumed_with_range(site, release, streaming):
    shard = release.shard_paths[1].name
    site.fail_next(shard, Fault(drop_after=100_000))
    builder = RegHead(config_name="512", base_url=site.url)
    keys = keys_read(builder, streaming=streaming)
    assert keys == sorted(release.keys)
    assert (("GET", f"/reghead-webdataset-v1-512/{shard}", "bytes=100000-") in site.requests)


def test_slow_server_times_out_with_a_clear_error(site, release, monkeypatch):
    monkeypatch.setattr(reghead_http, "TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(reghead_http, "MAX_ATTEMPTS", 2)
    site.fail_next(release.shard_paths[0].name, Fault(delay=2), times=2)
    started = time.monotonic()
    with pytest.raises(ReleaseError, match="no response.*timed out.*gave up after 2 attempts"):
        list(RegHead(config_name="512", base_url=site.url).as_streaming_dataset(split="train"))
    assert time.monotonic() - started < 10


# --- the Hub -------------------------------------------------------------------------------------


@pytest.fixture
def converted(release, tmp_path):
    out = tmp_path / "converted"
    assert main([f"--release=512={release.root}", f"--output-dir={out}", "--quiet", "--num-proc=1"]) == 0
    return out


def test_missing_token(hub, converted):
    with pytest.raises(PushError, match="HTTP 401.*pass a token with write access"):
        push_folder(converted, repo_id="alice/reghead", token=False)


def test_wrong_token_never_appears(hub, converted, caplog):
    secret = "hf_this_is_a_secret_token"
    with caplog.at_level(logging.DEBUG), pytest.raises(PushError) as error:
        push_folder(converted, repo_id="alice/reghead", token=secret)
    shown = "".join(traceback.format_exception(error.value)) + caplog.text
    assert secret not in shown and "401" in str(error.value)


def test_existing_repo_is_reused(hub, converted):
    from huggingface_hub import HfApi

    HfApi(token=ALICE_TOKEN).create_repo("alice/reghead", repo_type="dataset")
    push_folder(converted, repo_id="alice/reghead", token=ALICE_TOKEN)
    assert "README.md" in HfApi().list_repo_files("alice/reghead", repo_type="dataset")


def test_parent_moved_during_the_push_is_retried(hub, converted):
    hub.fail_next("POST", "/commit/", status=412)
    result = push_folder(converted, repo_id="alice/reghead", token=ALICE_TOKEN)
    assert result.commits and hub.count("POST", "/commit/") == len(result.commits) + 1


def test_upload_cut_off_then_rerun_sends_only_what_is_missing(hub, converted):
    hub.fail_next("POST", "/commit/", status=400, message="the connection was cut")  # blobs sent, commit lost
    with pytest.raises(PushError):
        push_folder(converted, repo_id="alice/reghead", token=ALICE_TOKEN)
    sent_first = hub.count("PUT")
    assert sent_first > 0
    push_folder(converted, repo_id="alice/reghead", token=ALICE_TOKEN)
    lfs_files = len(list(converted.rglob("*.parquet"))) + 1  # + the preview
    assert hub.count("PUT") - sent_first == lfs_files - sent_first


# --- fuzzing the reader --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_shard(tmp_path_factory):
    release = write_sample_release(tmp_path_factory.mktemp("fuzz"), num_identities=3, samples_per_shard=3)
    data = release.shard_paths[0].read_bytes()
    return data, members(release.shard_paths[0])


def check_rows_against_tar(data: bytes, rows: list[dict]) -> None:
    """Every yielded byte is the tar member's byte, as Python's tarfile reads the same data."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            truth = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}
    except tarfile.TarError:
        truth = None
    for row in rows:
        for expression in EXPRESSIONS:
            if truth is not None and row[expression]["path"] in truth:
                assert row[expression]["bytes"] == truth[row[expression]["path"]]


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_shards_give_correct_rows_or_a_release_error(fuzz_shard, data):
    original, _ = fuzz_shard
    mutated = bytearray(original)
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "zero_header"]))
    position = data.draw(st.integers(0, len(original) - 1))
    if kind == "flip":
        mutated[position] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del mutated[position:]
    elif kind == "insert":
        mutated[position:position] = data.draw(st.binary(min_size=1, max_size=700))
    else:
        block = position - position % 512
        mutated[block : block + 512] = bytes(512)
    for verify in (True, False):
        rows = []
        try:
            for row in read_shard_rows(
                io.BytesIO(bytes(mutated)),
                file="fuzz.tar",
                expected_sha256=hashlib.sha256(original).hexdigest() if verify else None,
                problems=Problems(strict=data.draw(st.booleans())),
            ):
                rows.append(row)
        except ReleaseError:
            pass
        else:
            if verify:
                assert bytes(mutated) == original, "a verified read of changed bytes must raise"
        check_rows_against_tar(bytes(mutated), rows)


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_json_gives_correct_rows_or_a_release_error(fuzz_shard, data):
    _, items = fuzz_shard
    json_index = next(i for i, (name, _) in enumerate(items) if name.endswith(".json"))
    text = items[json_index][1]
    new = data.draw(st.one_of(st.binary(max_size=200), st.just(text[: data.draw(st.integers(0, len(text)))])))
    edited = list(items)
    edited[json_index] = (items[json_index][0], new)
    shard = tar_bytes(edited)
    try:
        rows = list(read_shard_rows(io.BytesIO(shard), file="fuzz.tar", expected_sha256=None))
    except ReleaseError:
        return
    key = items[json_index][0].split(".")[0]
    row = next(r for r in rows if r["sample_key"] == key)
    assert row["sample_json"].encode("utf-8") == new
    check_rows_against_tar(shard, rows)


def _with_checksum(block: bytearray) -> None:
    """Give a header block the checksum of its bytes, so that a changed field is believed."""
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)


HEADER_EDITS = {
    # name: edit(header block, rng) -> None; the checksum is recomputed afterwards
    "size octal": lambda block, rng: block.__setitem__(slice(124, 136), b"%011o\0" % rng.choice([0, 1, 511, 513, 10**6, 8**11 - 1])),
    "size negative": lambda block, rng: block.__setitem__(slice(124, 136), b"-%010o\0" % rng.randrange(1, 10**6)),
    "size base 256": lambda block, rng: block.__setitem__(slice(124, 136), bytes([rng.choice([0x80, 0xFF])]) + rng.randbytes(11)),
    "size garbage": lambda block, rng: block.__setitem__(slice(124, 136), rng.randbytes(12)),
    "type": lambda block, rng: block.__setitem__(156, rng.choice(b"0125KLSxgV\0")),
}
PAX_DIGITS = [b"0", b"00", b"-5", b"1", b"9999", b"", b"x"]


@pytest.mark.timeout(120)
def test_fuzzed_header_fields_end_in_rows_or_a_release_error(fuzz_shard):
    """Sizes, types, checksums and pax record lengths of a real shard's headers changed: every read ends.

    A seeded loop, bounded in count: each case is read verified and not, from a file that can seek
    (unverified reads seek over what they skip) and from one that cannot.
    """
    import random

    original, _ = fuzz_shard
    with tarfile.open(fileobj=io.BytesIO(original)) as archive:
        headers = [(m.offset, m.offset_data, bool(m.pax_headers)) for m in archive]
    rng = random.Random(14)
    for case in range(250):
        mutated = bytearray(original)
        header_at, data_at, has_pax = rng.choice(headers)
        block_at = data_at - tarfile.BLOCKSIZE  # the member's own header, after any pax header
        kind = rng.choice([*HEADER_EDITS, "checksum", "pax digits"] if has_pax else [*HEADER_EDITS, "checksum"])
        if kind == "pax digits":
            pax_data = header_at + tarfile.BLOCKSIZE
            digits = bytes(mutated[pax_data : pax_data + 20]).split(b" ", 1)[0]
            new = rng.choice(PAX_DIGITS)
            mutated[pax_data : pax_data + len(digits)] = new.ljust(len(digits), b"0")[: len(digits)] if new else b" " * len(digits)
        elif kind == "checksum":
            mutated[block_at + 148 : block_at + 156] = b"%06o\0 " % rng.randrange(8**6)
        else:
            block = bytearray(mutated[block_at : block_at + tarfile.BLOCKSIZE])
            HEADER_EDITS[kind](block, rng)
            _with_checksum(block)
            mutated[block_at : block_at + tarfile.BLOCKSIZE] = block
        data = bytes(mutated)
        for verify in (True, False):
            for raw in (io.BytesIO(data), io.BufferedReader(io.BytesIO(data))):
                raw.seekable = (lambda: False) if isinstance(raw, io.BufferedReader) else raw.seekable
                rows = []
                try:
                    for row in read_shard_rows(
                        raw, file="fuzz.tar", expected_sha256=hashlib.sha256(original).hexdigest() if verify else None
                    ):
                        rows.append(row)
                except ReleaseError:
                    continue
                assert not verify or data == original, f"case {case} ({kind}): a verified read of changed bytes must raise"
                check_rows_against_tar(data, rows)
