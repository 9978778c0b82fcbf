"""A small Hugging Face Hub-compatible HTTP server for tests (standard library only).

``HubServer`` speaks the subset of the Hub HTTP API that ``huggingface_hub`` (2.x) and ``datasets`` (5.x)
use to create repos, push files through classic git-LFS and read them back (``hf_hub_download``,
``HfFileSystem`` / ``hf://`` paths, ``datasets.load_dataset`` with or without ``streaming=True``)::

    with HubServer(root=tmp_path / "hub", tokens={"hf_write_token": "alice"}) as hub:
        hub.url  # "http://127.0.0.1:<port>" -> set HF_ENDPOINT / patch the client constants to it

Implemented (models, datasets and spaces; ``{t}`` = ``models|datasets|spaces``, ``{p}`` = ``""|datasets/|spaces/``):

* ``GET  /api/whoami-v2``, ``POST /api/repos/create`` (409 + ``url`` if it exists), ``DELETE /api/repos/delete``,
  ``POST /api/validate-yaml`` (YAML front matter + basic shape of ``configs`` / ``dataset_info``)
* ``GET  /api/{t}/{ns}/{name}[/revision/{rev}]`` (sha, siblings, private, cardData; ``?blobs=1`` adds sizes/lfs)
* ``PUT  /api/{t}/{ns}/{name}/settings``, ``GET .../refs``, ``GET .../commits/{rev}``, ``GET .../auth-check``
* ``POST|DELETE .../branch/{branch}``, ``POST .../tag/{rev}``, ``DELETE .../tag/{tag}``
* ``GET  .../tree/{rev}[/{path}]`` (``recursive``, ``expand``, ``Link`` pagination), ``POST .../paths-info/{rev}``
* ``POST .../preupload/{rev}`` (``lfs`` for files matching the repo ``.gitattributes``, binary or > 10 MB)
* ``POST .../commit/{rev}`` (NDJSON: header/file/lfsFile/deletedFile/deletedFolder; ``parentCommit`` -> 412
  when stale; ``?create_pr=1`` -> ``refs/pr/N``)
* ``POST /{p}{ns}/{name}.git/info/lfs/objects/batch`` (basic transfer only; stored objects get no ``actions``),
  plus the upload (``PUT``) and verify (``POST``) URLs it hands out under ``/__lfs/``
* ``GET|HEAD /{p}{ns}/{name}/resolve/{rev}/{path}``: ETag (git sha1, or sha256 for LFS), ``X-Repo-Commit``,
  ``X-Linked-Etag`` / ``X-Linked-Size`` for LFS, ``Accept-Ranges``, single ``Range`` (206 / 416), 404s with
  ``X-Error-Code`` ``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``.

Revisions may be branches, tags, ``refs/pr/N``, ``refs/convert/...`` (url-encoded or not) or commit ids (>= 7 hex).
New repos get an initial commit holding a default ``.gitattributes`` (like the Hub).

Auth: ``Authorization: Bearer <token>``; ``tokens`` maps token -> user name, ``orgs`` maps user -> org names.
A user may write to (and read private repos of) its own namespace and its orgs. Missing token on a write -> 401,
unknown token anywhere -> 401 ("Invalid credentials in Authorization header"), other namespace -> 403. Private or
missing repos -> 401 (anonymous) / 404 (authenticated) with ``X-Error-Code: RepoNotFound``. Tokens are never
echoed. LFS upload URLs carry an HMAC signature instead of a token (the client sends no auth header on the PUT).

NOT implemented: Xet (the ``xet-*-token`` routes answer 400, no ``X-Xet-*`` header or ``xetHash`` is ever sent;
with ``hf_xet`` installed, huggingface_hub 2.x uploads through Xet unconditionally, so clients MUST run with
``huggingface_hub.constants.HF_HUB_DISABLE_XET = True``), multipart LFS, CDN redirects (files are served
directly), discussions/PR comments, gated repos, spaces runtime, search/listing of repos, parquet conversion
(``refs/convert/parquet`` only exists if you create that branch), super-squash, git protocol.
``PyYAML`` (a dependency of huggingface_hub) is imported lazily for YAML validation / cardData.

Test hooks: ``hub.requests`` (thread-safe list of ``(method, raw_path_without_query)``), ``hub.count()``,
``hub.fail_next()`` (inject an HTTP error or drop a connection mid-body), ``hub.errors`` (server-side tracebacks
of unexpected exceptions), ``hub.head()`` / ``hub.read()`` to inspect state without a client.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import tempfile
import threading
import traceback
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HubServer"]

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub refuses regular (non-LFS) files above 10 MB
STALE_PARENT_MESSAGE = "A commit has happened since. Please refresh and try again."
DEFAULT_GITATTRIBUTES = (
    "".join(
        f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
        for pattern in (
            "*.7z *.arrow *.avro *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.lz4 *.mds *.mlmodel *.model "
            "*.msgpack *.npy *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors "
            "saved_model/**/* *.tar.* *.tar *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents* "
            "*.mp3 *.ogg *.wav *.flac *.jpg *.jpeg *.png *.gif *.webp *.mp4 *.webm"
        ).split()
    )
)
_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
_HEX = re.compile(r"[0-9a-f]{7,40}")


class HubError(Exception):
    """Raised by handlers: becomes a JSON ``{"error": message}`` response with ``X-Error-*`` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class _Drop(Exception):
    """Abort the request: close the connection without answering."""


def _now() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on")


def _front_matter(content: str) -> tuple[bool, Any]:
    """Return (has_block, parsed_yaml). Raises yaml.YAMLError on broken YAML."""
    match = _YAML_BLOCK.search(content)
    if not match:
        return False, None
    import yaml  # lazy: only needed for cards

    return True, yaml.safe_load(match.group(2))


def _card_errors(metadata: Any, repo_type: str) -> list[str]:
    """Basic shape checks of card metadata (what the Hub would reject outright)."""
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return ["YAML metadata must be a mapping (dict)"]
    errors: list[str] = []
    if repo_type != "dataset":
        return errors
    configs = metadata.get("configs")
    if configs is not None:
        if not isinstance(configs, list):
            errors.append('"configs" must be a list')
        else:
            names = []
            for i, cfg in enumerate(configs):
                if not isinstance(cfg, dict):
                    errors.append(f'"configs[{i}]" must be a mapping')
                    continue
                name = cfg.get("config_name")
                if not isinstance(name, str) or not name:
                    errors.append(f'"configs[{i}].config_name" must be a non-empty string')
                names.append(name)
                if "default" in cfg and not isinstance(cfg["default"], bool):
                    errors.append(f'"configs[{i}].default" must be a boolean')
                data_files = cfg.get("data_files")
                if data_files is not None and not isinstance(data_files, str):
                    if not isinstance(data_files, list):
                        errors.append(f'"configs[{i}].data_files" must be a string or a list')
                    else:
                        for j, item in enumerate(data_files):
                            if isinstance(item, str):
                                continue
                            path = item.get("path") if isinstance(item, dict) else None
                            if (
                                not isinstance(item, dict)
                                or not isinstance(item.get("split"), str)
                                or not (
                                    isinstance(path, str)
                                    or (isinstance(path, list) and all(isinstance(p, str) for p in path))
                                )
                            ):
                                errors.append(
                                    f'"configs[{i}].data_files[{j}]" must be a string or a {{split, path}} mapping'
                                )
            if len(set(map(str, names))) != len(names):
                errors.append('"configs" config_name values must be unique')
            if sum(1 for c in configs if isinstance(c, dict) and c.get("default") is True) > 1:
                errors.append('only one of "configs" can have default: true')
    infos = metadata.get("dataset_info")
    if infos is not None:
        for i, info in enumerate(infos if isinstance(infos, list) else [infos]):
            if not isinstance(info, dict):
                errors.append(f'"dataset_info[{i}]" must be a mapping')
                continue
            if "features" in info and not isinstance(info["features"], (list, dict)):
                errors.append(f'"dataset_info[{i}].features" must be a list or a mapping')
            splits = info.get("splits", [])
            if not isinstance(splits, list) or not all(isinstance(s, dict) and "name" in s for s in splits):
                errors.append(f'"dataset_info[{i}].splits" must be a list of mappings with a "name"')
    return errors


class _Repo:
    """One repository: commits (full snapshots) and refs.

    ``branches[name]`` is the list of commit ids of a branch (oldest first), ``tags[name]`` a commit id.
    """

    def __init__(self, repo_type: str, namespace: str, name: str, private: bool):
        self.type, self.namespace, self.name, self.private = repo_type, namespace, name, private
        self.created_at = _now()
        self.commits: dict[str, dict] = {}  # id -> {id, parents, title, message, date, author, files}
        self.branches: dict[str, list[str]] = {}  # "main", "refs/pr/1", "refs/convert/parquet", ...
        self.tags: dict[str, str] = {}
        self.next_pr = 1

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_json(self) -> dict:
        return dict(vars(self))

    @classmethod
    def from_json(cls, data: dict) -> "_Repo":
        repo = cls.__new__(cls)
        repo.__dict__.update(data)
        return repo


class HubServer:
    """Hub-compatible test server. See the module docstring for the supported API.

    Args:
        root: directory holding the repos (``repos/<type>/<ns>/<name>/repo.json``) and blobs (``blobs/lfs/<sha256>``,
            ``blobs/git/<sha1>``). Existing state under ``root`` is loaded, so a server can be restarted.
        tokens: token -> user name.
        orgs: user name -> list of org names the user can write to.
        tree_page_size: entries per page of the tree endpoint (the Hub uses 1000, and 50 with ``expand``).
        host / port: bind address (default 127.0.0.1 and a free port).
        keep_lfs: False for benchmarks: an uploaded LFS body is hashed and checked against its oid and size as
            always, but stored as a sparse file of that size (it reads back as zeros), so a push of many GiB
            takes no disk. ``lfs_received`` counts the LFS body bytes received either way.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        tokens: dict[str, str] | None = None,
        orgs: dict[str, list[str]] | None = None,
        *,
        tree_page_size: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_lfs: bool = True,
    ):
        self.root = Path(root)
        self.tokens = dict(tokens or {})
        self.orgs = {user: list(names) for user, names in (orgs or {}).items()}
        self.tree_page_size = tree_page_size
        self.keep_lfs = keep_lfs
        self.lfs_received = 0
        self.requests: list[tuple[str, str]] = []  # list.append is atomic; guarded anyway by _lock for copies
        self.errors: list[str] = []
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._faults: list[dict] = []
        self._secret = secrets.token_bytes(32)
        self._repos: dict[tuple[str, str, str], _Repo] = {}
        self._commit_counter = 0
        self._httpd: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "HubServer":
        (self.root / "blobs" / "lfs").mkdir(parents=True, exist_ok=True)
        (self.root / "blobs" / "git").mkdir(parents=True, exist_ok=True)
        self._load()
        self._httpd = _ThreadingServer((self._host, self._port), _Handler, self)
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ test hooks
    def fail_next(
        self,
        method: str | None,
        path_substring: str,
        status: int = 500,
        times: int = 1,
        *,
        drop: bool = False,
        message: str | None = None,
    ) -> None:
        """Make the next ``times`` requests matching ``method`` (None = any) and ``path_substring`` fail.

        The substring is matched against the raw and the url-decoded request path (query excluded). The request
        is not processed (no state change): the server answers ``status`` with ``{"error": message}`` (412 on a
        commit gets the Hub's stale-parent message by default), or, with ``drop=True``, reads half of the body and
        closes the connection without answering. Note the client retries 408/429/5xx and dropped connections
        (with a 1s+ backoff) on most calls, so each retry consumes one of ``times``.
        """
        with self._lock:
            self._faults.append(
                {
                    "method": method.upper() if method else None,
                    "substr": path_substring,
                    "status": status,
                    "times": times,
                    "drop": drop,
                    "message": message,
                }
            )

    def count(self, method: str | None = None, contains: str = "") -> int:
        """Number of recorded requests with this method (None = any) whose path contains ``contains``."""
        with self._lock:
            return sum(1 for m, p in self.requests if (method is None or m == method.upper()) and contains in p)

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> str | None:
        """Commit id a revision points to (None if repo or revision is missing)."""
        with self._lock:
            repo = self._repos.get((repo_type, *repo_id.split("/", 1)))
            return self._resolve_rev(repo, revision) if repo else None

    def read(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "dataset") -> bytes:
        """Content of a file in a repo (KeyError if missing)."""
        with self._lock:
            repo = self._repos[(repo_type, *repo_id.split("/", 1))]
            commit = self._resolve_rev(repo, revision)
            if commit is None:
                raise KeyError(revision)
            entry = repo.commits[commit]["files"][path]
        return self._blob_path(entry).read_bytes()

    # ------------------------------------------------------------------ storage
    def _repo_dir(self, repo: _Repo) -> Path:
        return self.root / "repos" / repo.type / repo.namespace / repo.name

    def _save(self, repo: _Repo) -> None:
        path = self._repo_dir(repo) / "repo.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_text(json.dumps(repo.to_json()))
        os.replace(tmp, path)

    def _load(self) -> None:
        for path in (self.root / "repos").glob("*/*/*/repo.json"):
            repo = _Repo.from_json(json.loads(path.read_text()))
            self._repos[(repo.type, repo.namespace, repo.name)] = repo

    def _lfs_path(self, sha256: str) -> Path:
        return self.root / "blobs" / "lfs" / sha256[:2] / sha256

    def _blob_path(self, entry: dict) -> Path:
        return self.root / "blobs" / entry["blob"]

    def _store_git_blob(self, data: bytes) -> dict:
        oid = _git_sha1(data)
        path = self.root / "blobs" / "git" / oid[:2] / oid
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{oid}.{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return {"oid": oid, "size": len(data), "lfs": None, "blob": f"git/{oid[:2]}/{oid}"}

    def _lfs_entry(self, sha256: str, size: int) -> dict:
        pointer = _lfs_pointer(sha256, size)
        return {
            "oid": _git_sha1(pointer),
            "size": size,
            "lfs": sha256,
            "pointer_size": len(pointer),
            "blob": f"lfs/{sha256[:2]}/{sha256}",
        }

    def _sign(self, oid: str, size: int) -> str:
        return hmac.new(self._secret, f"{oid}:{size}".encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ repo helpers (call with _lock held)
    def _new_commit(self, repo: _Repo, parents: list[str], files: dict, title: str, message: str, author: str) -> str:
        self._commit_counter += 1
        date = _now()
        seed = json.dumps([repo.repo_id, parents, sorted(files.items()), title, message, date, self._commit_counter])
        cid = hashlib.sha1(seed.encode() + secrets.token_bytes(8)).hexdigest()
        repo.commits[cid] = {
            "id": cid,
            "parents": parents,
            "title": title,
            "message": message,
            "date": date,
            "author": author,
            "files": files,
        }
        return cid

    def _resolve_rev(self, repo: _Repo, rev: str | None) -> str | None:
        rev = rev or "main"
        if rev.startswith("refs/heads/"):
            rev = rev[len("refs/heads/") :]
        elif rev.startswith("refs/tags/"):
            rev = rev[len("refs/tags/") :]
        if rev in repo.branches:
            return repo.branches[rev][-1]
        if rev in repo.tags:
            return repo.tags[rev]
        if _HEX.fullmatch(rev):
            matches = [cid for cid in repo.commits if cid.startswith(rev)]
            if len(matches) == 1:
                return matches[0]
        return None

    def _history(self, repo: _Repo, commit: str) -> list[str]:
        """First-parent history, newest first."""
        out = []
        while commit:
            out.append(commit)
            parents = repo.commits[commit]["parents"]
            commit = parents[0] if parents else None
        return out

    def _can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or namespace in self.orgs.get(user, []))


class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, hub: HubServer):
        self.hub = hub
        self._conn_lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        thread = threading.Thread(target=self._serve_one, args=(request, client_address), name="hub-conn", daemon=True)
        with self._conn_lock:
            self._conns[request] = thread
        thread.start()

    def _serve_one(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - client went away, keep quiet
            pass
        finally:
            self.shutdown_request(request)
            with self._conn_lock:
                self._conns.pop(request, None)

    def handle_error(self, request, client_address):  # quiet
        pass

    def close_connections(self) -> None:
        """Close idle keep-alive connections and wait for their handler threads."""
        with self._conn_lock:
            items = list(self._conns.items())
        for sock, _ in items:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in items:
            thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HubServer/1.0"
    timeout = 60  # idle keep-alive connections
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the 40 ms delayed-ACK stall
    server: _ThreadingServer

    # quiet logging
    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ plumbing
    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def _iter_body(self, limit: int | None = None) -> Iterator[bytes]:
        """Yield the request body (Content-Length or chunked); stops after ``limit`` bytes if given."""
        self._body_started = True
        read = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _Drop()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise _Drop()
                    remaining -= len(chunk)
                    read += len(chunk)
                    yield chunk
                    if limit is not None and read >= limit:
                        return
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20, limit - read if limit is not None else 1 << 20))
                if not chunk:
                    raise _Drop()
                remaining -= len(chunk)
                read += len(chunk)
                yield chunk
                if limit is not None and read >= limit:
                    return
        self._body_done = True

    def _read_body(self) -> bytes:
        return b"".join(self._iter_body())

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json", headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers=None, content_type: str = "application/json") -> None:
        self._send(status, json.dumps(data).encode(), content_type, headers)

    def _error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message.replace("\n", " ").encode("latin-1", "replace").decode("latin-1")}
        if err.code:
            headers["X-Error-Code"] = err.code
        headers.update(err.headers)
        self._json(err.status, {"error": err.message}, headers)

    def _dispatch(self, method: str) -> None:
        self._body_started = self._body_done = False
        split = urlsplit(self.path)
        raw_path = split.path
        hub = self.hub
        with hub._lock:
            hub.requests.append((method, raw_path))
        try:
            fault = self._match_fault(method, raw_path)
            if fault is not None:
                if fault["drop"]:
                    length = int(self.headers.get("Content-Length") or 0)
                    for _ in self._iter_body(limit=max(1, length // 2)):
                        pass
                    raise _Drop()
                self._read_body()
                status = fault["status"]
                message = fault["message"] or (
                    STALE_PARENT_MESSAGE if status == 412 else f"Injected failure (HTTP {status})"
                )
                raise HubError(status, message)
            self.query = {k: v for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            self.user = self._authenticate()
            self._route(method, raw_path)
        except _Drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        except HubError as err:
            self._finish_body()
            self._error(err)
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - report as 500 and keep the traceback for the test
            with hub._lock:
                hub.errors.append(traceback.format_exc())
            self._finish_body()
            self._error(HubError(500, "Internal server error (see HubServer.errors)"))

    def _finish_body(self) -> None:
        """Make sure an unread request body does not corrupt the keep-alive connection."""
        if self._body_done:
            return
        if self._body_started:
            self.close_connection = True
            return
        try:
            for _ in self._iter_body():
                pass
        except Exception:  # noqa: BLE001
            self.close_connection = True

    def _match_fault(self, method: str, raw_path: str) -> dict | None:
        hub = self.hub
        with hub._lock:
            for fault in hub._faults:
                if fault["method"] not in (None, method):
                    continue
                if fault["substr"] in raw_path or fault["substr"] in unquote(raw_path):
                    fault["times"] -= 1
                    if fault["times"] <= 0:
                        hub._faults.remove(fault)
                    return dict(fault)
        return None

    def _authenticate(self) -> str | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        user = self.hub.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    # ------------------------------------------------------------------ routing
    def _route(self, method: str, raw_path: str) -> None:
        segs = [unquote(s) for s in raw_path.split("/")[1:]]
        if segs and segs[-1] == "" and len(segs) > 1:
            segs = segs[:-1]
        if segs[:1] == ["api"]:
            rest = segs[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if rest == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if rest == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo()
            if rest == ["validate-yaml"] and method == "POST":
                return self._validate_yaml()
            if rest == ["agent-harnesses"] and method == "GET":  # huggingface_hub's agent detection registry
                return self._json(200, {"standardEnvVars": [], "harnesses": {}})
            if len(rest) >= 3 and rest[0] in REPO_TYPES:
                return self._repo_api(method, REPO_TYPES[rest[0]], rest[1], rest[2], rest[3:])
            raise HubError(404, f"Unknown API route: {method} {raw_path}")
        if segs[:1] == ["__lfs"] and len(segs) == 3:
            if segs[1] == "upload" and method == "PUT":
                return self._lfs_upload(segs[2])
            if segs[1] == "verify" and method == "POST":
                return self._lfs_verify(segs[2])
        repo_type = "model"
        if segs[:1] in (["datasets"], ["spaces"]):
            repo_type, segs = REPO_TYPES[segs[0]], segs[1:]
        if len(segs) >= 2 and segs[1].endswith(".git") and segs[2:] == ["info", "lfs", "objects", "batch"]:
            if method == "POST":
                return self._lfs_batch(repo_type, segs[0], segs[1][: -len(".git")])
        if len(segs) >= 4 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            rev, path = self._split_rev(segs[3:])
            return self._resolve(repo_type, segs[0], segs[1], rev, "/".join(path))
        raise HubError(404, f"Not found: {method} {raw_path}")

    @staticmethod
    def _split_rev(segs: list[str]) -> tuple[str, list[str]]:
        """Revision is one (url-encoded) segment, or an unencoded ``refs/<kind>/<name>``."""
        if segs and segs[0] == "refs" and len(segs) >= 3:
            return "/".join(segs[:3]), segs[3:]
        return (segs[0] if segs else "main"), segs[1:]

    def _repo_api(self, method: str, repo_type: str, ns: str, name: str, rest: list[str]) -> None:
        action = rest[0] if rest else ""
        args = rest[1:]
        if action.startswith("xet-") and action.endswith("-token"):
            self._read_body()
            raise HubError(
                400,
                "Xet storage is not supported by this test server: use classic LFS (set HF_HUB_DISABLE_XET=1 "
                "and patch huggingface_hub.constants.HF_HUB_DISABLE_XET = True).",
            )
        if method == "GET" and action in ("", "revision"):
            rev = self._split_rev(args)[0] if action == "revision" else None
            return self._repo_info(repo_type, ns, name, rev)
        if method == "GET" and action == "tree":
            rev, path = self._split_rev(args)
            return self._tree(repo_type, ns, name, rev, "/".join(path))
        if method == "POST" and action == "paths-info":
            return self._paths_info(repo_type, ns, name, self._split_rev(args)[0])
        if method == "POST" and action == "preupload":
            return self._preupload(repo_type, ns, name, self._split_rev(args)[0])
        if method == "POST" and action == "commit":
            return self._commit(repo_type, ns, name, self._split_rev(args)[0])
        if method == "GET" and action == "commits":
            return self._list_commits(repo_type, ns, name, self._split_rev(args)[0])
        if method == "GET" and action == "refs" and not args:
            return self._refs(repo_type, ns, name)
        if method == "GET" and action == "auth-check" and not args:
            self._get_repo(repo_type, ns, name)
            return self._json(200, {})
        if method == "PUT" and action == "settings" and not args:
            return self._settings(repo_type, ns, name)
        if action == "branch" and args and method in ("POST", "DELETE"):
            return self._branch(method, repo_type, ns, name, "/".join(args))
        if action == "tag" and args and method in ("POST", "DELETE"):
            return self._tag(method, repo_type, ns, name, "/".join(args))
        raise HubError(404, f"Unknown repo API route: {method} {action}")

    # ------------------------------------------------------------------ access helpers
    def _get_repo(self, repo_type: str, ns: str, name: str, write: bool = False) -> _Repo:
        hub = self.hub
        if write and self.user is None:
            self._finish_body()
            raise HubError(401, "Invalid username or password.")
        repo = hub._repos.get((repo_type, ns, name))
        readable = repo is not None and (not repo.private or hub._can_write(self.user, ns))
        if not readable:
            raise HubError(
                401 if self.user is None else 404,
                f"Repository Not Found for url: {self.path}.",
                code="RepoNotFound",
            )
        if write and not hub._can_write(self.user, ns):
            raise HubError(403, f"You don't have the rights to write to {repo_type}s/{ns}/{name}")
        return repo

    def _get_commit(self, repo: _Repo, rev: str | None) -> str:
        commit = self.hub._resolve_rev(repo, rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
        return commit

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.hub.url}/{URL_PREFIX[repo.type]}{repo.repo_id}"

    # ------------------------------------------------------------------ simple endpoints
    def _whoami(self) -> None:
        if self.user is None:
            raise HubError(401, "Invalid username or password.")
        orgs = [
            {"type": "org", "name": org, "fullname": org, "roleInOrg": "write"}
            for org in self.hub.orgs.get(self.user, [])
        ]
        self._json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(self.user.encode()).hexdigest()[:24],
                "name": self.user,
                "fullname": self.user.capitalize(),
                "email": f"{self.user}@example.com",
                "emailVerified": True,
                "isPro": False,
                "canPay": False,
                "avatarUrl": "",
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"displayName": "test-token", "role": "write"}},
            },
        )

    def _create_repo(self) -> None:
        payload = json.loads(self._read_body() or b"{}")
        if self.user is None:
            raise HubError(401, "Invalid username or password.")
        name = payload.get("name") or ""
        ns = payload.get("organization") or self.user
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name) or ".." in name or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name: {name!r}")
        if not self.hub._can_write(self.user, ns):
            raise HubError(403, f"You don't have the rights to create a {repo_type} under the namespace {ns!r}")
        private = payload.get("visibility") == "private" if "visibility" in payload else bool(payload.get("private"))
        hub = self.hub
        with hub._lock:
            key = (repo_type, ns, name)
            if key in hub._repos:
                repo = hub._repos[key]
                error = f"You already created this {repo_type} repo"
                return self._json(409, {"error": error, "url": self._repo_url(repo)})
            repo = _Repo(repo_type, ns, name, private)
            files = {".gitattributes": hub._store_git_blob(DEFAULT_GITATTRIBUTES.encode())}
            repo.branches["main"] = [hub._new_commit(repo, [], files, "initial commit", "", self.user)]
            hub._repos[key] = repo
            hub._save(repo)
        self._json(200, {"url": self._repo_url(repo), "name": repo.repo_id, "id": repo.repo_id})

    def _delete_repo(self) -> None:
        payload = json.loads(self._read_body() or b"{}")
        if self.user is None:
            raise HubError(401, "Invalid username or password.")
        ns = payload.get("organization") or self.user
        repo = self._get_repo(payload.get("type") or "model", ns, payload.get("name") or "", write=True)
        hub = self.hub
        with hub._lock:
            hub._repos.pop((repo.type, repo.namespace, repo.name), None)
            path = hub._repo_dir(repo) / "repo.json"
            if path.exists():
                path.unlink()
        self._json(200, {})

    def _settings(self, repo_type: str, ns: str, name: str) -> None:
        payload = json.loads(self._read_body() or b"{}")
        repo = self._get_repo(repo_type, ns, name, write=True)
        with self.hub._lock:
            if "private" in payload:
                repo.private = bool(payload["private"])
            if "visibility" in payload:
                repo.private = payload["visibility"] == "private"
            self.hub._save(repo)
        self._json(200, {})

    def _validate_yaml(self) -> None:
        payload = json.loads(self._read_body() or b"{}")
        content = payload.get("content")
        repo_type = payload.get("repoType") or "model"
        errors: list[str] = []
        warnings: list[str] = []
        if not isinstance(content, str):
            errors.append('"content" must be a string')
        else:
            try:
                has_block, metadata = _front_matter(content)
            except Exception as exc:  # yaml.YAMLError
                has_block, metadata = True, None
                errors.append(f"Invalid YAML in the metadata block: {exc}".replace("\n", " "))
            else:
                if not has_block or metadata is None:
                    warnings.append("Empty or missing yaml metadata in repo card")
                errors.extend(_card_errors(metadata, repo_type))
        status = 400 if errors else 200
        if "text/plain" in self.headers.get("Accept", ""):
            text = "\n".join(errors) if errors else "OK"
            return self._send(status, text.encode(), "text/plain; charset=utf-8")
        self._json(
            status,
            {"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]},
        )

    # ------------------------------------------------------------------ read endpoints
    def _card_data(self, repo: _Repo, files: dict) -> dict | None:
        entry = files.get("README.md")
        if entry is None:
            return None
        try:
            _, metadata = _front_matter(self.hub._blob_path(entry).read_text(encoding="utf-8", errors="replace"))
        except Exception:  # noqa: BLE001
            return None
        return metadata if isinstance(metadata, dict) else None

    def _repo_info(self, repo_type: str, ns: str, name: str, rev: str | None) -> None:
        hub = self.hub
        with hub._lock:
            repo = self._get_repo(repo_type, ns, name)
            commit = self._get_commit(repo, rev)
            data = repo.commits[commit]
            files = dict(data["files"])
        blobs = _truthy(self._param("blobs"))
        siblings = []
        for path in sorted(files):
            entry = files[path]
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    sibling["lfs"] = {
                        "size": entry["size"],
                        "sha256": entry["lfs"],
                        "pointerSize": entry["pointer_size"],
                    }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": commit,
            "lastModified": data["date"],
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(entry["size"] for entry in files.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo.repo_id
        card = self._card_data(repo, files)
        if card is not None:
            info["cardData"] = card
        expand = self.query.get("expand") or self.query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in set(expand) | {"_id", "id"}}
        self._json(200, info)

    def _entries(self, repo: _Repo, commit: str) -> tuple[dict, dict]:
        """(files, folders) of a commit; folders maps folder path -> tree oid."""
        files = repo.commits[commit]["files"]
        children: dict[str, list[str]] = {}
        for path in files:
            parts = path.split("/")
            for i in range(1, len(parts)):
                children.setdefault("/".join(parts[:i]), []).append(path)
        folders = {
            folder: hashlib.sha1("".join(f"{p} {files[p]['oid']}\n" for p in sorted(paths)).encode()).hexdigest()
            for folder, paths in children.items()
        }
        return files, folders

    def _last_commit(self, repo: _Repo, commit: str, path: str, is_dir: bool) -> dict:
        def state(cid: str):
            files = repo.commits[cid]["files"]
            if not is_dir:
                return files.get(path, {}).get("oid")
            prefix = path + "/"
            return sorted((p, e["oid"]) for p, e in files.items() if p.startswith(prefix))

        history = self.hub._history(repo, commit)
        last = history[0]
        current = state(last)
        for cid in history[1:]:
            if state(cid) != current:
                break
            last = cid
        data = repo.commits[last]
        return {"id": last, "title": data["title"], "date": data["date"]}

    def _entry_json(self, repo: _Repo, commit: str, path: str, files: dict, folders: dict, expand: bool) -> dict:
        if path in files:
            entry = files[path]
            out: dict[str, Any] = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
            if entry["lfs"]:
                out["lfs"] = {"oid": entry["lfs"], "size": entry["size"], "pointerSize": entry["pointer_size"]}
        else:
            out = {"type": "directory", "oid": folders[path], "size": 0, "path": path}
        if expand:
            out["lastCommit"] = self._last_commit(repo, commit, path, out["type"] == "directory")
            if out["type"] == "file":
                out["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
        return out

    def _tree(self, repo_type: str, ns: str, name: str, rev: str, path: str) -> None:
        hub = self.hub
        path = path.strip("/")
        recursive = _truthy(self._param("recursive"))
        expand = _truthy(self._param("expand"))
        with hub._lock:
            repo = self._get_repo(repo_type, ns, name)
            commit = self._get_commit(repo, rev)
            files, folders = self._entries(repo, commit)
            if path and path not in folders:
                raise HubError(
                    404,
                    f"{'Not a directory' if path in files else 'Entry not found'}: {path}",
                    code="EntryNotFound",
                    headers={"X-Repo-Commit": commit},
                )
            prefix = path + "/" if path else ""
            names = [
                p
                for p in list(folders) + list(files)
                if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
            ]
            names.sort(key=lambda p: (p not in folders, p))  # "tree first", like the Hub
            page_size = max(1, min(self.hub.tree_page_size, 50) if expand else self.hub.tree_page_size)
            cursor = self._param("cursor", "0") or "0"
            if not cursor.isdigit():
                raise HubError(400, f"Invalid cursor: {cursor!r}")
            start = int(cursor)
            page = [self._entry_json(repo, commit, p, files, folders, expand) for p in names[start : start + page_size]]
        headers = {"X-Repo-Commit": commit}
        if start + page_size < len(names):
            query = {"recursive": str(recursive).lower(), "expand": str(expand).lower(), "cursor": start + page_size}
            next_url = f"{hub.url}{urlsplit(self.path).path}?" + "&".join(f"{k}={v}" for k, v in query.items())
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._json(200, page, headers)

    def _paths_info(self, repo_type: str, ns: str, name: str, rev: str) -> None:
        body = self._read_body()
        if "json" in self.headers.get("Content-Type", ""):
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), _truthy((form.get("expand") or ["false"])[0])
        hub = self.hub
        with hub._lock:
            repo = self._get_repo(repo_type, ns, name)
            commit = self._get_commit(repo, rev)
            files, folders = self._entries(repo, commit)
            out = [
                self._entry_json(repo, commit, p.strip("/"), files, folders, expand)
                for p in dict.fromkeys(paths)
                if p.strip("/") in files or p.strip("/") in folders
            ]
        self._json(200, out, {"X-Repo-Commit": commit})

    def _list_commits(self, repo_type: str, ns: str, name: str, rev: str) -> None:
        hub = self.hub
        with hub._lock:
            repo = self._get_repo(repo_type, ns, name)
            commit = self._get_commit(repo, rev)
            out = []
            for cid in hub._history(repo, commit):
                data = repo.commits[cid]
                out.append(
                    {
                        "id": cid,
                        "title": data["title"],
                        "message": data["message"],
                        "date": data["date"],
                        "authors": [{"user": data["author"], "avatar": ""}],
                        "formatted": {"title": data["title"], "message": data["message"]},
                    }
                )
        self._json(200, out)

    def _refs(self, repo_type: str, ns: str, name: str) -> None:
        with self.hub._lock:
            repo = self._get_repo(repo_type, ns, name)
            out: dict[str, list] = {"branches": [], "converts": [], "tags": [], "pullRequests": []}
            for branch, commits in repo.branches.items():
                if branch.startswith("refs/convert/"):
                    ref = {"name": branch.split("/", 2)[2], "ref": branch, "targetCommit": commits[-1]}
                    out["converts"].append(ref)
                elif branch.startswith("refs/pr/"):
                    out["pullRequests"].append({"name": branch, "ref": branch, "targetCommit": commits[-1]})
                else:
                    out["branches"].append({"name": branch, "ref": f"refs/heads/{branch}", "targetCommit": commits[-1]})
            for tag, commit in repo.tags.items():
                out["tags"].append({"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": commit})
        if not _truthy(self._param("include_prs")):
            del out["pullRequests"]
        self._json(200, out)

    def _resolve(self, repo_type: str, ns: str, name: str, rev: str, path: str) -> None:
        hub = self.hub
        with hub._lock:
            repo = self._get_repo(repo_type, ns, name)
            commit = self._get_commit(repo, rev)
            entry = repo.commits[commit]["files"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", code="EntryNotFound", headers={"X-Repo-Commit": commit})
        blob = hub._blob_path(entry)
        size = entry["size"]
        etag = entry["lfs"] or entry["oid"]
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["lfs"]}"', "X-Linked-Size": str(size)})
        start, end, status = 0, size - 1, 200
        range_header = self.headers.get("Range")
        match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", range_header or "")
        if match and (match.group(1) or match.group(2)):
            first, last = match.group(1), match.group(2)
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
                satisfiable = start < size and (not last or int(last) >= start)
            else:
                suffix = int(last)
                start, end = max(0, size - suffix), size - 1
                satisfiable = suffix > 0 and size > 0
            if not satisfiable:
                headers["Content-Range"] = f"bytes */{size}"
                raise HubError(416, "Requested range not satisfiable", headers=headers)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD" or length == 0:
            return
        with open(blob, "rb") as f:
            f.seek(start)
            remaining = length
            while remaining:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    # ------------------------------------------------------------------ upload endpoints
    def _gitattributes_lfs_patterns(self, repo: _Repo, commit: str) -> list[str]:
        entry = repo.commits[commit]["files"].get(".gitattributes")
        if entry is None:
            return []
        patterns = []
        for line in self.hub._blob_path(entry).read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    @staticmethod
    def _matches(path: str, patterns: list[str]) -> bool:
        base = path.rsplit("/", 1)[-1]
        for pattern in patterns:
            if "/" in pattern.strip("/"):
                if fnmatch.fnmatchcase(path, pattern.lstrip("/")):
                    return True
            elif fnmatch.fnmatchcase(base, pattern.strip("/")):
                return True
        return False

    @staticmethod
    def _looks_binary(sample: bytes) -> bool:
        if b"\x00" in sample:
            return True
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError as err:
            return err.start < len(sample) - 4  # a multi-byte char cut at the end of the sample is fine
        return False

    def _preupload(self, repo_type: str, ns: str, name: str, rev: str) -> None:
        payload = json.loads(self._read_body() or b"{}")
        hub = self.hub
        with hub._lock:
            repo = self._get_repo(repo_type, ns, name, write=True)
            commit = self._get_commit(repo, rev)
            files = repo.commits[commit]["files"]
            patterns = self._gitattributes_lfs_patterns(repo, commit)
        out = []
        for item in payload.get("files", []):
            path, size = item.get("path", ""), int(item.get("size") or 0)
            sample = base64.b64decode(item.get("sample") or "")
            lfs = size > 0 and (self._matches(path, patterns) or size > LFS_THRESHOLD or self._looks_binary(sample))
            existing = files.get(path)
            out.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": (existing["lfs"] or existing["oid"]) if existing else None,
                }
            )
        self._json(200, {"files": out, "commitOid": commit})

    def _lfs_batch(self, repo_type: str, ns: str, name: str) -> None:
        payload = json.loads(self._read_body() or b"{}")
        hub = self.hub
        with hub._lock:
            self._get_repo(repo_type, ns, name, write=payload.get("operation") == "upload")
        if payload.get("operation") != "upload":
            raise HubError(422, "Only the 'upload' operation is supported by this test server")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = str(obj.get("oid", "")), obj.get("size")
            if not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int) or size < 0:
                bad_size = size if isinstance(size, int) else 0
                objects.append({"oid": oid, "size": bad_size, "error": {"code": 422, "message": "Invalid object"}})
                continue
            out: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            stored = hub._lfs_path(oid)
            if not (stored.exists() and stored.stat().st_size == size):
                sig = hub._sign(oid, size)
                out["actions"] = {
                    "upload": {"href": f"{hub.url}/__lfs/upload/{oid}?size={size}&sig={sig}", "expires_in": 3600},
                    "verify": {"href": f"{hub.url}/__lfs/verify/{oid}?size={size}&sig={sig}", "expires_in": 3600},
                }
            objects.append(out)
        response = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        self._json(200, response, content_type="application/vnd.git-lfs+json")

    def _check_sig(self, oid: str) -> int:
        size_str, sig = self._param("size", ""), self._param("sig", "")
        if not (size_str or "").isdigit() or not hmac.compare_digest(sig or "", self.hub._sign(oid, int(size_str))):
            raise HubError(403, "Invalid or missing LFS signature")
        return int(size_str)

    def _lfs_upload(self, oid: str) -> None:
        try:
            size = self._check_sig(oid)
        except HubError:
            self._finish_body()
            raise
        hub = self.hub
        target = hub._lfs_path(oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, received = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".incomplete")
        try:
            with os.fdopen(fd, "wb") as tmp:
                for chunk in self._iter_body():
                    digest.update(chunk)
                    received += len(chunk)
                    if hub.keep_lfs:
                        tmp.write(chunk)
                if not hub.keep_lfs:
                    tmp.truncate(received)  # sparse: the right size, no blocks
            with hub._lock:
                hub.lfs_received += received
            if received != size or digest.hexdigest() != oid:
                raise HubError(400, f"Uploaded content does not match oid/size (got {received} bytes)")
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        self._send(200, b"", "text/plain")

    def _lfs_verify(self, oid: str) -> None:
        self._read_body()
        size = self._check_sig(oid)
        stored = self.hub._lfs_path(oid)
        if not stored.exists() or stored.stat().st_size != size:
            raise HubError(404, "Object not found")
        self._json(200, {"oid": oid, "size": size})

    def _commit(self, repo_type: str, ns: str, name: str, rev: str) -> None:
        body = self._read_body()
        hub = self.hub
        create_pr = _truthy(self._param("create_pr"))
        try:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise HubError(400, f"Invalid NDJSON payload: {err}") from None
        header = next((line.get("value", {}) for line in lines if line.get("key") == "header"), {})
        summary = (header.get("summary") or "").strip()
        if not summary:
            raise HubError(400, "A commit summary (title) is required")
        with hub._lock:
            repo = self._get_repo(repo_type, ns, name, write=True)
            head = self._get_commit(repo, rev)
            parent = head
            parent_commit = header.get("parentCommit")
            if parent_commit:
                resolved = hub._resolve_rev(repo, parent_commit) if _HEX.fullmatch(parent_commit) else None
                if create_pr:
                    if resolved is None:
                        raise HubError(404, f"Invalid parent commit: {parent_commit}", code="RevisionNotFound")
                    parent = resolved
                elif resolved != head:
                    raise HubError(412, STALE_PARENT_MESSAGE)
            branch = rev[len("refs/heads/") :] if rev.startswith("refs/heads/") else rev
            if not create_pr and branch not in repo.branches:
                raise HubError(400, f"Cannot commit to {rev!r}: not a branch")
            files = dict(repo.commits[parent]["files"])
            for line in lines:
                key, value = line.get("key"), line.get("value") or {}
                if key == "header":
                    continue
                path = str(value.get("path", ""))
                if key in ("file", "lfsFile"):
                    self._check_path(path)
                if key == "file":
                    encoding = value.get("encoding", "base64")
                    content = value.get("content", "")
                    data = base64.b64decode(content) if encoding == "base64" else content.encode()
                    files[path] = hub._store_git_blob(data)
                elif key == "lfsFile":
                    oid = str(value.get("oid", ""))
                    stored = hub._lfs_path(oid) if re.fullmatch(r"[0-9a-f]{64}", oid) else None
                    if stored is None or not stored.exists():
                        raise HubError(422, f"LFS object {oid} for {path!r} was not uploaded")
                    size = stored.stat().st_size
                    if value.get("size") is not None and int(value["size"]) != size:
                        raise HubError(422, f"LFS object {oid} has size {size}, not {value['size']}")
                    files[path] = hub._lfs_entry(oid, size)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    matched = [p for p in files if p.startswith(prefix)]
                    if not matched:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", code="EntryNotFound")
                    for p in matched:
                        del files[p]
                else:
                    raise HubError(400, f"Unknown commit operation: {key!r}")
            for path in files:
                parts = path.split("/")
                for i in range(1, len(parts)):
                    if "/".join(parts[:i]) in files:
                        raise HubError(400, f"Path conflict: {'/'.join(parts[:i])!r} is both a file and a folder")
            if "README.md" in files and files["README.md"] is not repo.commits[parent]["files"].get("README.md"):
                text = hub._blob_path(files["README.md"]).read_text(encoding="utf-8", errors="replace")
                try:
                    _, metadata = _front_matter(text)
                except Exception as exc:  # noqa: BLE001
                    raise HubError(400, f"Invalid metadata in README.md: {exc}".replace("\n", " ")) from None
                if problems := _card_errors(metadata, repo_type):
                    raise HubError(400, "Invalid metadata in README.md: " + "; ".join(problems))
            cid = hub._new_commit(repo, [parent], files, summary, header.get("description") or "", self.user)
            url = self._repo_url(repo)
            result: dict[str, Any] = {
                "success": True,
                "commitOid": cid,
                "commitUrl": f"{url}/commit/{cid}",
                "hookOutput": "",
            }
            if create_pr:
                num = repo.next_pr
                repo.next_pr += 1
                repo.branches[f"refs/pr/{num}"] = list(reversed(hub._history(repo, cid)))
                result["pullRequestUrl"] = f"{url}/discussions/{num}"
            else:
                repo.branches[branch].append(cid)
            hub._save(repo)
        self._json(200, result)

    @staticmethod
    def _check_path(path: str) -> None:
        parts = path.split("/")
        if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
            raise HubError(400, f"Invalid path in repo: {path!r}")

    def _branch(self, method: str, repo_type: str, ns: str, name: str, branch: str) -> None:
        payload = json.loads(self._read_body() or b"{}")
        hub = self.hub
        with hub._lock:
            repo = self._get_repo(repo_type, ns, name, write=True)
            if method == "DELETE":
                if branch not in repo.branches:
                    raise HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
                if branch == "main":
                    raise HubError(403, "Cannot delete the default branch")
                del repo.branches[branch]
            else:
                if branch in repo.branches:
                    raise HubError(409, f"Reference already exists: {branch}")
                start = self._get_commit(repo, payload.get("startingPoint") or "main")
                repo.branches[branch] = list(reversed(hub._history(repo, start)))
            hub._save(repo)
        self._json(200, {})

    def _tag(self, method: str, repo_type: str, ns: str, name: str, arg: str) -> None:
        payload = json.loads(self._read_body() or b"{}")
        hub = self.hub
        with hub._lock:
            repo = self._get_repo(repo_type, ns, name, write=True)
            if method == "DELETE":
                if repo.tags.pop(arg, None) is None:
                    raise HubError(404, f"Invalid rev id: {arg}", code="RevisionNotFound")
            else:
                tag = str(payload.get("tag") or "")
                if not tag:
                    raise HubError(400, "Missing tag name")
                if tag in repo.tags:
                    raise HubError(409, f"Tag already exists: {tag}")
                repo.tags[tag] = self._get_commit(repo, arg)
            hub._save(repo)
        self._json(200, {})
