"""The tar layer of the reader: a shard's bytes in, regular-file members out, hashed in the same pass.

A shard is read front to back exactly once. Its SHA-256 is computed from the same bytes the
members are made of, so verifying costs no second read. Whatever the caller does not read is
skipped: seeked over when the shard is not being verified and the file can seek, read and hashed
otherwise. Nothing is ever extracted.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import tarfile
import threading
from collections.abc import Iterator
from typing import NamedTuple

from .errors import ReleaseError

BLOCK = tarfile.BLOCKSIZE
SKIP_CHUNK = 1 << 20
JPEG_MAGIC = b"\xff\xd8\xff"
REGULAR_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


class BackgroundSha256:
    """SHA-256 computed in a thread of its own, so that hashing overlaps with making rows.

    hashlib releases the GIL on large updates: on two cores, verifying a shard costs almost no
    wall time. The queue is bounded, so a slow hash holds the reader back instead of memory.
    """

    def __init__(self, depth: int = 64):
        self._hash = hashlib.sha256()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="reghead-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class ShardStream:
    """A forward-only view of a shard's bytes that counts, hashes and skips them.

    `read(n)` returns exactly `n` bytes or raises `ReleaseError` (a truncated shard).
    `skip(n)` seeks when nothing is hashed and the file can seek; otherwise it reads and hashes.
    """

    def __init__(self, raw, *, file: str, verify: bool):
        self.raw = raw
        self.file = file
        self.offset = 0
        self.members = 0
        self.hash = BackgroundSha256() if verify else None
        self.can_seek = not verify and _seekable(raw)
        self.size = _known_size(raw)

    def read(self, size: int, *, what: str = "a member") -> bytes:
        self._require(size, what)
        data = self.raw.read(size)
        if len(data) < size:
            data = self._read_rest(data, size, what)
        if self.hash is not None:
            self.hash.update(data)
        self.offset += size
        return data

    def _read_rest(self, data: bytes, size: int, what: str) -> bytes:
        chunks = [data]
        got = len(data)
        while got < size:
            chunk = self.raw.read(min(size - got, SKIP_CHUNK))
            if not chunk:
                self._truncated(got, size, what)
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _require(self, size: int, what: str) -> None:
        """Refuse, before reading or seeking, `size` bytes that a file of known size does not have."""
        if self.size is not None and self.offset + size > self.size:
            self._truncated(self.size - self.offset, size, what)

    def _truncated(self, available: int, size: int, what: str):
        raise ReleaseError(
            f"the shard is truncated: it ends at byte {self.offset + available}, inside {what} "
            f"that needs {size} bytes from byte {self.offset}",
            file=self.file,
            hint="Download the shard again",
        )

    def skip(self, size: int, *, what: str = "a member") -> None:
        if self.can_seek:
            self._require(size, what)
            self.raw.seek(size, 1)
            self.offset += size
            return
        while size:
            step = min(size, SKIP_CHUNK)
            self.read(step, what=what)
            size -= step

    def read_block(self) -> bytes:
        """The next 512-byte header block, or b"" at a clean end of file."""
        block = self.raw.read(BLOCK)
        if not block:
            return b""
        if len(block) < BLOCK:
            block = self._read_rest(block, BLOCK, "a tar header")
        if self.hash is not None:
            self.hash.update(block)
        self.offset += BLOCK
        return block

    def finish(self) -> str:
        """Read and hash what follows the last member (the tar trailer); return the hex digest."""
        assert self.hash is not None, "finish() is only for a verified read"
        while chunk := self.raw.read(SKIP_CHUNK):
            self.hash.update(chunk)
            self.offset += len(chunk)
        return self.hash.hexdigest()


def _known_size(raw) -> int | None:
    """The file's size when it is known without reading: a local file, or an HTTP file after its first answer."""
    try:
        return os.fstat(raw.fileno()).st_size
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return getattr(getattr(raw, "raw", raw), "size", None)


def _seekable(raw) -> bool:
    try:
        return bool(raw.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class Member(NamedTuple):
    name: str
    size: int


def _pax_records(data: bytes, file: str, offset: int) -> dict[str, str]:
    """The records of a pax extended header: `<length> <key>=<value>\\n`, repeated."""
    records = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ReleaseError(f"bad pax header at byte {offset}: {data[pos:pos + 40]!r}", file=file) from None
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class Header(NamedTuple):
    name: str
    size: int
    type: bytes


def parse_header(block: bytes) -> Header:
    """The name, size and type of a tar header block, as `tarfile.TarInfo.frombuf` gives them.

    The common case (octal fields, a checksum that is the unsigned sum, a regular file or an
    extended header) is read here, about 6x faster than `frombuf`, which computes the checksum
    twice in Python; anything else goes to `frombuf`, which raises `tarfile.HeaderError` on a
    bad block.
    """
    stored, size_field, kind = block[148:156], block[124:136], block[156:157]
    if stored[0] not in (0o200, 0o377) and size_field[0] not in (0o200, 0o377) and kind in _FAST_TYPES:
        try:
            checksum = int(stored.split(b"\0", 1)[0].strip() or b"0", 8)
            size = int(size_field.split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            checksum = -1
        if checksum == sum(block) - sum(stored) + 256:  # the 8 checksum bytes count as spaces
            name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            prefix = block[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix.decode("utf-8", "surrogateescape") + "/" + name
            if not (kind == tarfile.AREGTYPE and name.endswith("/")):  # a V7 directory: tarfile knows
                return Header(name, size, kind)
    info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    return Header(info.name, info.size, info.type)


_FAST_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.XHDTYPE)


def iter_members(stream: ShardStream) -> Iterator[Member]:
    """The regular-file members of a tar, in order (ustar, pax and GNU long names).

    After a member is yielded, the caller may `stream.read(member.size)` its data, or leave it:
    whatever the caller did not read is skipped before the next header is read. Directories,
    links and other special members are passed over: nothing is ever extracted.
    """
    long_name = None
    pax: dict[str, str] = {}
    while True:
        header_at = stream.offset
        block = stream.read_block()
        if not block and header_at:
            # tar writers always end an archive with zero blocks: without them, bytes are missing
            raise ReleaseError(
                f"the shard is truncated: it ends at byte {header_at} without the tar end-of-archive blocks",
                file=stream.file,
                hint="Download the shard again",
            )
        if not block or block == tarfile.NUL * BLOCK:
            return
        try:
            info = parse_header(block)
        except tarfile.HeaderError as error:
            raise ReleaseError(
                f"not a tar header at byte {header_at} ({error})", file=stream.file, hint="Download the shard again"
            ) from None
        try:
            size = int(pax.get("size", info.size))
        except ValueError:
            raise ReleaseError(f"bad pax size {pax['size']!r} at byte {header_at}", file=stream.file, hint="Download the shard again") from None
        padded = size + (-size) % BLOCK
        if info.type in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME):
            data = stream.read(padded, what="an extended header")[:size]
            if info.type == tarfile.XHDTYPE:
                pax = _pax_records(data, stream.file, header_at)
            else:
                long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        name = pax.get("path") or long_name or info.name
        long_name, pax = None, {}
        if info.type not in REGULAR_TYPES:
            stream.skip(padded, what=f"member {name!r}")
            continue
        data_end = stream.offset + size
        stream.members += 1
        yield Member(name, size)
        left = data_end - stream.offset
        if left < 0:
            raise AssertionError(f"read past the end of member {name!r}")
        stream.skip(left + (-size) % BLOCK, what=f"member {name!r}")
