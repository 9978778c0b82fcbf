"""A loopback server that serves release assets the way GitHub does, for the --from-release tests.

`RangeFileServer` with GitHub's redirect to expiring signed URLs on by default (see there: Range,
recorded requests, injected faults, `corrupt_next`, the `rate` throttle, `redirects`, `expired`).
"""

from __future__ import annotations

from http_server import RangeFileServer


class GitHubReleaseServer(RangeFileServer):
    """`signed_ttl`: how long (seconds) a signed URL stays valid; `rate`: bytes/s of all connections."""

    def __init__(self, root, *, signed_ttl: float = 300.0, rate: float | None = None):
        super().__init__(root, signed_ttl=signed_ttl, rate=rate)
