"""The tar layer of the reader: a shard's bytes in, regular-file members out, hashed in the same pass.

A shard is read front to back exactly once, in large blocks (`READ_BYTES`): each block is hashed
with one SHA-256 update (in a thread of its own, so hashing overlaps with the rest), tar headers
are parsed out of the block, and member data is handed out as `memoryview` slices of the block,
copied only when a member straddles two blocks; a block's buffer is read into again once no slice
of it is left (`BlockBuffers`). Verifying therefore costs no second read and no copy. Whatever the
caller does not read is skipped: for free inside the block in hand, seeked over when the shard is
not being verified and the file can seek, read and hashed otherwise. Nothing is ever extracted.

The bytes are untrusted: every size, offset and record length is checked before it is used, so
that each step either moves forward through the shard or raises `ReleaseError` naming the shard
and the byte offset. Nothing is ever seeked backwards, and nothing larger than the shard (when its
size is known) or than a bound that fits its role is allocated.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import re
import struct
import tarfile
import threading
import zlib
from collections.abc import Iterator
from typing import NamedTuple

from .errors import ReleaseError

BLOCK = tarfile.BLOCKSIZE
# Bytes read (and hashed) at a time: large enough that per-block costs vanish, small enough that
# a few blocks per job in flight keep memory flat.
READ_BYTES = 8 * 2**20
# The first block is small and each next one twice as large, up to `READ_BYTES`: a stream's first
# rows come after a few hundred KB, not after a full block. A seek starts small again, so that a
# read that skips most samples (the validation and test splits, unverified) reads little more
# than the samples it keeps.
FIRST_READ_BYTES = 256 * 2**10
HASH_QUEUE_BLOCKS = 3
# Buffers a stream keeps to read blocks into again; a block read while all are in use (slices
# waiting in the converter's columns, blocks in the hash queue) is a new object. 8 made no faster
# converter than 4 on full-size shards, and held ~20 MiB more at 2 jobs.
SPARE_BUFFERS = 4
# A pax extended header or a GNU long name is a few hundred bytes; more is not a RegHead shard.
MAX_EXTENDED_HEADER = 2**20
# No member of a release comes near this; refusing it up front keeps a lying header from
# allocating memory (when the shard's size is not known) or overflowing Arrow's 32-bit offsets.
MAX_MEMBER_BYTES = 2**30
JPEG_MAGIC = b"\xff\xd8\xff"
REGULAR_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
EXTENDED_TYPES = (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME)
DAMAGED_HINT = "Download the shard again"
_DIGITS = re.compile(rb"[0-9]+")
_ONE_RECORD = re.compile(rb"([0-9]{1,9}) ([^=\n\0]+)=([^\n]*)\n")
_EMPTY = memoryview(b"")


class BackgroundSha256:
    """SHA-256 computed in a thread of its own, so that hashing overlaps with making rows.

    hashlib releases the GIL on large updates: on two cores, verifying a shard costs almost no
    wall time. The queue is bounded, so a slow hash holds the reader back instead of memory.
    """

    def __init__(self, depth: int = HASH_QUEUE_BLOCKS):
        self._hash = hashlib.sha256()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="reghead-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def update(self, data) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class BlockBuffers:
    """The buffers a stream reads its blocks into, each read into again once nothing refers to it.

    A fresh buffer of several MiB for every block costs a page fault per 4 KiB whenever the
    allocator has given the last one back to the system, which it does or not depending on its
    state: on 3 full-size shards the builder took 13.5 to 20.4 s, with 0.08 to 1 million page
    faults, and now takes 12.4 to 15.0 s with 0.1 to 0.15 million. A buffer is free when it has no
    exports: no `memoryview` (nor slice of one) that a record, a column or the hash queue holds.
    """

    def __init__(self, size: int, spares: int = SPARE_BUFFERS):
        self.size = size
        self.spares = spares
        self._buffers: list[bytearray] = []

    def take(self) -> bytearray | None:
        """A buffer of `size` bytes that nothing refers to; None when all `spares` are in use."""
        for buffer in self._buffers:
            if not _exported(buffer):
                return buffer
        if len(self._buffers) < self.spares:
            self._buffers.append(bytearray(self.size))
            return self._buffers[-1]
        return None  # read into a new object: a bytearray would be zeroed first, for nothing


def _exported(buffer: bytearray) -> bool:
    """Whether a view of `buffer` is alive: a bytearray refuses to be resized while one is."""
    try:
        buffer.append(0)
    except BufferError:
        return True
    del buffer[-1]
    return False


class ShardStream:
    """A forward-only view of a shard's bytes that counts, hashes and skips them.

    `read(n)` returns exactly `n` bytes as a bytes-like object (often a `memoryview` slice of the
    block in hand: use `bytes(...)` where a real `bytes` is needed) or raises `ReleaseError`.
    `skip(n)` moves on without copying; past the block in hand it seeks when nothing is hashed
    and the file can seek, and otherwise reads and hashes. `offset` is the position in the shard
    of the next byte the caller gets.
    """

    def __init__(self, raw, *, file: str, verify: bool):
        self.raw = raw
        self.file = file
        self.offset = 0
        self.members = 0
        self.hash = BackgroundSha256() if verify else None
        self.can_seek = not verify and _seekable(raw)
        self.size = _known_size(raw)
        self._block = _EMPTY  # the block in hand, already hashed
        self._at = 0  # the caller's position in it
        self._read_size = FIRST_READ_BYTES
        self._buffers = BlockBuffers(min(READ_BYTES, self.size or READ_BYTES))  # a small shard, a small buffer
        self._readinto = getattr(raw, "readinto", None)

    # --- the block in hand ---

    def _next_block(self) -> bool:
        """Read and hash the next block; False at the end of the file."""
        size = min(self._read_size, READ_BYTES)
        self._block, self._at = _EMPTY, 0  # the block in hand no longer holds its buffer
        buffer = self._buffers.take() if self._readinto is not None else None
        if buffer is None:
            block = memoryview(self.raw.read(size))
        else:
            block = memoryview(buffer)[:size]
            block = block[: self._readinto(block) or 0]
        if not block:
            return False
        self._read_size = min(2 * self._read_size, READ_BYTES)
        if self.hash is not None:
            self.hash.update(block)
        self._block, self._at = block, 0
        return True

    @property
    def _in_hand(self) -> int:
        return len(self._block) - self._at

    # --- reading ---

    def read(self, size: int, *, what: str = "a member"):
        """Exactly `size` bytes, as a bytes-like object; a short shard raises `ReleaseError`."""
        self.require(size, what)
        if size > MAX_MEMBER_BYTES:
            self.fail(f"{what} claims {size:,} bytes, more than any RegHead member ({MAX_MEMBER_BYTES:,})")
        start = self._at
        if size <= len(self._block) - start:
            self._at = start + size
            self.offset += size
            return self._block[start : start + size]
        parts = [self._block[start:]]
        got = len(parts[0])
        while got < size:
            if not self._next_block():
                self._truncated(got, size, what)
            take = min(size - got, len(self._block))
            parts.append(self._block[:take])
            self._at = take
            got += take
        self.offset += size
        return b"".join(parts)

    def skip(self, size: int, *, what: str = "a member") -> None:
        """Move `size` bytes forward without handing them out."""
        self.require(size, what)
        if size <= self._in_hand:
            self._at += size
            self.offset += size
            return
        if self.can_seek:
            beyond = size - self._in_hand
            self.raw.seek(beyond, io.SEEK_CUR)  # forward only: `beyond` is positive
            self._block, self._at = _EMPTY, 0
            self._read_size = FIRST_READ_BYTES  # a reader that skips wants small blocks, not large ones
            self.offset += size
            return
        left = size
        while left:
            if not self._in_hand and not self._next_block():
                self._truncated(size - left, size, what)
            take = min(left, self._in_hand)
            self._at += take
            left -= take
        self.offset += size

    def next_header(self) -> bytes:
        """The next 512-byte header block, or b"" at a clean end of file."""
        at = self._at
        if len(self._block) - at >= BLOCK:  # the common case, kept short: once per member
            self._at = at + BLOCK
            self.offset += BLOCK
            return self._block[at : at + BLOCK].tobytes()
        if not self._in_hand and not self._next_block():
            return b""
        return bytes(self.read(BLOCK, what="a tar header"))

    def seek(self, offset: int) -> None:
        """Move forward to `offset` (a member's `start`), skipping what lies before it.

        Only forward, and only without verification: a verified read hashes every byte.
        """
        if offset < self.offset:
            raise ValueError(f"{self.file}: cannot move back from byte {self.offset} to {offset}")
        self.skip(offset - self.offset, what="the bytes before a sample")

    def finish(self) -> str:
        """Read and hash what follows the last member (the tar trailer); return the hex digest."""
        assert self.hash is not None, "finish() is only for a verified read"
        self.offset += self._in_hand
        self._block, self._at = _EMPTY, 0
        while self._next_block():
            self.offset += len(self._block)
        self._block = _EMPTY
        return self.hash.hexdigest()

    # --- checks ---

    def require(self, size: int, what: str) -> None:
        """Refuse a negative size, and `size` bytes that a file of known size does not have."""
        if size < 0:
            self.fail(f"{what} has a negative size ({size})")
        if self.size is not None and self.offset + size > self.size:
            self._truncated(self.size - self.offset, size, what)

    def fail(self, message: str, *, at: int | None = None):
        raise ReleaseError(f"{message} at byte {self.offset if at is None else at}", file=self.file, hint=DAMAGED_HINT)

    def _truncated(self, available: int, size: int, what: str):
        raise ReleaseError(
            f"the shard is truncated: it ends at byte {self.offset + available}, inside {what} "
            f"that needs {size} bytes from byte {self.offset}",
            file=self.file,
            hint=DAMAGED_HINT,
        )


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
    start: int  # the offset of its first header (an extended header, when it has one)
    end: int  # the offset after its data and padding: where the next member's headers start


def _pax_records(data: bytes, stream: ShardStream, header_at: int) -> dict[str, str]:
    """The records of a pax extended header: `<length> <key>=<value>\\n`, repeated.

    Every record must fit in the header and end where its length says, so each one moves on.
    """
    one = _ONE_RECORD.fullmatch(data)  # the common case: a single `path` record
    if one and int(one[1]) == len(data):
        return {one[2].decode("utf-8", "surrogateescape"): one[3].decode("utf-8", "surrogateescape")}
    records = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 20)
        digits = data[pos:space] if space > pos else b""
        length = int(digits) if _DIGITS.fullmatch(digits) else 0
        end = pos + length
        if length < len(digits) + 4 or end > len(data) or data[end - 1] != 0x0A or b"=" not in data[space:end]:
            stream.fail(f"bad pax record {bytes(data[pos:pos + 40])!r} in the extended header", at=header_at + BLOCK + pos)
        key, _, value = data[space + 1 : end - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


class Header(NamedTuple):
    name: str
    size: int
    type: bytes


def parse_header(block: bytes) -> Header:
    """The name, size and type of a tar header block, as `tarfile.TarInfo.frombuf` gives them.

    The common case (octal fields, a checksum that is the unsigned sum, a regular file or an
    extended header) is read here, about 10x faster than `frombuf`, which computes the checksum
    twice in Python; anything else goes to `frombuf`, which raises `tarfile.HeaderError` on a
    bad block. A field `int` reads here is one `frombuf` reads the same way: without a NUL in it.
    """
    name, size_field, stored, kind = _HEADER_FIELDS.unpack_from(block)
    if kind in _FAST_TYPES:
        try:
            size = int(size_field.rstrip(b"\0 "), 8)
            checksum = int(stored.rstrip(b"\0 "), 8)
        except ValueError:  # base-256, empty or damaged: tarfile decides
            checksum = -1
        if checksum == _byte_sum(block) - sum(stored) + 256:  # the 8 checksum bytes count as spaces
            if kind == tarfile.XHDTYPE:
                return Header("", size, kind)  # its name is never used
            name = name.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if block[_PREFIX_START]:
                name = block[_PREFIX_START:_PREFIX_END].split(b"\0", 1)[0].decode("utf-8", "surrogateescape") + "/" + name
            if not (kind == tarfile.AREGTYPE and name.endswith("/")):  # a V7 directory: tarfile knows
                return Header(name, size, kind)
    info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    return Header(info.name, info.size, info.type)


_FAST_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.XHDTYPE)
# The ustar fields a member needs: name (0-100), size (124-136), checksum (148-156), type (156).
_HEADER_FIELDS = struct.Struct("100s24x12s12x8s1s")
_PREFIX_START, _PREFIX_END = 345, 500  # ustar's name prefix


def _byte_sum(block: bytes) -> int:
    """The sum of a header block's bytes, in C: Adler-32's low half is 1 + the sum of the bytes
    modulo 65521, exact for 256 bytes (at most 65,280), so each half block is summed on its own."""
    return (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2


_ZERO_BLOCK = bytes(BLOCK)


def _member_size(pax: dict[str, str], header_size: int, stream: ShardStream, header_at: int) -> int:
    """The member's size: the pax `size` record when there is one, else the header's field."""
    if "size" not in pax:
        size = header_size
    elif _DIGITS.fullmatch(pax["size"].encode("utf-8", "surrogateescape")):
        size = int(pax["size"])
    else:
        stream.fail(f"bad pax size {pax['size'][:40]!r} for the member whose header is", at=header_at)
    if size < 0:
        stream.fail(f"negative size ({size}) for the member whose header is", at=header_at)
    return size


def iter_members(stream: ShardStream, *, end: int | None = None) -> Iterator[Member]:
    """The regular-file members of a tar, in order (ustar, pax and GNU long names).

    After a member is yielded, the caller may `stream.read(member.size)` its data, or leave it:
    whatever the caller did not read is skipped before the next header is read. Directories,
    links and other special members are passed over: nothing is ever extracted. Each header
    moves the stream forward by at least one block. With `end`, the members from the stream's
    offset (a member's `start`) up to `end` (a later member's `end`) are read, and no
    end-of-archive blocks are looked for.
    """
    long_name = None
    pax: dict[str, str] = {}
    start = None  # where the headers of the member being read began
    while end is None or stream.offset < end:
        header_at = stream.offset
        start = header_at if start is None else start
        block = stream.next_header()
        if not block and header_at:
            # tar writers always end an archive with zero blocks: without them, bytes are missing
            raise ReleaseError(
                f"the shard is truncated: it ends at byte {header_at} without the tar end-of-archive blocks",
                file=stream.file,
                hint=DAMAGED_HINT,
            )
        if not block or block == _ZERO_BLOCK:
            return
        try:
            info = parse_header(block)
        except (tarfile.HeaderError, ValueError) as error:
            raise ReleaseError(
                f"not a tar header at byte {header_at} ({error})", file=stream.file, hint=DAMAGED_HINT
            ) from None
        if info.type in EXTENDED_TYPES:
            if not 0 <= info.size <= MAX_EXTENDED_HEADER:
                stream.fail(f"an extended header of {info.size:,} bytes (at most {MAX_EXTENDED_HEADER:,})", at=header_at)
            data = bytes(stream.read(info.size + (-info.size) % BLOCK, what="an extended header")[: info.size])
            if info.type == tarfile.XHDTYPE:
                pax = _pax_records(data, stream, header_at)
            else:
                long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        size = _member_size(pax, info.size, stream, header_at)
        padded = size + (-size) % BLOCK
        name = pax.get("path") or long_name or info.name
        long_name, pax = None, {}
        member_start, start = start, None
        if info.type not in REGULAR_TYPES:
            stream.skip(padded, what=f"member {name!r}")
            continue
        what = f"member {name!r}"
        stream.require(padded, what)  # a member longer than the rest of the shard: refused now
        data_end = stream.offset + size
        stream.members += 1
        yield Member(name, size, member_start, data_end + (-size) % BLOCK)
        left = data_end - stream.offset
        if left < 0:
            raise AssertionError(f"read past the end of member {name!r}")
        stream.skip(left + (-size) % BLOCK, what=what)
