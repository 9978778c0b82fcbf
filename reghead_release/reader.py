"""The one reader of RegHead shards: tar members in, identity-level rows out, in one pass.

A shard is read front to back exactly once. Its SHA-256 is computed from the same bytes the
rows are made of, so verifying costs no second read. Samples that the caller does not want (the
other splits) are skipped without being copied, and without being read at all when the shard is
not being verified and the file can seek. Image bytes are passed through as they are in the tar.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import tarfile
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .errors import Problems, ReleaseError
from .schema import (
    EXPRESSIONS,
    IMAGE_EXTENSION,
    JSON_FIELD,
    SAMPLE_FIELDS,
    parse_identity,
    parse_sample_key,
)

BLOCK = tarfile.BLOCKSIZE
SKIP_CHUNK = 1 << 20
JPEG_MAGIC = b"\xff\xd8\xff"
REGULAR_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
VERIFY_HINT = "Download the shard again; to read it anyway, pass verify_checksums=False"


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


def split_member_name(name: str) -> tuple[str, str] | None:
    """WebDataset's split of a member name into (key, field) at the first `.` of its base name."""
    directory, _, base = name.rpartition("/")
    stem, dot, field = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{directory}/{stem}" if directory else stem), field


def is_safe_member_name(name: str) -> bool:
    return not (name.startswith("/") or ".." in name.split("/") or "\\" in name or "\0" in name)


class Sample(NamedTuple):
    key: str
    fields: dict[str, tuple[str, bytes]]  # field -> (member name, bytes)


def iter_samples(
    stream: ShardStream,
    *,
    keep: Callable[[str], bool] | None,
    seen: dict[str, str],
    problems: Problems,
) -> Iterator[Sample]:
    """Group consecutive members that share a key into samples; leave unwanted samples unread.

    `seen` maps every key met so far (in this and earlier shards of the same read) to its shard,
    so that a key met twice is caught wherever it is.
    """
    file = stream.file
    key = None
    fields: dict[str, tuple[str, bytes]] = {}
    wanted = False
    for member in iter_members(stream):
        parts = split_member_name(member.name)
        if parts is None:
            problems.note("member outside any sample", f"member {member.name!r} has no '.<field>' and is ignored", file=file, key=None)
            continue
        member_key, field = parts
        if member_key != key:
            if wanted:
                yield Sample(key, fields)
            key, fields, wanted = member_key, {}, False
            if not is_safe_member_name(member.name):
                problems.bad_sample("unsafe member name", f"member name {member.name!r} is absolute or climbs out with '..'", file=file, key=member_key)
                continue
            if member_key in seen:
                problems.bad_sample("duplicate key", f"sample key {member_key!r} was already read in shard {seen[member_key]!r}", file=file, key=member_key)
                continue
            seen[member_key] = file
            wanted = keep is None or keep(member_key)
        if not wanted:
            continue
        if field in fields:
            problems.bad_sample("duplicate field", f"field {field!r} appears twice in the sample", file=file, key=key)
            wanted = False
            continue
        fields[field] = (member.name, stream.read(member.size, what=f"member {member.name!r}"))
    if wanted:
        yield Sample(key, fields)


def build_row(sample: Sample, *, file: str, problems: Problems) -> dict | None:
    """The identity-level row of a sample, or None when the sample is bad and `problems` is lenient."""
    key, fields = sample
    missing = sorted(SAMPLE_FIELDS - fields.keys())
    if missing:
        problems.bad_sample("missing field", f"the sample has no {missing} (it has {sorted(fields)})", file=file, key=key)
        return None
    for extra in sorted(fields.keys() - SAMPLE_FIELDS):
        problems.note("unknown field", f"unknown field {extra!r} is ignored", file=file, key=key)
    images = {}
    for expression in EXPRESSIONS:
        member_name, data = fields[f"{expression}.{IMAGE_EXTENSION}"]
        if not data.startswith(JPEG_MAGIC):
            problems.bad_sample("not a JPEG", f"member {member_name!r} is not a JPEG (it starts with {data[:8]!r})", file=file, key=key)
            return None
        images[expression] = {"bytes": data, "path": member_name.rpartition("/")[2]}
    json_member, json_bytes = fields[JSON_FIELD]
    try:
        sample_json = json_bytes.decode("utf-8")
        meta = json.loads(sample_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.bad_sample("invalid JSON", f"member {json_member!r} is not valid JSON ({error}): {json_bytes[:80]!r}", file=file, key=key)
        return None
    if not isinstance(meta, dict):
        problems.bad_sample("invalid JSON", f"member {json_member!r} holds {type(meta).__name__}, not an object", file=file, key=key)
        return None
    parsed_key = parse_sample_key(key)
    json_identity = meta.get("identity")
    if parsed_key is None:
        problems.note("unparsed sample key", f"key {key!r} is not '<8 digits>_<identity>_<8 hex>'; the identity is taken from the JSON", file=file, key=key)
        identity = json_identity if isinstance(json_identity, str) else key
    else:
        identity = parsed_key.identity
        if json_identity is not None and json_identity != identity:
            problems.bad_sample("identity mismatch", f"the JSON names identity {json_identity!r} but the key names {identity!r}", file=file, key=key)
            return None
    parts = parse_identity(identity)
    if parts.problem:
        problems.note("unparsed identity", parts.problem, file=file, key=key)
    return {
        "sample_key": key,
        "identity": identity,
        "identity_index": parts.index,
        "animal": parts.animal,
        "style": parts.style,
        "feature": parts.feature,
        "accessories": parts.accessories,
        **images,
        "sample_json": sample_json,
    }


def read_shard_rows(
    raw,
    *,
    file: str,
    expected_sha256: str | None,
    keep: Callable[[str], bool] | None = None,
    seen: dict[str, str] | None = None,
    problems: Problems | None = None,
) -> Iterator[dict]:
    """The rows of one open shard, in tar order, verified against `expected_sha256` when it is given.

    The hash is checked when the shard has been read to its end, after its last row was yielded:
    a caller that must not keep rows of a damaged shard writes them somewhere temporary first.
    """
    problems = problems if problems is not None else Problems()
    seen = seen if seen is not None else {}
    stream = ShardStream(raw, file=file, verify=expected_sha256 is not None)
    try:
        for sample in iter_samples(stream, keep=keep, seen=seen, problems=problems):
            row = build_row(sample, file=file, problems=problems)
            if row is not None:
                yield row
        if stream.members == 0:
            raise ReleaseError("the shard holds no samples", file=file, hint="Download the shard again")
        actual = stream.finish() if expected_sha256 is not None else None
    finally:
        if stream.hash is not None:
            stream.hash.close()  # also when the caller stops early: no thread is left waiting
    if actual != expected_sha256:
        raise ReleaseError(
            f"SHA-256 mismatch: SHA256SUMS expects {expected_sha256}, the shard has {actual}", file=file, hint=VERIFY_HINT
        )

