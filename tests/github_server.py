"""A loopback server that serves release assets the way GitHub does, for the --from-release tests.

Built on `RangeFileServer` (Range, recorded requests, injected faults): the asset URL
`<base>/<tag>/<asset>` answers 302 to a signed URL (`/signed/<tag>/<asset>?expires=...&sig=...`,
like GitHub's objects.githubusercontent.com), which serves the bytes, honours Range and answers
403 once it has expired. A client that resumes must go back to the asset URL for a fresh one.
Optionally the bytes of all connections together are throttled to `rate` bytes/s.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from urllib.parse import parse_qs, quote, unquote, urlsplit

from http_server import RangeFileServer

SIGNED_PREFIX = "/signed"
CORRUPT_DIR = ".corrupt"  # under the root: copies of assets with one bit flipped


class Throttle:
    """A shared budget of `rate` bytes per second, taken by every write of every connection."""

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


class _ThrottledWriter:
    def __init__(self, raw, throttle: Throttle):
        self._raw = raw
        self._throttle = throttle

    def write(self, data) -> int:
        self._throttle.take(len(data))
        return self._raw.write(data)

    def __getattr__(self, name):
        return getattr(self._raw, name)


class GitHubReleaseServer(RangeFileServer):
    """`RangeFileServer` behind GitHub's redirect to expiring signed URLs, optionally throttled.

    `signed_ttl` is how long (seconds) a signed URL stays valid; `rate` caps the bytes per second
    of all connections together (None: unthrottled). `requests` records the requests for the bytes
    (signed URLs, under the asset's path), `redirects` counts the asset URL requests and `expired`
    the requests refused because their signature had expired.
    """

    def __init__(self, root, *, signed_ttl: float = 300.0, rate: float | None = None):
        super().__init__(root)
        self.signed_ttl = signed_ttl
        self.throttle = Throttle(rate) if rate else None
        self.redirects = 0
        self.expired = 0
        self._secret = secrets.token_bytes(16)
        self._corrupt: dict[str, int] = {}  # asset name -> downloads still to corrupt

    def corrupt_next(self, asset: str, times: int = 1, *, at: float = 0.5) -> None:
        """Serve the next `times` downloads of `asset` with one bit flipped at `at` of its size."""
        for source in self.root.glob(f"*/{asset}"):
            copy = self.root / CORRUPT_DIR / source.parent.name / asset
            copy.parent.mkdir(parents=True, exist_ok=True)
            data = bytearray(source.read_bytes())
            data[int(len(data) * at)] ^= 1
            copy.write_bytes(bytes(data))
        with self._lock:
            self._corrupt[asset] = times

    def _take_corrupt(self, asset_path: str) -> bool:
        name = asset_path.rpartition("/")[2]
        with self._lock:
            if self._corrupt.get(name):
                self._corrupt[name] -= 1
                return True
        return False

    def _signature(self, path: str, expires: str) -> str:
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_url(self, path: str) -> str:
        """A fresh signed URL for the asset at `path` (`/<tag>/<asset>`), as the 302 gives it."""
        expires = f"{time.time() + self.signed_ttl:.3f}"
        return f"{self.url}{SIGNED_PREFIX}{quote(path)}?expires={expires}&sig={self._signature(path, expires)}"

    def _handler(self):
        server = self
        files = super()._handler()

        class Handler(files):
            def setup(self):
                super().setup()
                if server.throttle is not None:
                    self.wfile = _ThrottledWriter(self.wfile, server.throttle)

            def do_GET(self):
                self._github(body=True)

            def do_HEAD(self):
                self._github(body=False)

            def _github(self, body: bool):
                parts = urlsplit(self.path)
                path = unquote(parts.path)
                if not path.startswith(SIGNED_PREFIX + "/"):
                    with server._lock:
                        server.redirects += 1
                    return self._reply_empty(302, {"Location": server.signed_url(path)})
                asset = path[len(SIGNED_PREFIX) :]
                query = {name: values[0] for name, values in parse_qs(parts.query).items()}
                expires, sig = query.get("expires", ""), query.get("sig", "")
                if not hmac.compare_digest(sig, server._signature(asset, expires)):
                    return self._reply_empty(403)
                if float(expires) < time.time():
                    with server._lock:
                        server.expired += 1
                    return self._reply_empty(403)  # S3's "Request has expired", as GitHub's CDN answers
                # The file server serves the asset itself, faults and Range included.
                self.path = f"/{CORRUPT_DIR}{asset}" if server._take_corrupt(asset) else asset
                self._serve(body=body)

        return Handler
