"""Reading release assets over HTTP: retried, resumed, bounded in time, never silently wrong.

A shard is 2 GB on a server far away. `HttpFile` reads it front to back as one GET; when the
connection drops or the server answers 5xx/429, it waits (exponential backoff, or the server's
`Retry-After`, bounded attempts) and goes on with `Range: bytes=<position>-`. It knows the size
from the first response, so a body that ends early is resumed, not taken as the end.

Time is bounded three ways: every socket operation has a timeout; a transfer slower than a
minimum rate over a window (a server that drips a few bytes at a time resets the socket timeout
forever) is dropped and resumed like a lost connection; and the network time of one asset, retries
and waits included, has a total deadline. Time the caller spends between reads (a converter busy
with the rows) is not counted: only time spent waiting on the network is.

A response that is not the asset is refused and retried like a failure: an HTML or JSON page
(proxies and captive portals answer 200 with one), a body that does not start like a tar (`ustar`
at byte 257) or a gzip (`1f 8b`) for assets named so, or a size other than the manifest's.

GitHub answers an asset URL with a redirect to a signed URL that expires. Resumes go to the signed
URL while it works; when it answers 401/403/410, the next request goes back to the asset URL for a
fresh one. A 404 is a `ReleaseError` naming the asset and the release tag.

URLs are shown only through `redact()`: without user info (a mirror's credentials are sent as an
`Authorization` header that is never forwarded to a redirect's host) and without query tokens.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import ReleaseError, logger

TIMEOUT_SECONDS = float(os.environ.get("REGHEAD_HTTP_TIMEOUT", 60))
MAX_ATTEMPTS = int(os.environ.get("REGHEAD_HTTP_ATTEMPTS", 6))
BACKOFF_SECONDS = float(os.environ.get("REGHEAD_HTTP_BACKOFF", 1.0))
# Network time one asset may take, retries and waits included (a 1.9 GB shard at 1 MB/s: 32 min).
DEADLINE_SECONDS = float(os.environ.get("REGHEAD_HTTP_DEADLINE", 3 * 3600))
# Below this many bytes per second over a window, the transfer is dropped and resumed.
MIN_RATE = float(os.environ.get("REGHEAD_HTTP_MIN_RATE", 32 * 1024))
RATE_WINDOW_SECONDS = float(os.environ.get("REGHEAD_HTTP_RATE_WINDOW", 30))
# Whole downloads fetched again from scratch when their SHA-256 does not match SHA256SUMS.
DOWNLOAD_ATTEMPTS = int(os.environ.get("REGHEAD_DOWNLOAD_ATTEMPTS", 3))
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
EXPIRED_STATUSES = frozenset({401, 403, 410})  # how a signed URL says it has expired
NOT_ASSET_TYPES = ("html", "json")  # content types an error page comes with, never an asset
TAR_MAGIC_OFFSET = 257
HEAD_BYTES = 512  # enough to recognise a tar or a gzip
# Forward seeks shorter than this read through the open response instead of a new request.
SEEK_BY_READING = 4 * 2**20
CHUNK = 1 << 20
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
USER_AGENT = "reghead (+https://github.com/snap-research/RegHead)"
VERIFIED_SUFFIX = ".sha256"  # beside a cached download: the hash it was verified against
PARTIAL_SUFFIX = ".incomplete"


class NotTheAsset(OSError):
    """The server answered with something else than the asset (retried like a transient failure)."""


class TooSlow(OSError):
    """The transfer fell below the minimum rate (retried like a dropped connection)."""


_TRANSIENT = (OSError, http.client.HTTPException, socket.timeout)


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def redact(url: str) -> str:
    """`url` as it may be shown: no user info (credentials), no query or fragment (signed tokens)."""
    if not is_url(url):
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _split_credentials(url: str) -> tuple[str, str | None]:
    """(url without user info, the `Authorization` header value it held, if any)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    token = base64.b64encode(unquote(userinfo).encode("utf-8")).decode("ascii")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), f"Basic {token}"


def expected_magic(name: str) -> tuple[int, bytes] | None:
    """(offset, bytes) an asset named `name` starts with: a tar's `ustar`, a gzip's `1f 8b`."""
    if name.endswith((".gz", ".tgz")):
        return 0, b"\x1f\x8b"
    if name.endswith(".tar"):
        return TAR_MAGIC_OFFSET, b"ustar"
    return None


class HttpFile(io.RawIOBase):
    """A read-only, seekable file over HTTP GET with Range, retried, resumed and bounded in time."""

    def __init__(
        self,
        url: str,
        *,
        what: str | None = None,
        size: int | None = None,
        timeout: float | None = None,
        attempts: int | None = None,
    ):
        super().__init__()
        self.url, self._authorization = _split_credentials(url)
        self.shown = redact(url)
        self.what = what or self.shown
        self.expected_size = size  # from the release manifest, when it says
        self.timeout = TIMEOUT_SECONDS if timeout is None else timeout
        self.attempts = MAX_ATTEMPTS if attempts is None else attempts
        self.magic = expected_magic(urlsplit(self.url).path)
        self.position = 0
        self.size: int | None = None
        self._response = None
        self._head = b""  # bytes read from the response to recognise the asset, not yet returned
        self._signed: str | None = None  # where the asset URL redirected to, while it works
        self._network_seconds = 0.0
        self._window_seconds = 0.0
        self._window_bytes = 0
        self._slow_windows = 0
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
        """Read up to `len(buffer)` bytes into `buffer`; 0 at the end.

        Fewer only at the end or after a dropped connection. `read` is `io.RawIOBase`'s, built on this.
        """
        view = memoryview(buffer).cast("B")
        if self.size is not None and self.position >= self.size or not view:
            return 0
        if self._head:
            taken = min(len(view), len(self._head))
            view[:taken] = self._head[:taken]
            self._head = self._head[taken:]
            self.position += taken
            return taken
        for attempt in range(1, self.attempts + 1):
            try:
                if self._response is None:
                    self._open_at(self.position)
                    if self._response is None:  # at the end
                        return 0
                    if self._head:
                        return self.readinto(view)
                got = self._receive_into(view)
                if not got and self.size is not None and self.position < self.size:
                    raise http.client.IncompleteRead(b"", self.size - self.position)
                self.position += got
                return got
            except ReleaseError:
                raise
            except _TRANSIENT as error:
                self._close_response()
                self._wait(attempt, f"reading at byte {self.position} failed ({error})")
        raise AssertionError("unreachable")

    def _receive_into(self, view: memoryview) -> int:
        """Fill `view` from the open response, checking the rate and deadline after each socket read.

        `read1` does one socket read at most, so a drip cannot keep one call waiting forever. Each
        read is copied in and let go at once: a slow server's many small reads never pile up in
        memory waiting to be joined. When the connection fails after some bytes came, they are
        kept and the next read resumes.
        """
        got = 0
        try:
            while got < len(view):
                started = time.monotonic()
                data = self._response.read1(min(len(view) - got, CHUNK))
                self._count(time.monotonic() - started, len(data))
                if not data:
                    break
                view[got : got + len(data)] = data
                got += len(data)
        except _TRANSIENT:
            if not got:
                raise
            self._close_response()
        return got

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._close_response()
        super().close()

    # --- time ---
    def _count(self, seconds: float, received: int) -> None:
        """Add network time; raise TooSlow when the last window's rate is under MIN_RATE."""
        self._network_seconds += seconds
        self._window_seconds += seconds
        self._window_bytes += received
        self._check_deadline()
        if self._window_seconds >= RATE_WINDOW_SECONDS:
            rate = self._window_bytes / self._window_seconds
            self._window_seconds, self._window_bytes = 0.0, 0
            if rate >= MIN_RATE:
                self._slow_windows = 0
                return
            # Counted across reads: a drip that gives a few bytes per attempt still ends.
            self._slow_windows += 1
            reason = f"the transfer ran at {rate:.0f} bytes/s, under the minimum of {MIN_RATE:.0f} (REGHEAD_HTTP_MIN_RATE)"
            if self._slow_windows >= self.attempts:
                raise ReleaseError(
                    f"{self.shown}: {reason}; gave up after {self.attempts} attempts",
                    file=self.what,
                    hint="Check the network or the server; set REGHEAD_HTTP_MIN_RATE lower to be more patient",
                )
            raise TooSlow(reason)

    def _check_deadline(self, wait: float = 0.0) -> None:
        if self._network_seconds + wait > DEADLINE_SECONDS:
            raise ReleaseError(
                f"{self.shown}: gave up after {self._network_seconds:.0f} s of network time at byte {self.position}, "
                f"over the deadline of {DEADLINE_SECONDS:.0f} s per asset",
                file=self.what,
                hint="Check the network or the server; set REGHEAD_HTTP_DEADLINE to be more patient",
            )

    # --- requests ---
    def _wait(self, attempt: int, reason: str, retry_after: float | None = None) -> None:
        if attempt >= self.attempts:
            raise ReleaseError(
                f"{self.shown}: {redact_text(reason)}; gave up after {self.attempts} attempts",
                file=self.what,
                hint="Check the network or the server; set REGHEAD_HTTP_ATTEMPTS or REGHEAD_HTTP_TIMEOUT to be more patient",
            )
        delay = max(BACKOFF_SECONDS * 2 ** (attempt - 1), retry_after or 0.0)
        self._check_deadline(wait=delay)
        logger.warning("%s: %s; retrying in %.1f s (%d/%d)", self.shown, redact_text(reason), delay, attempt, self.attempts)
        time.sleep(delay)
        self._network_seconds += delay

    def _open_at(self, position: int) -> None:
        attempt = 0
        while True:
            attempt += 1
            location = self._signed or self.url
            request = urllib.request.Request(location, headers={"User-Agent": USER_AGENT})
            if self._authorization and location == self.url:
                request.add_unredirected_header("Authorization", self._authorization)  # never sent to a redirect
            if position:
                request.add_header("Range", f"bytes={position}-")
            started = time.monotonic()
            try:
                try:
                    response = urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 - http(s) only
                    self._accept(response, position)
                finally:
                    self._network_seconds += time.monotonic() - started
                return
            except urllib.error.HTTPError as error:
                error.close()
                if error.code == 416 and self.size is not None and position >= self.size:
                    self._response = None
                    return
                if self._signed is not None and error.code in EXPIRED_STATUSES:
                    logger.info("%s: the signed URL it redirected to has expired; asking for a fresh one", self.shown)
                    self._signed = None
                    attempt -= 1  # not a failure of the server: the next request gets a fresh one
                    continue
                if error.code in RETRY_STATUSES:
                    self._wait(attempt, f"the server answered HTTP {error.code}", _retry_after(error.headers))
                    continue
                folder, _, asset = self.shown.rpartition("/")
                raise ReleaseError(
                    f"asset {asset!r} of release {folder.rpartition('/')[2]!r}: {self.shown} answered HTTP {error.code} ({error.reason})",
                    file=self.what,
                    hint="Check that the release tag and asset exist there, or point base_url / REGHEAD_BASE_URL at a mirror that has them",
                ) from None
            except ReleaseError:
                raise
            except NotTheAsset as error:
                self._wait(attempt, f"the server answered with something that is not the asset: {error}")
            except TooSlow as error:
                self._wait(attempt, str(error))
            except _TRANSIENT as error:
                self._wait(attempt, f"no response ({error})")

    def _accept(self, response, position: int) -> None:
        """Take `response` as the asset from `position` on, or close it and raise NotTheAsset."""
        try:
            if response.geturl() != (self._signed or self.url):
                self._signed = response.geturl()  # resumes go there until it expires
            kind = response.headers.get("Content-Type", "").lower()
            if any(word in kind for word in NOT_ASSET_TYPES):
                raise NotTheAsset(f"content type {kind!r}")
            if response.status == 206:
                match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if not match or int(match[1]) != position:
                    raise ReleaseError(
                        f"{self.shown} answered a Range request for byte {position} with {response.headers.get('Content-Range')!r}",
                        file=self.what,
                    )
                total = int(match[3]) if match[3] != "*" else None
            else:
                length = response.headers.get("Content-Length")
                total = int(length) if length is not None else None
            if total is not None and self.expected_size is not None and total != self.expected_size:
                raise NotTheAsset(f"{total} bytes where the release manifest says {self.expected_size}")
            if total is not None:
                self.size = total
            if response.status != 206 and position:  # the server ignored Range: read up to where we were
                remaining = position
                while remaining:
                    skipped = response.read(min(CHUNK, remaining))
                    if not skipped:
                        break
                    remaining -= len(skipped)
            if position == 0 and self.magic is not None:
                self._head = self._check_head(response)
        except BaseException:
            response.close()
            raise
        self._response = response

    def _check_head(self, response) -> bytes:
        """The first bytes of the body, checked to start the way the asset's kind does."""
        offset, magic = self.magic
        head = b""
        while len(head) < HEAD_BYTES:
            started = time.monotonic()
            more = response.read1(HEAD_BYTES - len(head))
            self._count(time.monotonic() - started, len(more))
            if not more:
                break
            head += more
        if not head:
            return head  # an empty asset: the reader says what is wrong with it
        if len(head) < offset + len(magic) and self.size is not None and len(head) >= self.size:
            return head  # complete but too short to tell: the reader says it is truncated
        if head[offset : offset + len(magic)] != magic:
            raise NotTheAsset(f"the body starts with {head[:16]!r}, not like a {'gzip' if offset == 0 else 'tar'} file")
        return head

    def _close_response(self) -> None:
        self._head = b""
        if self._response is not None:
            self._response.close()
            self._response = None


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>)]+")


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (library errors quote URLs)."""
    return _URL_IN_TEXT.sub(lambda match: redact(match[0]), text)


# --- downloading to a cache ------------------------------------------------------------------


def _verified_marker(target: Path) -> Path:
    return target.with_name(target.name + VERIFIED_SUFFIX)


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cached_copy_is_good(target: Path, *, sha256: str | None, size: int | None) -> bool:
    """Whether a cached download may be used as it is.

    Its size must match the manifest's; when its hash is known, it must have been verified
    against it (a marker beside it names the hash). A copy never verified (left by an older
    version, or by hand) is hashed once now: kept and marked if it matches, refused if not.
    """
    if not target.is_file():
        return False
    if size is not None and target.stat().st_size != size:
        logger.warning("%s is %d bytes, not %d: downloading it again", target, target.stat().st_size, size)
        return False
    if sha256 is None:
        return True
    marker = _verified_marker(target)
    if marker.is_file() and marker.read_text().strip() == sha256:
        return True
    actual = _file_sha256(target)
    if actual != sha256:
        logger.warning("%s has SHA-256 %s, not %s as SHA256SUMS says: downloading it again", target, actual, sha256)
        return False
    marker.write_text(sha256)
    return True


def download(url: str, target: Path, *, what: str, sha256: str | None = None, size: int | None = None, progress=None) -> Path:
    """Download `url` to `target`: written as `<target>.incomplete`, verified, then renamed.

    With `sha256`, the bytes are hashed as they arrive; a mismatch discards the download and
    starts again from scratch (`DOWNLOAD_ATTEMPTS` in all), then raises `ReleaseError` naming both
    hashes. Nothing that was not verified ever has the final name. A folder that cannot be
    written (read-only, full) is a `ReleaseError` naming the path.
    """
    try:
        if cached_copy_is_good(target, sha256=sha256, size=size):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + PARTIAL_SUFFIX)
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            actual = _download_once(url, partial, what=what, size=size, progress=progress)
            if sha256 is None or actual == sha256:
                if sha256 is not None:
                    _verified_marker(target).write_text(sha256)
                os.replace(partial, target)
                return target
            partial.unlink()
            if attempt < DOWNLOAD_ATTEMPTS:
                logger.warning("%s: SHA-256 mismatch (SHA256SUMS expects %s, the download has %s): downloading it again (%d/%d)",
                               what, sha256, actual, attempt, DOWNLOAD_ATTEMPTS)
        raise ReleaseError(
            f"SHA-256 mismatch after {DOWNLOAD_ATTEMPTS} downloads of {redact(url)}: SHA256SUMS expects {sha256}, the download has {actual}",
            file=what,
            hint="The server does not serve the release's bytes: point base_url / REGHEAD_BASE_URL at another mirror",
        )
    except OSError as error:
        path = error.filename or target.parent
        raise ReleaseError(
            f"cannot write the download to {str(path)!r} ({error.strerror or error})",
            file=what,
            hint="Free some space there or make it writable, or point cache_dir= at another folder",
        ) from None


def _download_once(url: str, partial: Path, *, what: str, size: int | None, progress) -> str:
    """Download to `partial` from scratch; returns the SHA-256 of what was written."""
    digest = hashlib.sha256()
    try:
        buffer = memoryview(bytearray(CHUNK))
        with HttpFile(url, what=what, size=size) as source, open(partial, "wb") as sink:
            while got := source.readinto(buffer):
                sink.write(buffer[:got])
                digest.update(buffer[:got])
                if progress is not None:
                    progress(got)
    except BaseException:
        partial.unlink(missing_ok=True)  # a next run starts from scratch: no space kept for nothing
        raise
    return digest.hexdigest()
