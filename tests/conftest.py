"""Shared fixtures: sample releases written in tmp folders, an isolated datasets cache, HTTP serving."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # the test servers live beside the tests

from http_server import RangeFileServer  # noqa: E402

from reghead_release.sample import write_sample_release  # noqa: E402
from reghead_release.schema import release_tag  # noqa: E402

REAL_SAMPLES = TESTS.parent.parent / "shared" / "samples" / "reghead-512"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own datasets cache, so no test reads another's prepared data."""
    import datasets

    cache = tmp_path_factory.mktemp("hf_datasets_cache")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
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
