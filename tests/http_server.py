"""A static file server on 127.0.0.1 that honours Range requests, for the URL and streaming tests.

It serves a folder the way GitHub serves release assets (`<base>/<tag>/<asset>`), records every
request for an asset, and can be told to misbehave on the next requests for a path: answer a status
code (with a `Retry-After`), drop the connection after some bytes, stall, drip the body a few bytes
at a time, answer 200 with an HTML error page as proxies and captive portals do, or flip a bit.

With `signed_ttl` it redirects like GitHub: an asset URL answers 302 to a signed URL
(`/signed/<tag>/<asset>?expires=...&sig=...`, like objects.githubusercontent.com), which serves the
bytes, honours Range and answers 403 once it has expired: after `signed_ttl` seconds, or after a
request that took a fault with `expire_signed=True`. A client that resumes must go back to the
asset URL for a fresh one. With `rate`, the bytes of all connections together are throttled.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

RANGE_PATTERN = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 64 * 1024
SIGNED_PREFIX = "/signed"
ERROR_PAGE = b"<!DOCTYPE html><html><body><h1>Service unavailable</h1><p>Please log in to the network.</p></body></html>\n"


@dataclass
class Fault:
    """What to do instead of serving a request normally.

    `status` code (with `retry_after` seconds), `drop_after` bytes, `delay` seconds before
    answering, `drip` = (bytes, seconds): the body sent that many bytes at a time with a pause
    between, `html`: 200 with an HTML error page, `expire_signed`: the signed URL expires after
    this request, `flip_at`: the body has one bit flipped at that fraction of the file's size.
    """

    status: int | None = None
    drop_after: int | None = None
    delay: float = 0.0
    retry_after: int | None = None
    drip: tuple[int, float] | None = None
    html: bool = False
    expire_signed: bool = False
    flip_at: float | None = None


class Throttle:
    """A shared budget of `rate` bytes per second, taken by every chunk of every connection."""

    def __init__(self, rate: float):
        self.rate = rate
        self._free_at = time.monotonic()
        self._lock = threading.Lock()

    def take(self, size: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._free_at = max(self._free_at, now) + size / self.rate
            wait = self._free_at - now - size / self.rate
        if wait > 0:
            time.sleep(wait)


class RangeFileServer:
    """`signed_ttl`: seconds a signed URL stays valid (None: no redirect); `rate`: bytes/s of all
    connections together (None: unthrottled).

    `requests` records (method, asset path, Range) of the requests that reach an asset: all of them
    unsigned, the signed URLs' ones (under the asset's path) when signed. `redirects` counts the
    302s, `expired` the requests refused because their signed URL had expired, `authorizations`
    records (path as requested, Authorization header) of every request.
    """

    def __init__(self, root: str | Path, *, signed_ttl: float | None = None, rate: float | None = None):
        self.root = Path(root).resolve()
        self.signed_ttl = signed_ttl
        self.throttle = Throttle(rate) if rate else None
        self.requests: list[tuple[str, str, str | None]] = []
        self.authorizations: list[tuple[str, str | None]] = []
        self.redirects = 0
        self.expired = 0
        self.bytes_sent = 0  # response body bytes, all requests together
        self._secret = secrets.token_bytes(16)
        self._revoked: set[str] = set()  # signatures expired by a fault
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, path_suffix: str, fault: Fault, times: int = 1) -> None:
        """Apply `fault` to the next `times` requests whose path ends with `path_suffix`."""
        with self._lock:
            self._faults.setdefault(path_suffix, []).extend([fault] * times)

    def corrupt_next(self, asset: str, times: int = 1, *, at: float = 0.5) -> None:
        """Serve the next `times` downloads of `asset` with one bit flipped at `at` of its size."""
        self.fail_next(f"/{asset}", Fault(flip_at=at), times)

    def _signature(self, path: str, expires: str) -> str:
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_url(self, path: str) -> str:
        """A fresh signed URL for the asset at `path` (`/<tag>/<asset>`), as the 302 gives it."""
        expires = f"{time.time() + self.signed_ttl:.3f}"
        return f"{self.url}{SIGNED_PREFIX}{quote(path)}?expires={expires}&sig={self._signature(path, expires)}"

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for suffix, faults in self._faults.items():
                if path.endswith(suffix) and faults:
                    return faults.pop(0)
        return None

    def __enter__(self) -> "RangeFileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                parts = urlsplit(self.path)
                path = unquote(parts.path)
                with server._lock:
                    server.authorizations.append((path, self.headers.get("Authorization")))
                signature = None
                if server.signed_ttl is not None:
                    if not path.startswith(SIGNED_PREFIX + "/"):
                        with server._lock:
                            server.redirects += 1
                        return self._reply_empty(302, {"Location": server.signed_url(path)})
                    path = path[len(SIGNED_PREFIX) :]
                    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
                    expires, signature = query.get("expires", ""), query.get("sig", "")
                    if not hmac.compare_digest(signature, server._signature(path, expires)):
                        return self._reply_empty(403)
                    if float(expires) < time.time() or signature in server._revoked:
                        with server._lock:
                            server.expired += 1
                        return self._reply_empty(403)  # S3's "Request has expired", as GitHub's CDN answers
                with server._lock:
                    server.requests.append((self.command, path, self.headers.get("Range")))
                fault = server._take_fault(path)
                if fault and fault.expire_signed and signature is not None:
                    with server._lock:
                        server._revoked.add(signature)
                if fault and fault.delay:
                    time.sleep(fault.delay)
                if fault and fault.status:
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                    return self._reply_empty(fault.status, headers)
                if fault and fault.html:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(ERROR_PAGE)))
                    self.end_headers()
                    if body:
                        self.wfile.write(ERROR_PAGE)
                    return
                file = (server.root / path.lstrip("/")).resolve()
                if server.root not in file.parents or not file.is_file():
                    return self._reply_empty(404)
                size = file.stat().st_size
                start, end, status = 0, size - 1, 200
                wanted = self.headers.get("Range")
                if wanted:
                    match = RANGE_PATTERN.match(wanted.strip())
                    if not match or (not match[1] and not match[2]):
                        return self._reply_empty(416, {"Content-Range": f"bytes */{size}"})
                    if match[1]:
                        start = int(match[1])
                        end = min(int(match[2]), size - 1) if match[2] else size - 1
                    else:
                        start = max(0, size - int(match[2]))
                    if start >= size or start > end:
                        return self._reply_empty(416, {"Content-Range": f"bytes */{size}"})
                    status = 206
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if not body:
                    return
                budget = fault.drop_after if fault and fault.drop_after is not None else None
                flip = int(size * fault.flip_at) if fault and fault.flip_at is not None else -1
                with open(file, "rb") as f:
                    f.seek(start)
                    left = end - start + 1
                    while left:
                        step = fault.drip[0] if fault and fault.drip else CHUNK
                        at = end + 1 - left
                        chunk = f.read(min(step, left, budget if budget is not None else step) or 1)
                        if budget is not None:
                            budget -= len(chunk)
                        if at <= flip < at + len(chunk):
                            chunk = bytearray(chunk)
                            chunk[flip - at] ^= 1
                        if server.throttle is not None:
                            server.throttle.take(len(chunk))
                        try:
                            self.wfile.write(chunk)
                            if fault and fault.drip:
                                self.wfile.flush()
                                time.sleep(fault.drip[1])
                        except (BrokenPipeError, ConnectionResetError):
                            return
                        with server._lock:
                            server.bytes_sent += len(chunk)
                        left -= len(chunk)
                        if budget is not None and budget <= 0 and left:
                            self.close_connection = True
                            self.wfile.flush()
                            self.connection.shutdown(2)
                            return

            def _reply_empty(self, status: int, headers: dict | None = None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
