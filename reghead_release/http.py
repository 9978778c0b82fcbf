"""Reading release assets over HTTP: retried, resumed with Range requests, never silently short.

A shard is 2 GB on a server far away. `HttpFile` reads it front to back as one GET; when the
connection drops or the server answers 5xx/429, it waits (exponential backoff, bounded attempts)
and goes on with `Range: bytes=<position>-`. It knows the size from the first response, so a
body that ends early is resumed, not taken as the end. A 404 is a clear `ReleaseError` naming the
URL. Every socket operation has a timeout.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import ReleaseError, logger

TIMEOUT_SECONDS = float(os.environ.get("REGHEAD_HTTP_TIMEOUT", 60))
MAX_ATTEMPTS = int(os.environ.get("REGHEAD_HTTP_ATTEMPTS", 6))
BACKOFF_SECONDS = float(os.environ.get("REGHEAD_HTTP_BACKOFF", 1.0))
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Forward seeks shorter than this read through the open response instead of a new request.
SEEK_BY_READING = 4 * 2**20
CHUNK = 1 << 20
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
USER_AGENT = "reghead (+https://github.com/snap-research/RegHead)"
_TRANSIENT = (OSError, http.client.HTTPException, socket.timeout)


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


class HttpFile(io.RawIOBase):
    """A read-only, seekable file over HTTP GET with Range, retried and resumed."""

    def __init__(self, url: str, *, what: str | None = None, timeout: float | None = None, attempts: int | None = None):
        super().__init__()
        self.url = url
        self.what = what or url
        self.timeout = TIMEOUT_SECONDS if timeout is None else timeout
        self.attempts = MAX_ATTEMPTS if attempts is None else attempts
        self.position = 0
        self.size: int | None = None
        self._response = None
        self._open_at(0)

    # --- io.RawIOBase ---
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size or 0}[whence]
        target = max(0, base + offset)
        distance = target - self.position
        if self._response is not None and 0 <= distance <= SEEK_BY_READING:
            while self.position < target:  # cheaper than a new request for a short hop
                if not self.read(min(CHUNK, target - self.position)):
                    break
        elif target != self.position:
            self._close_response()
            self.position = target
        return self.position

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self.size is not None and self.position >= self.size or size == 0:
            return b""
        for attempt in range(1, self.attempts + 1):
            try:
                if self._response is None:
                    self._open_at(self.position)
                    if self._response is None:  # at the end
                        return b""
                data = self._response.read(size)
                if not data and self.size is not None and self.position < self.size:
                    raise http.client.IncompleteRead(b"", self.size - self.position)
                self.position += len(data)
                return data
            except ReleaseError:
                raise
            except _TRANSIENT as error:
                self._close_response()
                self._wait(attempt, f"reading at byte {self.position} failed ({error})")
        raise AssertionError("unreachable")

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._close_response()
        super().close()

    # --- requests ---
    def _wait(self, attempt: int, reason: str) -> None:
        if attempt >= self.attempts:
            raise ReleaseError(
                f"{self.url}: {reason}; gave up after {self.attempts} attempts",
                file=self.what,
                hint="Check the network or the server; set REGHEAD_HTTP_ATTEMPTS or REGHEAD_HTTP_TIMEOUT to be more patient",
            )
        delay = BACKOFF_SECONDS * 2 ** (attempt - 1)
        logger.warning("%s: %s; retrying in %.1f s (%d/%d)", self.url, reason, delay, attempt, self.attempts)
        time.sleep(delay)

    def _open_at(self, position: int) -> None:
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(self.url, headers={"User-Agent": USER_AGENT})
            if position:
                request.add_header("Range", f"bytes={position}-")
            try:
                response = urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 - http(s) only
            except urllib.error.HTTPError as error:
                error.close()
                if error.code == 416 and self.size is not None and position >= self.size:
                    self._response = None
                    return
                if error.code in RETRY_STATUSES:
                    self._wait(attempt, f"the server answered HTTP {error.code}")
                    continue
                folder, _, asset = self.url.rpartition("/")
                raise ReleaseError(
                    f"asset {asset!r} of release {folder.rpartition('/')[2]!r}: {self.url} answered HTTP {error.code} ({error.reason})",
                    file=self.what,
                    hint="Check that the release tag and asset exist there, or point base_url / REGHEAD_BASE_URL at a mirror that has them",
                ) from None
            except _TRANSIENT as error:
                self._wait(attempt, f"no response ({error})")
                continue
            self._accept(response, position)
            return

    def _accept(self, response, position: int) -> None:
        if response.status == 206:
            match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match[1]) != position:
                response.close()
                raise ReleaseError(f"{self.url} answered a Range request for byte {position} with {response.headers.get('Content-Range')!r}", file=self.what)
            if match[3] != "*":
                self.size = int(match[3])
        else:
            length = response.headers.get("Content-Length")
            if length is not None:
                self.size = int(length)
            if position:  # the server ignored Range: read up to where we were
                remaining = position
                while remaining:
                    skipped = response.read(min(CHUNK, remaining))
                    if not skipped:
                        break
                    remaining -= len(skipped)
        self._response = response

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None


def download(url: str, target: Path, *, what: str, progress=None) -> Path:
    """Download `url` to `target` through `HttpFile`, written as `<target>.incomplete` then renamed.

    An existing `target` is kept as it is (its bytes are verified when a shard is read).
    """
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".incomplete")
    with HttpFile(url, what=what) as source, open(partial, "wb") as sink:
        while chunk := source.read(CHUNK):
            sink.write(chunk)
            if progress is not None:
                progress(len(chunk))
    os.replace(partial, target)
    return target

