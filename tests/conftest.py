"""Shared fixtures: sample releases written in tmp folders, an isolated datasets cache, HTTP serving."""

from __future__ import annotations

import io
import shutil
import socket
import tarfile
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # the test servers live beside the tests

from http_server import RangeFileServer  # noqa: E402
from hub_server import HubServer  # noqa: E402

from reghead_release.sample import write_sample_release  # noqa: E402
from reghead_release.schema import release_tag  # noqa: E402

REAL_SAMPLES = TESTS.parent.parent / "shared" / "samples" / "reghead-512"
ALICE_TOKEN = "hf_write_token"  # user "alice", member of org "acme"
BOB_TOKEN = "hf_bob_token"  # user "bob"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own datasets cache, so no test reads another's prepared data."""
    import datasets

    cache = tmp_path_factory.mktemp("hf_datasets_cache")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", cache / "downloads" / "extracted")
    monkeypatch.setattr(datasets.config, "STREAMING_READ_RETRY_INTERVAL", 0.01)
    monkeypatch.setattr(datasets.config, "STREAMING_OPEN_RETRY_INTERVAL", 0.01)
    monkeypatch.delenv("REGHEAD_BASE_URL", raising=False)
    return cache


@pytest.fixture(scope="session")
def releases(tmp_path_factory):
    """The default sample release at both resolutions: {512: SampleRelease, 1024: SampleRelease}."""
    root = tmp_path_factory.mktemp("releases")
    return {res: write_sample_release(root / str(res), resolution=res) for res in (512, 1024)}


@pytest.fixture
def copy_release(tmp_path):
    """A writable copy of a release, to damage in a test."""

    def copy(release, name="copy"):
        return Path(shutil.copytree(release.root, tmp_path / name))

    return copy


def publish(release_root: Path, site: Path, resolution: int) -> Path:
    """Lay a release out as GitHub serves it: `<site>/<tag>/<asset>`, all assets side by side."""
    folder = site / release_tag(resolution)
    folder.mkdir(parents=True, exist_ok=True)
    for path in list(release_root.glob("*.tar.gz")) + list(release_root.glob("data/*.tar")) + list(release_root.glob("*.tar")):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture
def http_site(tmp_path, releases):
    """A loopback HTTP server publishing both sample releases under their release tags."""
    site = tmp_path / "site"
    for resolution, release in releases.items():
        publish(release.root, site, resolution)
    with RangeFileServer(site) as server:
        yield server


# --- the loopback Hub ---------------------------------------------------------------------------


def hub_env(monkeypatch: pytest.MonkeyPatch, home: Path, endpoint: str) -> list[str]:
    """Point huggingface_hub and datasets at ``endpoint`` with caches under ``home``; no token, no Xet, offline-safe.

    Both libraries copy env vars into module constants at import time, so setting HF_ENDPOINT & co. is not enough:
    the cached constants are patched too. Also blocks DNS for non-loopback hosts (datasets pings S3 / the
    dataset viewer otherwise); the returned list collects the hosts that something tried to reach.
    """
    import datasets.config
    import huggingface_hub.constants as hf_constants
    from huggingface_hub import HfFileSystem
    from huggingface_hub.utils import _http as hf_http

    home = Path(home)
    hub_cache, datasets_cache = home / "hub", home / "datasets"
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_DATASETS_CACHE": str(datasets_cache),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                "HF_DATASETS_OFFLINE", "HF_OIDC_RESOURCE", "HUGGINGFACE_CO_STAGING"):
        monkeypatch.delenv(key, raising=False)

    # huggingface_hub: values read from the environment at import time
    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": hf_constants.HF_URL_HOSTS | {"127.0.0.1"},
        "HF_HUB_DISABLE_XET": True,  # hf_xet is installed: without this, uploads go through Xet unconditionally
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
    }.items():
        monkeypatch.setattr(hf_constants, name, value)
    monkeypatch.setattr(hf_http, "_HUB_ORIGINS", hf_http._HUB_ORIGINS | {hf_http._url_origin(endpoint)})

    # datasets: same story in datasets.config
    for name, value in {
        "HF_ENDPOINT": endpoint,
        "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
        "HF_HUB_OFFLINE": False,
        "HF_DATASETS_OFFLINE": False,
        "USE_PARQUET_EXPORT": False,  # else: asks datasets-server.<host> for exported infos
        "HF_UPDATE_DOWNLOAD_COUNTS": False,  # else: HEAD request to S3
        "HF_DATASETS_CACHE": datasets_cache,
        "HF_MODULES_CACHE": home / "modules",
        "DOWNLOADED_DATASETS_PATH": datasets_cache / "downloads",
        "EXTRACTED_DATASETS_PATH": datasets_cache / "downloads" / "extracted",
    }.items():
        monkeypatch.setattr(datasets.config, name, value, raising=False)

    # HfFileSystem caches instances (and their listings) per endpoint/token/thread
    HfFileSystem.clear_instance_cache()

    blocked: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in ("127.0.0.1", "localhost", "::1"):
            blocked.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"network disabled in tests: {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    return blocked


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running HubServer (users alice/bob, alice in org acme) with both client libraries pointed at it.

    ``hub.blocked_hosts`` lists non-loopback hosts something tried to resolve during the test.
    """
    from huggingface_hub import HfFileSystem
    from huggingface_hub.utils import close_session

    with HubServer(
        root=tmp_path / "hub-server", tokens={ALICE_TOKEN: "alice", BOB_TOKEN: "bob"}, orgs={"alice": ["acme"]}
    ) as server:
        server.blocked_hosts = hub_env(monkeypatch, tmp_path / "hf-home", server.url)
        yield server
        close_session()  # drop pooled keep-alive connections to this server
        HfFileSystem.clear_instance_cache()
        assert server.errors == [], server.errors[0]  # unexpected server-side exceptions (500s)


@pytest.fixture
def api(hub):
    from huggingface_hub import HfApi

    return HfApi(token=ALICE_TOKEN)


# --- reading and rewriting releases in tests -----------------------------------------------------


def members(path: Path) -> list[tuple[str, bytes]]:
    """A shard's members, (name, bytes), read with Python's tarfile."""
    with tarfile.open(path) as archive:
        return [(m.name, archive.extractfile(m).read()) for m in archive]


def tar_bytes(items: list[tuple[str, bytes]], tar_format=tarfile.PAX_FORMAT) -> bytes:
    """`items` as the bytes of a tar, in order (names that are not UTF-8 kept as they are)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format, encoding="utf-8", errors="surrogateescape") as archive:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_members(path: Path, items: list[tuple[str, bytes]], tar_format=tarfile.PAX_FORMAT) -> None:
    """Write `items` as a shard (`tar_bytes`)."""
    path.write_bytes(tar_bytes(items, tar_format))


def prepare(root: Path, **kwargs):
    """The DatasetDict the builder prepares from the release folder `root`."""
    from reghead import RegHead

    builder = RegHead(config_name="512", data_dir=str(root), **kwargs)
    builder.download_and_prepare()
    return builder.as_dataset()


def all_keys(ds) -> list[str]:
    return sorted(key for split in ds.values() for key in split["sample_key"])


def keys_read(builder, *, streaming: bool) -> list[str]:
    """Every sample key the builder reads, all splits, streamed or prepared."""
    if streaming:
        return sorted(row["sample_key"] for split in builder.as_streaming_dataset().values() for row in split)
    builder.download_and_prepare()
    return all_keys(builder.as_dataset())
