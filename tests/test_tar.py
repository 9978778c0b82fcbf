"""The tar layer: members read from large blocks, and every malformed header ends in a ReleaseError.

The bad tars are built byte by byte (tarfile refuses to write them), each read verified and not,
from a file that can seek and from one that cannot, under a timeout: a loop that does not move
forward fails the test instead of hanging it.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from reghead_release import tar
from reghead_release.errors import ReleaseError
from reghead_release.tar import ShardStream, iter_members

from conftest import tar_bytes

END = bytes(2 * tar.BLOCK)


def header(name: bytes, size: int | bytes, kind: bytes = b"0", *, checksum: bytes | None = None) -> bytes:
    """A ustar header block; `size` as a number (written in octal) or as the raw 12-byte field."""
    block = bytearray(tar.BLOCK)
    block[: len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = size if isinstance(size, bytes) else b"%011o\0" % size
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = checksum if checksum is not None else b"%06o\0 " % sum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % tar.BLOCK)


def member(name: bytes, data: bytes, kind: bytes = b"0") -> bytes:
    return header(name, len(data), kind) + padded(data)


def pax(records: bytes, *, size: int | None = None) -> bytes:
    return header(b"././@PaxHeader", len(records) if size is None else size, b"x") + padded(records)


GOOD = member(b"k.json", b"{}")


class Unseekable(io.RawIOBase):
    """A stream that can only be read forward, as an HTTP body is."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._data.readinto(buffer)


class ForwardOnly(io.BytesIO):
    """A seekable in-memory file that fails the test on any seek backwards."""

    seeks = 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.seeks += 1
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self.tell() + offset}[whence]
        assert target >= self.tell(), f"seek backwards from {self.tell()} to {target}"
        return super().seek(offset, whence)


def open_source(data: bytes, source: str, tmp_path: Path):
    if source == "file":  # seekable, size known
        path = tmp_path / "shard.tar"
        path.write_bytes(data)
        return open(path, "rb")
    if source == "memory":  # seekable, size unknown
        return ForwardOnly(data)
    return io.BufferedReader(Unseekable(data))  # neither


def read_members(raw, *, verify: bool, read: bool = True) -> dict[str, bytes]:
    stream = ShardStream(raw, file="bad.tar", verify=verify)
    try:
        found = {}
        for item in iter_members(stream):
            if read:
                found[item.name] = bytes(stream.read(item.size, what=f"member {item.name!r}"))
        if verify:
            stream.finish()
        return found
    finally:
        if stream.hash is not None:
            stream.hash.close()


SOURCES = ["file", "memory", "stream"]

# name: (tar bytes, the error's message)
BAD_TARS = {
    "pax record of length 0": (pax(b"0 path=x\n") + GOOD + END, r"bad pax record b'0 path=x\\n' in the extended header at byte 512"),
    "pax record of negative length": (pax(b"-9 path=x\n") + GOOD + END, r"bad pax record b'-9 path=x\\n'"),
    "pax record past its header": (pax(b"99 path=x\n") + GOOD + END, r"bad pax record b'99 path=x\\n'"),
    "pax record too short for itself": (pax(b"3 path=x\n") + GOOD + END, r"bad pax record b'3 path=x\\n'"),
    "pax record without a newline": (pax(b"9 path=xy") + GOOD + END, r"bad pax record b'9 path=xy'"),
    "pax record without digits": (pax(b"x path=xy\n") + GOOD + END, r"bad pax record b'x path=xy\\n'"),
    "pax size negative": (pax(b"14 size=-1024\n") + GOOD + END, r"bad pax size '-1024' for the member whose header is at byte 1024"),
    "pax size not a number": (pax(b"12 size=abc\n") + GOOD + END, r"bad pax size 'abc' for the member whose header is at byte 1024"),
    "pax header of 2 GiB": (pax(b"", size=2**31) + END, r"an extended header of 2,147,483,648 bytes \(at most 1,048,576\) at byte 0"),
    "GNU long name of 2 GiB": (header(b"././@LongLink", 2**31, b"L") + END, r"an extended header of 2,147,483,648 bytes .* at byte 0"),
    "size negative in octal": (header(b"k.json", b"-0000000001\0") + END, r"negative size \(-1\) for the member whose header is at byte 0"),
    "size negative in base 256": (header(b"k.json", b"\xff" * 12) + END, r"negative size \(-1\) for the member whose header is at byte 0"),
    "size past the end": (GOOD + header(b"k.jpg", 8 * 2**30 - 1) + END, r"truncated: .*member 'k.jpg' that needs|member 'k.jpg' claims 8,589,934,591 bytes|truncated: it ends"),
    "size of a skipped member past the end": (GOOD + header(b"k", 8 * 2**30 - 1, b"5") + END, r"truncated: .*member 'k' that needs|truncated: it ends"),
    "bad checksum": (GOOD + header(b"k.jpg", 3, checksum=b"0000001\0") + padded(b"abc") + END, r"not a tar header at byte 1024"),
    "header cut short": ((GOOD + GOOD)[:1024 + 300], r"truncated: it ends at byte 1324, inside a tar header that needs 512 bytes from byte 1024"),
    "no end-of-archive blocks": (GOOD + GOOD, r"truncated: it ends at byte 2048 without the tar end-of-archive blocks"),
    "member data cut short": (GOOD + header(b"k.jpg", 5000) + bytes(600), r"truncated: it ends at byte \d+"),  # past the end of a file of unknown size, found at the next header
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
@pytest.mark.parametrize("read", [True, False], ids=["read", "skipped"])
@pytest.mark.parametrize("case", sorted(BAD_TARS))
def test_malformed_tar_raises_a_release_error(case, read, verify, source, tmp_path):
    data, message = BAD_TARS[case]
    with open_source(data, source, tmp_path) as raw, pytest.raises(ReleaseError, match=message) as error:
        read_members(raw, verify=verify, read=read)
    assert str(error.value).startswith("file 'bad.tar': ")


def test_a_member_larger_than_any_reghead_member_is_refused_before_it_is_read():
    data = GOOD + header(b"k.jpg", 2**31) + bytes(1024) + END
    with pytest.raises(ReleaseError, match=r"member 'k.jpg' claims 2,147,483,648 bytes, more than any RegHead member"):
        read_members(io.BufferedReader(Unseekable(data)), verify=False)


def real_tar(tar_format: int) -> tuple[bytes, dict[str, bytes]]:
    """A tar with long names (pax records or GNU long-name members), a directory, and sizes around block edges."""
    items = {f"dir/{'long_' * 30}{n}.bin": bytes([n]) * size for n, size in enumerate([0, 1, 511, 512, 513, 5000, 70_000])}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as archive:
        directory = tarfile.TarInfo("dir")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        for name, payload in items.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue(), items


@pytest.mark.parametrize("read_bytes", [512, 1000, 4096, tar.READ_BYTES])
@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
def test_members_across_block_edges_are_read_exactly(read_bytes, tar_format, source, verify, tmp_path, monkeypatch):
    monkeypatch.setattr(tar, "READ_BYTES", read_bytes)  # headers and data straddle blocks
    data, items = real_tar(tar_format)
    with open_source(data, source, tmp_path) as raw:
        assert read_members(raw, verify=verify) == items


@pytest.mark.parametrize("read_bytes", [1000, tar.READ_BYTES])
def test_verified_hash_covers_every_byte_whether_read_or_skipped(read_bytes, monkeypatch):
    import hashlib

    monkeypatch.setattr(tar, "READ_BYTES", read_bytes)
    data, _ = real_tar(tarfile.PAX_FORMAT)
    for read in (True, False):
        stream = ShardStream(io.BytesIO(data), file="x.tar", verify=True)
        for item in iter_members(stream):
            if read:
                stream.read(item.size)
        assert stream.finish() == hashlib.sha256(data).hexdigest()
        assert stream.offset == len(data)


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
def test_a_block_is_read_into_again_only_once_no_slice_of_it_is_left(verify, monkeypatch):
    monkeypatch.setattr(tar, "READ_BYTES", 4096)
    items = [(f"k{i:02d}.json", bytes([i]) * 3000) for i in range(40)]
    data = tar_bytes(items)
    kept = []
    stream = ShardStream(io.BytesIO(data), file="x.tar", verify=verify)
    for member in iter_members(stream):
        kept.append((member.name, stream.read(member.size)))  # slices of the blocks, all kept
    if verify:
        assert stream.finish() == hashlib.sha256(data).hexdigest()  # the hash saw every block as read
    assert [(name, bytes(value)) for name, value in kept] == items  # no kept block was read into again
    buffers = []  # the objects the blocks were read into, kept (a reference is not a view)
    stream = ShardStream(io.BytesIO(data), file="x.tar", verify=False)
    for member in iter_members(stream):
        value = stream.read(member.size)  # a slice of a block, or a copy when it straddles two
        if isinstance(value, memoryview) and not any(value.obj is seen for seen in buffers):
            buffers.append(value.obj)
        del value  # each slice dropped at once
    assert len(buffers) <= 2  # the same buffers over and over


def test_unverified_skips_seek_forward_past_the_block_in_hand(monkeypatch):
    monkeypatch.setattr(tar, "READ_BYTES", 1024)
    data, _ = real_tar(tarfile.PAX_FORMAT)
    raw = ForwardOnly(data)
    stream = ShardStream(raw, file="x.tar", verify=False)
    names = [item.name for item in iter_members(stream)]  # nothing read: everything skipped
    assert len(names) == 7 and raw.seeks > 0


@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_member_spans_cover_their_headers_and_data(tar_format):
    data, items = real_tar(tar_format)
    spans = [(item.name, item.start, item.end) for item in iter_members(ShardStream(io.BytesIO(data), file="x.tar", verify=False))]
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        expected = {info.name: info.offset for info in archive if info.isfile()}  # the first header, extended or not
    assert [(name, start) for name, start, _ in spans] == list(expected.items())
    for (name, start, end), (_, next_start, _) in zip(spans, spans[1:] + [(None, None, None)]):
        if next_start is not None:
            assert end == next_start
        assert data[end - 512 : end].endswith(bytes((-len(items[name])) % 512))  # the data's padding
    # A span read again on its own gives the same member, whatever came before it.
    for name, start, end in spans:
        stream = ShardStream(io.BytesIO(data), file="x.tar", verify=False)
        stream.seek(start)
        assert [(item.name, bytes(stream.read(item.size))) for item in iter_members(stream, end=end)] == [(name, items[name])]
        assert stream.offset == end


def test_seek_only_moves_forward():
    data, _ = real_tar(tarfile.PAX_FORMAT)
    stream = ShardStream(io.BytesIO(data), file="x.tar", verify=False)
    stream.seek(2048)
    with pytest.raises(ValueError, match="cannot move back"):
        stream.seek(1024)
