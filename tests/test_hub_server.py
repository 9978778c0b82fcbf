"""Tests for ``tests/hub_server.py`` with the REAL huggingface_hub / datasets clients (no mocks).

The ``hub`` and ``api`` fixtures (and the ``hub_env`` helper they use) live in ``conftest.py``.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import httpx2 as httpx
import pytest

from conftest import ALICE_TOKEN, BOB_TOKEN, hub_env  # noqa: F401 - hub_env is exercised through the `hub` fixture
from hub_server import HubServer
REPO = "alice/demo"
PARQUET = "512/train-00000-of-00001.parquet"
README = """---
configs:
- config_name: "512"
  data_files:
  - split: train
    path: "512/train-*.parquet"
  default: true
---
# Demo dataset
"""


def _jpeg(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def demo_folder(tmp_path):
    """A local dataset folder: README.md with a "512" config + one parquet shard holding an Image column."""
    from datasets import Dataset, Features, Image, Value

    folder = tmp_path / "demo"
    (folder / "512").mkdir(parents=True)
    (folder / "README.md").write_text(README)
    images = [_jpeg((255, 0, 0)), _jpeg((0, 128, 255)), _jpeg((10, 200, 30))]
    rows = {"id": [0, 1, 2], "text": ["a", "bb", "ccc"], "image": [{"bytes": b, "path": None} for b in images]}
    features = Features({"id": Value("int64"), "text": Value("string"), "image": Image()})
    Dataset.from_dict(rows, features=features).to_parquet(str(folder / PARQUET))
    return folder, rows


@pytest.fixture
def pushed(api, demo_folder):
    api.create_repo(REPO, repo_type="dataset")
    api.upload_folder(folder_path=demo_folder[0], repo_id=REPO, repo_type="dataset")
    return demo_folder


def _no_xet(hub) -> bool:
    return not any("xet" in path.lower() for _, path in hub.requests)


# ---------------------------------------------------------------------------------------------------- tests
def test_create_repo_and_whoami(hub, api):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    assert api.whoami()["name"] == "alice"
    assert [o["name"] for o in api.whoami()["orgs"]] == ["acme"]

    url = api.create_repo("alice/public", repo_type="dataset")
    assert url == f"{hub.url}/datasets/alice/public" and url.repo_id == "alice/public" and url.repo_type == "dataset"
    assert api.create_repo("alice/public", repo_type="dataset", exist_ok=True) == url
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("alice/public", repo_type="dataset")
    assert exc.value.response.status_code == 409

    api.create_repo("alice/secret", repo_type="dataset", private=True)
    api.create_repo("acme/org-data", repo_type="dataset")  # org namespace
    api.create_repo("alice/a-model")  # models work too
    anon, bob = HfApi(token=False), HfApi(token=BOB_TOKEN)
    assert anon.dataset_info("alice/public").private is False
    assert api.dataset_info("alice/secret").private is True
    assert [s.rfilename for s in api.dataset_info("alice/secret").siblings] == [".gitattributes"]
    for client in (anon, bob):
        with pytest.raises(RepositoryNotFoundError):
            client.dataset_info("alice/secret")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("alice/missing")
    with pytest.raises(HfHubHTTPError) as exc:
        bob.create_repo("alice/nope", repo_type="dataset")
    assert exc.value.response.status_code == 403
    assert api.repo_exists("alice/a-model") and not api.repo_exists("alice/a-model", repo_type="dataset")


def test_upload_folder_goes_through_lfs(hub, api, pushed):
    assert hub.count("POST", "/datasets/alice/demo.git/info/lfs/objects/batch") == 1
    assert hub.count("PUT", "/__lfs/upload/") == 1
    assert hub.count("POST", "/__lfs/verify/") == 1
    assert hub.count("POST", "/api/datasets/alice/demo/commit/main") == 1
    assert _no_xet(hub)
    files = {f.path: f for f in api.list_repo_tree(REPO, repo_type="dataset", recursive=True) if hasattr(f, "size")}
    assert set(files) == {".gitattributes", "README.md", PARQUET}
    local = (pushed[0] / PARQUET).read_bytes()
    assert files[PARQUET].lfs is not None and files[PARQUET].lfs.size == len(local)
    assert files["README.md"].lfs is None
    assert hub.read(REPO, PARQUET) == local
    info = api.dataset_info(REPO)
    assert info.card_data["configs"][0]["config_name"] == "512"
    assert hub.errors == []


def test_reupload_is_deduplicated(hub, api, pushed):
    folder = pushed[0]
    head = api.dataset_info(REPO).sha
    api.upload_folder(folder_path=folder, repo_id=REPO, repo_type="dataset")
    assert hub.count("PUT", "/__lfs/upload/") == 1  # LFS batch answered "already stored"
    assert api.dataset_info(REPO).sha == head  # nothing changed -> no commit
    (folder / "README.md").write_text(README + "\nMore text.\n")
    (folder / "512" / "copy.parquet").write_bytes((folder / PARQUET).read_bytes())
    api.upload_folder(folder_path=folder, repo_id=REPO, repo_type="dataset")
    assert hub.count("PUT", "/__lfs/upload/") == 1
    assert api.dataset_info(REPO).sha != head
    assert api.file_exists(REPO, "512/copy.parquet", repo_type="dataset")


def test_download_roundtrip(hub, api, pushed):
    from huggingface_hub import HfFileSystem, hf_hub_download

    local = (pushed[0] / PARQUET).read_bytes()
    path = hf_hub_download(REPO, PARQUET, repo_type="dataset")
    assert Path(path).read_bytes() == local
    assert Path(hf_hub_download(REPO, "README.md", repo_type="dataset")).read_text() == README

    fs = HfFileSystem()
    rpath = f"datasets/{REPO}/{PARQUET}"
    assert fs.info(rpath)["size"] == len(local)
    assert fs.glob(f"datasets/{REPO}/512/*.parquet") == [rpath]
    with fs.open(rpath, "rb", block_size=16) as f:
        f.seek(10)
        assert f.read(20) == local[10:30]
        f.seek(-8, 2)
        assert f.read() == local[-8:]
    assert fs.cat_file(rpath, start=4, end=12) == local[4:12]
    assert _no_xet(hub)


def test_resolve_ranges_and_headers(hub, api, pushed):
    local = (pushed[0] / PARQUET).read_bytes()
    size = len(local)
    url = f"{hub.url}/datasets/{REPO}/resolve/main/{PARQUET}"
    with httpx.Client() as client:
        head = client.head(url)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == size
        assert head.headers["X-Linked-Size"] == str(size) and head.headers["Accept-Ranges"] == "bytes"
        assert head.headers["X-Repo-Commit"] == hub.head(REPO)
        assert head.headers["ETag"].strip('"') == head.headers["X-Linked-Etag"].strip('"') == __import__(
            "hashlib"
        ).sha256(local).hexdigest()
        assert not any(k.lower().startswith("x-xet") for k in head.headers)
        for rng, expected, content_range in [
            ("bytes=5-9", local[5:10], f"bytes 5-9/{size}"),
            (f"bytes={size - 3}-", local[-3:], f"bytes {size - 3}-{size - 1}/{size}"),
            ("bytes=-4", local[-4:], f"bytes {size - 4}-{size - 1}/{size}"),
            (f"bytes=0-{size + 100}", local, f"bytes 0-{size - 1}/{size}"),
        ]:
            r = client.get(url, headers={"Range": rng})
            assert (r.status_code, r.content, r.headers["Content-Range"]) == (206, expected, content_range)
        r = client.get(url, headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
        # encoded and unencoded special revisions + error codes
        assert client.get(f"{hub.url}/datasets/{REPO}/resolve/refs%2Fconvert%2Fparquet/x").headers[
            "X-Error-Code"
        ] == "RevisionNotFound"
        missing = client.head(f"{hub.url}/datasets/{REPO}/resolve/main/nope.txt")
        assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
        assert client.get(f"{hub.url}/datasets/alice/nope/resolve/main/x").headers["X-Error-Code"] == "RepoNotFound"
        readme_head = client.head(f"{hub.url}/datasets/{REPO}/resolve/{hub.head(REPO)[:7]}/README.md")
        assert readme_head.status_code == 200 and "X-Linked-Etag" not in readme_head.headers
        assert readme_head.headers["ETag"].strip('"') == __import__("hashlib").sha1(
            b"blob %d\0" % len(README.encode()) + README.encode()
        ).hexdigest()


def test_load_dataset(hub, api, pushed):
    import numpy as np
    from datasets import load_dataset
    from PIL import Image

    rows = pushed[1]
    expected_pixels = [np.asarray(Image.open(io.BytesIO(img["bytes"]))) for img in rows["image"]]

    ds = load_dataset(REPO, "512")
    assert list(ds) == ["train"] and ds["train"].num_rows == 3
    assert ds["train"]["id"] == rows["id"] and ds["train"]["text"] == rows["text"]
    for row, pixels in zip(ds["train"], expected_pixels):
        assert isinstance(row["image"], Image.Image)
        assert np.array_equal(np.asarray(row["image"]), pixels)

    streamed = list(load_dataset(REPO, "512", streaming=True)["train"])
    assert [r["id"] for r in streamed] == rows["id"] and [r["text"] for r in streamed] == rows["text"]
    for row, pixels in zip(streamed, expected_pixels):
        assert isinstance(row["image"], Image.Image) and np.array_equal(np.asarray(row["image"]), pixels)
    assert _no_xet(hub) and hub.blocked_hosts == [] and hub.errors == []


def test_writes_need_a_valid_token(hub, api, demo_folder):
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api.create_repo(REPO, repo_type="dataset")
    wrong = "hf_WRONG_secret_0123456789"
    attempts = {
        "no token": lambda: HfApi(token=False).create_repo("alice/x", repo_type="dataset"),
        "no token commit": lambda: HfApi(token=False).upload_folder(
            folder_path=demo_folder[0], repo_id=REPO, repo_type="dataset"
        ),
        "wrong token": lambda: HfApi(token=wrong).create_repo("alice/x", repo_type="dataset"),
        "wrong token commit": lambda: HfApi(token=wrong).create_commit(
            REPO, [CommitOperationAdd("a.txt", b"a")], commit_message="x", repo_type="dataset"
        ),
        "wrong token whoami": lambda: HfApi(token=wrong).whoami(),
    }
    for label, attempt in attempts.items():
        with pytest.raises(HfHubHTTPError) as exc:
            attempt()
        assert exc.value.response.status_code == 401, label
        assert wrong not in str(exc.value) and wrong not in exc.value.response.text, label
    with pytest.raises(HfHubHTTPError) as exc:  # valid token, other user's namespace
        HfApi(token=BOB_TOKEN).create_commit(
            REPO, [CommitOperationAdd("a.txt", b"a")], commit_message="x", repo_type="dataset"
        )
    assert exc.value.response.status_code == 403
    assert hub.count("PUT", "/__lfs/upload/") == 0
    assert [c.title for c in api.list_repo_commits(REPO, repo_type="dataset")] == ["initial commit"]


def test_stale_parent_commit_is_rejected(hub, api):
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    api.create_repo(REPO, repo_type="dataset")
    base = api.dataset_info(REPO).sha
    api.create_commit(REPO, [CommitOperationAdd("a.txt", b"1")], commit_message="one", repo_type="dataset",
                      parent_commit=base)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(REPO, [CommitOperationAdd("a.txt", b"2")], commit_message="two", repo_type="dataset",
                          parent_commit=base)
    assert exc.value.response.status_code == 412
    assert hub.read(REPO, "a.txt") == b"1"

    # fault hook: next commit answers 412 without touching the repo, the one after works
    hub.fail_next("POST", "/commit/main", status=412)
    head = api.dataset_info(REPO).sha
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(REPO, [CommitOperationAdd("a.txt", b"3")], commit_message="three", repo_type="dataset")
    assert exc.value.response.status_code == 412 and hub.head(REPO) == head
    api.create_commit(REPO, [CommitOperationAdd("a.txt", b"3")], commit_message="three", repo_type="dataset",
                      parent_commit=head[:7])
    assert hub.read(REPO, "a.txt") == b"3"


def test_dropped_lfs_upload_is_retried(hub, api):
    from huggingface_hub import CommitOperationAdd

    api.create_repo(REPO, repo_type="dataset")
    data = bytes(range(256)) * 64
    hub.fail_next("PUT", "/__lfs/upload/", drop=True)
    api.create_commit(REPO, [CommitOperationAdd("blob.bin", data)], commit_message="bin", repo_type="dataset")
    assert hub.count("PUT", "/__lfs/upload/") == 2  # dropped mid-body, then retried by the client
    assert hub.read(REPO, "blob.bin") == data


def test_create_pr(hub, api, pushed):
    from huggingface_hub import CommitOperationAdd, HfFileSystem, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    info = api.create_commit(REPO, [CommitOperationAdd("512/extra.txt", b"from a PR")],
                             commit_message="PR", repo_type="dataset", create_pr=True)
    assert info.pr_revision == "refs/pr/1" and info.pr_num == 1
    assert info.pr_url == f"{hub.url}/datasets/{REPO}/discussions/1"
    path = hf_hub_download(REPO, "512/extra.txt", repo_type="dataset", revision="refs/pr/1")
    assert Path(path).read_bytes() == b"from a PR"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "512/extra.txt", repo_type="dataset")  # main is untouched
    refs = api.list_repo_refs(REPO, repo_type="dataset", include_pull_requests=True)
    assert [r.ref for r in refs.pull_requests] == ["refs/pr/1"] and refs.pull_requests[0].target_commit == info.oid
    assert api.dataset_info(REPO, revision="refs/pr/1").sha == info.oid
    assert HfFileSystem().cat_file(f"datasets/{REPO}@refs/pr/1/512/extra.txt") == b"from a PR"
    second = api.create_commit(REPO, [CommitOperationAdd("b.txt", b"b")], commit_message="PR2",
                               repo_type="dataset", create_pr=True)
    assert second.pr_revision == "refs/pr/2"


def test_dataset_card_validation(hub, api):
    from huggingface_hub import CommitOperationAdd, DatasetCard

    DatasetCard(README).validate()  # good card: passes
    bad_shape = README.replace('  data_files:\n  - split: train\n    path: "512/train-*.parquet"\n',
                               "  data_files:\n  - split: 3\n")
    with pytest.raises(ValueError, match="data_files"):
        DatasetCard(bad_shape).validate()

    api.create_repo(REPO, repo_type="dataset")
    head = api.dataset_info(REPO).sha
    broken = "---\nconfigs: [unclosed\n---\n# broken\n"
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.create_commit(REPO, [CommitOperationAdd("README.md", broken.encode())], commit_message="bad",
                          repo_type="dataset")
    assert hub.head(REPO) == head
    assert hub.count("POST", "/api/validate-yaml") == 3


def test_tree_pagination_and_paths_info(hub, api, pushed):
    hub.tree_page_size = 2
    entries = list(api.list_repo_tree(REPO, repo_type="dataset", recursive=True))
    assert sorted(e.path for e in entries) == [".gitattributes", "512", PARQUET, "README.md"]
    assert hub.count("GET", "/api/datasets/alice/demo/tree/main") >= 2
    expanded = list(api.list_repo_tree(REPO, "512", repo_type="dataset", expand=True))
    assert [e.path for e in expanded] == [PARQUET] and expanded[0].last_commit.title.startswith("Upload")
    infos = api.get_paths_info(REPO, [PARQUET, "512", "missing"], repo_type="dataset")
    assert sorted(type(i).__name__ for i in infos) == ["RepoFile", "RepoFolder"]


def test_clean_shutdown(tmp_path):
    before = set(threading.enumerate())
    with HubServer(root=tmp_path / "hub") as server:
        with httpx.Client() as client:  # keep-alive connection left open on purpose
            assert client.get(f"{server.url}/api/datasets/a/b").status_code == 401
            leftover = [t for t in threading.enumerate() if t.name == "hub-conn"]
            assert leftover
        client2 = httpx.Client()
        client2.get(f"{server.url}/api/datasets/a/b")
    assert set(threading.enumerate()) - before == set()
    client2.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)


def test_state_survives_restart(tmp_path):
    import base64
    import json

    auth = {"Authorization": f"Bearer {ALICE_TOKEN}"}
    ndjson = "\n".join(
        json.dumps(line)
        for line in [
            {"key": "header", "value": {"summary": "add", "description": ""}},
            {"key": "file", "value": {"path": "a/b.txt", "content": base64.b64encode(b"hello").decode(),
                                      "encoding": "base64"}},
        ]
    )
    with HubServer(root=tmp_path / "hub", tokens={ALICE_TOKEN: "alice"}) as first:
        r = httpx.post(f"{first.url}/api/repos/create", headers=auth,
                       json={"name": "r", "organization": None, "type": "dataset", "private": True})
        assert r.json()["url"] == f"{first.url}/datasets/alice/r"
        r = httpx.post(f"{first.url}/api/datasets/alice/r/commit/main", headers=auth, content=ndjson)
        assert r.status_code == 200 and r.json()["commitOid"] == first.head("alice/r")
        head = first.head("alice/r")
    with HubServer(root=tmp_path / "hub", tokens={ALICE_TOKEN: "alice"}) as second:
        assert second.head("alice/r") == head and second.read("alice/r", "a/b.txt") == b"hello"
        r = httpx.get(f"{second.url}/datasets/alice/r/resolve/main/a%2Fb.txt", headers=auth)
        assert r.content == b"hello" and r.headers["X-Repo-Commit"] == head
        assert httpx.get(f"{second.url}/datasets/alice/r/resolve/main/a/b.txt").status_code == 401  # private
