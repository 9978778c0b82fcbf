"""A static file server on 127.0.0.1 that honours Range requests, for the URL and streaming tests.

It serves a folder the way GitHub serves release assets (`<base>/<tag>/<asset>`), records every
request, and can be told to misbehave on the next requests for a path: answer a status code (with
a `Retry-After`), drop the connection after some bytes, stall, drip the body a few bytes at a time,
or answer 200 with an HTML error page as proxies and captive portals do.

With `signed=True` it redirects like GitHub: an asset URL answers 302 to a signed URL
`/_signed/<n>/<tag>/<asset>?X-Amz-Signature=...`, which serves the bytes until it expires (then
403). A fault with `expire_signed=True` expires the signed URL its request used.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

RANGE_PATTERN = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 64 * 1024


SIGNED_PREFIX = "/_signed/"
SIGNATURE = "X-Amz-Signature=s3cr3t-signature"
ERROR_PAGE = b"<!DOCTYPE html><html><body><h1>Service unavailable</h1><p>Please log in to the network.</p></body></html>\n"


@dataclass
class Fault:
    """What to do instead of serving a request normally.

    `status` code (with `retry_after` seconds), `drop_after` bytes, `delay` seconds before
    answering, `drip` = (bytes, seconds): the body sent that many bytes at a time with a pause
    between, `html`: 200 with an HTML error page, `expire_signed`: the signed URL expires after
    this request.
    """

    status: int | None = None
    drop_after: int | None = None
    delay: float = 0.0
    retry_after: int | None = None
    drip: tuple[int, float] | None = None
    html: bool = False
    expire_signed: bool = False


class RangeFileServer:
    def __init__(self, root: str | Path, *, signed: bool = False):
        self.root = Path(root).resolve()
        self.signed = signed
        self._signatures = 0
        self._valid_signatures: set[int] = set()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.authorizations: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self.bytes_sent = 0  # response body bytes, all requests together
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

    def _sign(self, path: str) -> str:
        with self._lock:
            self._signatures += 1
            self._valid_signatures.add(self._signatures)
            return f"{SIGNED_PREFIX}{self._signatures}{path}?{SIGNATURE}"

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
                path = unquote(urlsplit(self.path).path)
                with server._lock:
                    server.requests.append((self.command, path, self.headers.get("Range")))
                    server.authorizations.append((path, self.headers.get("Authorization")))
                if server.signed and not path.startswith(SIGNED_PREFIX):
                    return self._reply_empty(302, {"Location": server._sign(path)})
                signature = None
                if server.signed:
                    number, _, path = path.removeprefix(SIGNED_PREFIX).partition("/")
                    path, signature = "/" + path, int(number)
                    if signature not in server._valid_signatures:
                        return self._reply_empty(403)
                fault = server._take_fault(path)
                if fault and fault.expire_signed and signature is not None:
                    with server._lock:
                        server._valid_signatures.discard(signature)
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
                with open(file, "rb") as f:
                    f.seek(start)
                    left = end - start + 1
                    while left:
                        step = fault.drip[0] if fault and fault.drip else CHUNK
                        chunk = f.read(min(step, left, budget if budget is not None else step) or 1)
                        if budget is not None:
                            budget -= len(chunk)
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
