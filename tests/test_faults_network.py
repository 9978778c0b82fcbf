"""Network faults as servers and GitHub really produce them, against loopback servers only.

Drips, deadlines, error pages with status 200, bodies that are not the asset, sizes other than the
manifest's, cached downloads that were never verified, signed URLs that expire, Retry-After,
credentials and signed tokens that must never be shown, a cache folder that cannot be written.
"""

from __future__ import annotations

import hashlib
import logging
import time
import tracemalloc
import traceback
from pathlib import Path

import pytest

import reghead_release.http as reghead_http
from conftest import all_keys, keys_read, publish
from http_server import SIGNED_PREFIX, Fault, RangeFileServer
from reghead import RegHead, ReleaseError
from reghead_release.http import HttpFile, download, redact
from reghead_release.sample import write_sample_release

TAG = "reghead-webdataset-v1-512"
SECRET = "pa55w0rd-secret"


@pytest.fixture
def release(tmp_path):
    return write_sample_release(tmp_path / "release", num_identities=6, samples_per_shard=2)


@pytest.fixture(autouse=True)
def patient_but_quick(monkeypatch):
    """Retries without waiting; rate windows short enough that a drip is seen in a fraction of a second."""
    monkeypatch.setattr(reghead_http, "BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(reghead_http, "RATE_WINDOW_SECONDS", 0.3)
    monkeypatch.setattr(reghead_http, "MIN_RATE", 20_000)


def serve(release, tmp_path, **options) -> RangeFileServer:
    publish(release.root, tmp_path / "site", 512)
    return RangeFileServer(tmp_path / "site", **options)


@pytest.fixture
def site(release, tmp_path):
    with serve(release, tmp_path) as server:
        yield server


@pytest.fixture
def signed_site(release, tmp_path):
    with serve(release, tmp_path, signed_ttl=300.0) as server:
        yield server


def prepared_keys(base_url: str, **kwargs) -> list[str]:
    builder = RegHead(config_name="512", base_url=base_url, **kwargs)
    builder.download_and_prepare()
    return all_keys(builder.as_dataset())


def cached_files(cache: Path) -> dict[str, bytes]:
    folder = cache / "downloads" / "reghead" / TAG
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*"))} if folder.is_dir() else {}


# --- time bounds --------------------------------------------------------------------------------


def test_drip_is_dropped_retried_then_reported(site, monkeypatch):
    monkeypatch.setattr(reghead_http, "MAX_ATTEMPTS", 2)
    site.fail_next("checksums.tar.gz", Fault(drip=(4, 0.05)), times=2)  # 80 bytes/s
    started = time.monotonic()
    with pytest.raises(ReleaseError, match=r"checksums.tar.gz.*bytes/s, under the minimum of 20000 \(REGHEAD_HTTP_MIN_RATE\); gave up after 2 attempts"):
        RegHead(config_name="512", base_url=site.url).as_streaming_dataset()
    assert time.monotonic() - started < 30  # it ends: two windows, not the whole drip


def test_a_drip_that_gives_some_bytes_each_time_still_ends(site, release, monkeypatch):
    monkeypatch.setattr(reghead_http, "MAX_ATTEMPTS", 3)
    shard = release.shard_paths[0].name
    site.fail_next(shard, Fault(drip=(200, 0.02)), times=20)  # 10 kB/s, resumed each time from further on
    started = time.monotonic()
    with pytest.raises(ReleaseError, match=rf"{shard}.*under the minimum of 20000 \(REGHEAD_HTTP_MIN_RATE\); gave up after 3 attempts"):
        list(RegHead(config_name="512", base_url=site.url).as_streaming_dataset(split="train"))
    assert time.monotonic() - started < 30


def test_drip_once_is_resumed_from_where_it_was(site, release):
    shard = release.shard_paths[1].name
    site.fail_next(shard, Fault(drip=(200, 0.02)))
    assert prepared_keys(site.url) == sorted(release.keys)
    resumed = [r for m, path, r in site.requests if path.endswith(shard) and r is not None]
    assert resumed and int(resumed[0].removeprefix("bytes=").rstrip("-")) > 0


def test_total_deadline_per_asset(site, monkeypatch):
    monkeypatch.setattr(reghead_http, "MIN_RATE", 0)  # the rate never fails: only the deadline can end it
    monkeypatch.setattr(reghead_http, "DEADLINE_SECONDS", 0.5)
    site.fail_next("checksums.tar.gz", Fault(drip=(4, 0.05)))
    with pytest.raises(ReleaseError, match=r"checksums.tar.gz.*network time at byte \d+, over the deadline of 0 s per asset.*REGHEAD_HTTP_DEADLINE"):
        RegHead(config_name="512", base_url=site.url).as_streaming_dataset()


def test_retry_after_is_honoured(site, release, monkeypatch):
    waits = []
    real_sleep = time.sleep
    monkeypatch.setattr(reghead_http.time, "sleep", lambda s: (waits.append(s), real_sleep(min(s, 0.01))))
    site.fail_next(release.shard_paths[0].name, Fault(status=429, retry_after=7))
    assert prepared_keys(site.url) == sorted(release.keys)
    assert 7 in waits


def test_retry_after_beyond_the_deadline_gives_up_at_once(site, release, monkeypatch):
    monkeypatch.setattr(reghead_http, "DEADLINE_SECONDS", 60)
    site.fail_next("checksums.tar.gz", Fault(status=503, retry_after=3600))
    started = time.monotonic()
    with pytest.raises(ReleaseError, match="over the deadline of 60 s per asset"):
        RegHead(config_name="512", base_url=site.url).as_streaming_dataset()
    assert time.monotonic() - started < 30


# --- responses that are not the asset ----------------------------------------------------------


def test_html_error_page_with_status_200_is_retried(site, release, isolated_cache):
    shard = release.shard_paths[1].name
    site.fail_next(shard, Fault(html=True), times=2)
    assert prepared_keys(site.url) == sorted(release.keys)
    assert cached_files(isolated_cache)[shard] == release.shard_paths[1].read_bytes()


def test_html_error_page_is_reported_and_never_cached(site, release, isolated_cache, monkeypatch):
    monkeypatch.setattr(reghead_http, "MAX_ATTEMPTS", 2)
    shard = release.shard_paths[1].name
    site.fail_next(shard, Fault(html=True), times=2)
    with pytest.raises(ReleaseError, match=rf"{shard}.*not the asset: content type 'text/html; charset=utf-8'; gave up after 2 attempts"):
        RegHead(config_name="512", base_url=site.url).download_and_prepare()
    assert shard not in cached_files(isolated_cache)
    assert prepared_keys(site.url) == sorted(release.keys)  # a later run against a healthy server


@pytest.mark.parametrize("asset", ["reghead-v1-512-000000.tar", "checksums.tar.gz"])
def test_body_that_does_not_start_like_the_asset_is_refused(tmp_path, asset, monkeypatch):
    monkeypatch.setattr(reghead_http, "MAX_ATTEMPTS", 2)
    (tmp_path / TAG).mkdir()
    (tmp_path / TAG / asset).write_bytes(b"Sorry, this mirror is down for maintenance.\n" * 50)
    with RangeFileServer(tmp_path) as server, pytest.raises(ReleaseError, match=r"not the asset: the body starts with b'Sorry, this mirr', not like a (tar|gzip) file; gave up after 2"):
        HttpFile(f"{server.url}/{TAG}/{asset}", what=asset)


def test_size_other_than_the_manifest_is_refused(site, release, monkeypatch):
    monkeypatch.setattr(reghead_http, "MAX_ATTEMPTS", 2)
    shard = release.shard_paths[0]
    with pytest.raises(ReleaseError, match=rf"not the asset: {shard.stat().st_size} bytes where the release manifest says 1234; gave up after 2"):
        HttpFile(f"{site.url}/{TAG}/{shard.name}", what=shard.name, size=1234)


def test_a_slow_servers_small_reads_go_straight_into_the_block(tmp_path):
    """Read in 16 KiB pieces, an 8 MiB block takes no second 8 MiB: each piece is copied in and let go."""
    data = hashlib.sha256(b"block").digest() * (8 * 2**20 // 32)
    (tmp_path / "block.bin").write_bytes(data)
    block = bytearray(len(data))
    with RangeFileServer(tmp_path) as server:
        server.fail_next("block.bin", Fault(drip=(16 * 2**10, 0.0)))
        with HttpFile(f"{server.url}/block.bin") as f:
            tracemalloc.start()
            try:
                got = f.readinto(block)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert got == len(data) and block == data
    assert peak < len(data) // 4


# --- the download cache ------------------------------------------------------------------------


def test_unverified_cached_shard_is_checked_and_replaced(site, release, isolated_cache):
    shard = release.shard_paths[1]
    folder = isolated_cache / "downloads" / "reghead" / TAG
    folder.mkdir(parents=True)
    (folder / shard.name).write_bytes(b"<html>a proxy's error page, cached by an older version</html>")
    assert prepared_keys(site.url) == sorted(release.keys)
    assert (folder / shard.name).read_bytes() == shard.read_bytes()
    assert (folder / (shard.name + ".sha256")).read_text() == hashlib.sha256(shard.read_bytes()).hexdigest()


def test_verified_cached_shard_is_not_downloaded_again(site, release):
    prepared_keys(site.url)
    shard = release.shard_paths[1].name
    site.requests.clear()
    RegHead(config_name="512", base_url=site.url).download_and_prepare(download_mode="force_redownload")
    assert not [path for _, path, _ in site.requests if path.endswith(shard)]


def test_download_with_a_bad_hash_is_fetched_again_then_reported(site, release, tmp_path, monkeypatch):
    shard = release.shard_paths[1]
    served = Path(site.root) / TAG / shard.name
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 1
    served.write_bytes(bytes(data))
    expected = hashlib.sha256(shard.read_bytes()).hexdigest()
    target = tmp_path / "cache" / shard.name
    with pytest.raises(ReleaseError, match=rf"SHA-256 mismatch after 3 downloads.*expects {expected}, the download has {hashlib.sha256(data).hexdigest()}"):
        download(f"{site.url}/{TAG}/{shard.name}", target, what=shard.name, sha256=expected, size=len(data))
    assert sum(1 for _, path, _ in site.requests if path.endswith(shard.name)) == 3
    assert not target.exists() and not list(target.parent.glob("*"))


def test_cache_folder_that_cannot_be_written_is_a_one_line_error(site, release, tmp_path):
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / "reghead").write_text("a file where the download folder should be")
    with pytest.raises(ReleaseError, match=r"cannot write the download to '.*/downloads/reghead/reghead-webdataset-v1-512.*'.*point cache_dir= at another folder") as error:
        RegHead(config_name="512", base_url=site.url, cache_dir=str(cache)).download_and_prepare()
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_full_cache_folder_is_a_one_line_error(site, release, tmp_path, monkeypatch):
    class FullDisk:
        def __init__(self, path, mode):
            self.path = path

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(reghead_http, "open", FullDisk, raising=False)
    target = tmp_path / "cache" / release.shard_paths[0].name
    with pytest.raises(ReleaseError, match=rf"cannot write the download to '{tmp_path / 'cache'}' \(No space left on device\)"):
        download(f"{site.url}/{TAG}/{target.name}", target, what=target.name)


# --- GitHub's signed URLs -----------------------------------------------------------------------


def test_signed_urls_are_followed(signed_site, release):
    assert prepared_keys(signed_site.url) == sorted(release.keys)
    assert signed_site.redirects == len(signed_site.requests) == len(release.shard_paths) + 2  # + the two small assets


@pytest.mark.parametrize("streaming", [False, True])
def test_expired_signed_url_goes_back_to_the_asset_url(signed_site, release, streaming):
    shard = release.shard_paths[1].name
    signed_site.fail_next(shard, Fault(drop_after=100_000, expire_signed=True))
    builder = RegHead(config_name="512", base_url=signed_site.url)
    keys = keys_read(builder, streaming=streaming)
    assert keys == sorted(release.keys)
    # Served until byte 100,000 by the first signed URL, then the resume by a fresh one...
    reads = [wanted for _, path, wanted in signed_site.requests if path == f"/{TAG}/{shard}"]
    assert reads[:2] == [None, "bytes=100000-"]
    # ...after the resume had tried the expired one (403) and gone back to the asset URL: one 302 per signed URL used.
    assert signed_site.expired == 1 and signed_site.redirects == len(signed_site.requests)


def test_404_names_the_asset_and_the_tag_behind_a_redirect(signed_site, release):
    shard = release.shard_paths[0]
    (Path(signed_site.root) / TAG / shard.name).unlink()
    with pytest.raises(ReleaseError, match=rf"asset '{shard.name}' of release '{TAG}': .*/{TAG}/{shard.name} answered HTTP 404"):
        RegHead(config_name="512", base_url=signed_site.url).download_and_prepare()


# --- secrets ------------------------------------------------------------------------------------


def test_redact_removes_credentials_and_tokens():
    assert redact(f"https://user:{SECRET}@mirror.example:8443/a/b.tar?X-Amz-Signature=abc&token=def#x") == "https://mirror.example:8443/a/b.tar"
    assert redact("/local/path?not-a-url") == "/local/path?not-a-url"


def test_credentials_in_base_url_are_sent_but_never_shown(site, release, caplog):
    base = site.url.replace("http://", f"http://maintainer:{SECRET}@")
    site.fail_next(release.shard_paths[0].name, Fault(status=503), times=2)
    with caplog.at_level(logging.DEBUG):
        assert prepared_keys(base) == sorted(release.keys)
    assert ("/" + TAG + "/checksums.tar.gz", "Basic bWFpbnRhaW5lcjpwYTU1dzByZC1zZWNyZXQ=") in site.authorizations
    (Path(site.root) / TAG / "metadata.tar.gz").unlink()
    with caplog.at_level(logging.DEBUG), pytest.raises(ReleaseError) as error:
        RegHead(config_name="512", base_url=base, cache_dir=str(Path(site.root).parent / "other-cache")).download_and_prepare()
    shown = "".join(traceback.format_exception(error.value)) + caplog.text
    assert "HTTP 404" in str(error.value) and "retrying" in caplog.text
    assert SECRET not in shown and "maintainer" not in shown


def test_signed_url_tokens_are_never_shown_nor_sent_credentials(signed_site, release, caplog):
    base = signed_site.url.replace("http://", f"http://maintainer:{SECRET}@")
    signed_site.fail_next(release.shard_paths[1].name, Fault(drop_after=100_000))
    with caplog.at_level(logging.DEBUG):
        assert prepared_keys(base) == sorted(release.keys)
    assert "retrying" in caplog.text and "sig=" not in caplog.text and SECRET not in caplog.text
    signed = [auth for path, auth in signed_site.authorizations if path.startswith(SIGNED_PREFIX + "/")]
    assert signed and set(signed) == {None}, "credentials are never forwarded to the signed URL's host"
