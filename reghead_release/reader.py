"""The one reader of RegHead shards: tar members in, identity-level records out, in one pass.

`tar` reads a shard's members (hashing them in the same pass); this module groups members into
samples, checks each sample and turns it into a `Record`. The builder turns records into the row
dicts `datasets` wants (`record_to_row`); the converter builds Arrow columns from them directly.
Samples that the caller does not want (the other splits) are skipped without being copied, and
without being read at all when the shard is not being verified and the file can seek. Image bytes
are passed through as they are in the tar.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from .errors import ChecksumMismatch, Problems, ReleaseError, shorten
from .schema import (
    EXPRESSIONS,
    IMAGE_EXTENSION,
    JSON_FIELD,
    SAMPLE_FIELDS,
    Identity,
    Vocabulary,
    parse_identity_with_doubt,
    parse_sample_key,
)
from .tar import JPEG_MAGIC, ShardStream, iter_members

VERIFY_HINT = "Download the shard again; to read it anyway, pass verify_checksums=False"
# The most a member may hold for its role, checked before it is read: a RegHead image is well
# under 1 MB at 1024 px, its JSON about 1 KB.
MAX_IMAGE_BYTES = 32 * 2**20
MAX_JSON_BYTES = 1 * 2**20
# Marker segments walked from a JPEG's start to its frame header (PIL writes 4 to 8 before it).
JPEG_MAX_SEGMENTS = 64
JPEG_END = b"\xff\xd9"  # the end-of-image marker, the last two bytes of a whole JPEG
# SOF0..SOF15 hold the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM: no length follows
JPEG_SCAN_MARKERS = frozenset({0xD9, 0xDA})  # EOI and SOS: past the header
NAME_CHARS = 300  # member names are quoted whole up to this length (upstream ones are about 150)
_FIELD_SUFFIXES = tuple(f".{field}" for field in sorted(SAMPLE_FIELDS, key=len, reverse=True))


def split_member_name(name: str, *, current_key: str | None = None) -> tuple[str, str] | None:
    """A member name's (key, field), or None when its base name has no `.<field>`.

    Every reader of shards splits names here, so that they all agree:
      1. A name ending in `.<field>` for a field a sample is known to have (`SAMPLE_FIELDS`:
         the ten `<expression>.jpg` and `json`) splits there, so a key may hold dots
         (`00000002_id002_St._Bernard_..._e1f2a3b4.frown.jpg`).
      2. Otherwise, a name that continues `current_key` (the sample being read) with `.` keeps
         that key: an unknown field of a key with dots stays with its sample.
      3. Otherwise WebDataset's rule: the key ends at the first `.` of the base name.
    """
    directory, _, base = name.rpartition("/")
    if base.endswith(_FIELD_SUFFIXES):
        for suffix in _FIELD_SUFFIXES:
            if base.endswith(suffix) and len(base) > len(suffix):
                return name[: -len(suffix)], suffix[1:]
    if current_key is not None and name.startswith(current_key) and name[len(current_key) : len(current_key) + 1] == ".":
        field = name[len(current_key) + 1 :]
        if field and "/" not in field:
            return current_key, field
    stem, dot, field = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{directory}/{stem}" if directory else stem), field


def is_safe_member_name(name: str) -> bool:
    """Not absolute, not climbing out with `..`. A backslash is an ordinary character in a tar
    name (and nothing is ever extracted), so a key may hold one."""
    return not (name.startswith("/") or ".." in name.split("/") or "\0" in name)


def is_utf8(name: str) -> bool:
    """Whether a member name read from a tar (undecodable bytes kept as surrogates) is UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def member_limit(field: str) -> int:
    """The most bytes a member of a known field may hold."""
    return MAX_JSON_BYTES if field == JSON_FIELD else MAX_IMAGE_BYTES


class Sample(NamedTuple):
    key: str
    fields: dict[str, tuple[str, bytes | None]]  # field -> (member name, bytes; None: an unknown field, not read)


def iter_samples(
    stream: ShardStream,
    *,
    keep: Callable[[str], bool] | None,
    seen: dict[str, str],
    problems: Problems,
    on_declined: Callable[[str, int, int], None] | None = None,
    end: int | None = None,
) -> Iterator[Sample]:
    """Group consecutive members that share a key into samples; leave unwanted samples unread.

    `seen` maps every key met so far (in this and earlier shards of the same read) to its shard,
    so that a key met twice is caught wherever it is. `on_declined(key, start, end)` is told of
    each sample left unread because `keep` declined it, with its byte span in the shard (from its
    first header to the end of its last member): a later read can go straight to it
    (`read_shard_records(spans=...)`). With `end`, the samples from the stream's offset up to
    `end` are read (`iter_members`).
    """
    file = stream.file
    key = None
    fields: dict[str, tuple[str, bytes | None]] = {}
    wanted = declined = False
    span_start = span_end = 0
    for member in iter_members(stream, end=end):
        parts = split_member_name(member.name, current_key=key)
        if parts is None:
            problems.note("member outside any sample", f"member {shorten(member.name, NAME_CHARS)} has no '.<field>' and is ignored", file=file, key=None)
            continue
        member_key, field = parts
        if member_key != key:
            if wanted:
                yield Sample(key, fields)
            elif declined and on_declined is not None:
                on_declined(key, span_start, span_end)
            key, fields, wanted, declined = member_key, {}, False, False
            span_start = member.start
            if not is_utf8(member_key):
                problems.bad_sample("member name not UTF-8", f"member name {shorten(member.name, NAME_CHARS)} is not UTF-8", file=file, key=member_key)
                continue
            if not is_safe_member_name(member.name):
                problems.bad_sample("unsafe member name", f"member name {shorten(member.name, NAME_CHARS)} is absolute or climbs out with '..'", file=file, key=member_key)
                continue
            if member_key in seen:
                problems.bad_sample("duplicate key", f"sample key {shorten(member_key, NAME_CHARS)} was already read in shard {seen[member_key]!r}", file=file, key=member_key)
                continue
            seen[member_key] = file
            wanted = keep is None or keep(member_key)
            declined = not wanted
        span_end = member.end
        if not wanted:
            continue
        if field in fields:
            problems.bad_sample("duplicate field", f"field {shorten(field, NAME_CHARS)} appears twice in the sample", file=file, key=key)
            wanted = False
            continue
        if field not in SAMPLE_FIELDS:
            fields[field] = (member.name, None)  # noted by build_record, never read
            continue
        if member.size > member_limit(field):
            problems.bad_sample(
                "member too large",
                f"member {shorten(member.name, NAME_CHARS)} is {member.size:,} bytes, more than the {member_limit(field):,} a {field!r} member may hold",
                file=file,
                key=key,
            )
            wanted = False
            continue
        fields[field] = (member.name, stream.read(member.size, what=f"member {member.name!r}"))
    if wanted:
        yield Sample(key, fields)
    elif declined and on_declined is not None:
        on_declined(key, span_start, span_end)


def _samples_in_spans(stream: ShardStream, spans: Sequence[tuple[int, int]], **options) -> Iterator[Sample]:
    for start, end in spans:
        stream.seek(start)
        yield from iter_samples(stream, end=end, **options)


def jpeg_size(data) -> tuple[int, int] | str:
    """(width, height) from a JPEG's frame header (SOFn), or why it has none, without decoding.

    The marker segments are walked from the start, each `FF <marker> <2-byte length>`, at most
    `JPEG_MAX_SEGMENTS` of them; `data` is any bytes-like value that starts with `FF D8`.
    The images of a release come from one encoder with one quality, so their bytes up to the end
    of the frame header are nearly always the same: an image that starts with the bytes of the
    last header walked has its size, which depends on nothing after them, without a walk.
    """
    global _last_frame_header
    prefix, size = _last_frame_header
    if data[: len(prefix)] == prefix:
        return size
    position = 2
    for _ in range(JPEG_MAX_SEGMENTS):
        if position + 4 > len(data):
            return f"it ends at byte {len(data)}, inside its header"
        if data[position] != 0xFF:
            return f"byte {position} is {data[position]:#04x} where a marker should start"
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before a marker
            position += 1
            continue
        if marker in JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        if marker in JPEG_SCAN_MARKERS:
            return f"its image data starts at byte {position} before any frame header (SOF)"
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2:
            return f"the marker segment at byte {position} has length {length}"
        if marker in JPEG_FRAME_MARKERS:
            if position + 9 > len(data):
                return f"it ends at byte {len(data)}, inside its frame header"
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            _last_frame_header = (bytes(data[: position + 9]), (width, height))
            return width, height
        position += 2 + length
    return f"no frame header (SOF) in its first {JPEG_MAX_SEGMENTS} marker segments"


# The bytes of the last JPEG header `jpeg_size` walked, up to its width, and the size they give.
# Replaced in one assignment, so threads reading at once each see a whole pair.
_last_frame_header: tuple[bytes, tuple[int, int]] = (b"not a JPEG", (0, 0))


def jpeg_problem(data, *, member: str, resolution: int | None) -> tuple[str, str] | None:
    """(kind, message) when an image member is not a whole JPEG of `resolution` x `resolution`."""
    if data[: len(JPEG_MAGIC)] != JPEG_MAGIC:
        return "not a JPEG", f"member {shorten(member, NAME_CHARS)} is not a JPEG (it starts with {bytes(data[:8])!r})"
    if data[-len(JPEG_END) :] != JPEG_END:
        return "truncated JPEG", f"member {shorten(member, NAME_CHARS)} does not end with the JPEG end-of-image marker FF D9 (it ends with {bytes(data[-8:])!r}): it is cut short or damaged"
    size = jpeg_size(data)
    if isinstance(size, str):
        return "bad JPEG header", f"member {shorten(member, NAME_CHARS)} has no readable JPEG frame header: {size}"
    if resolution is not None and size != (resolution, resolution):
        return "wrong image size", f"member {shorten(member, NAME_CHARS)} is {size[0]}x{size[1]} pixels, not {resolution}x{resolution} as in the {resolution} release"
    return None


class Record(NamedTuple):
    """One identity, checked: what a row is made of, with the image bytes as they are in the tar.

    `images` holds one `(member base name, bytes)` per expression, in `EXPRESSIONS` order.
    """

    sample_key: str
    identity: str
    parts: Identity
    images: tuple[tuple[str, bytes], ...]
    sample_json: str


def record_to_row(record: Record) -> dict:
    """The `datasets` row of a record: attributes, one `{"bytes", "path"}` image per expression, the JSON."""
    parts = record.parts
    return {
        "sample_key": record.sample_key,
        "identity": record.identity,
        "identity_index": parts.index,
        "animal": parts.animal,
        "style": parts.style,
        "feature": parts.feature,
        "accessories": parts.accessories,
        **{expression: {"bytes": bytes(data), "path": path} for expression, (path, data) in zip(EXPRESSIONS, record.images)},
        "sample_json": record.sample_json,
    }


def build_record(
    sample: Sample,
    *,
    file: str,
    problems: Problems,
    resolution: int | None = None,
    vocabulary: Vocabulary | None = None,
) -> Record | None:
    """The checked record of a sample, or None when the sample is bad and `problems` is lenient.

    Images must be whole JPEGs (start and end markers) of `resolution` x `resolution` pixels,
    read from their headers, never decoded; with `resolution=None` the size is not compared.
    The identity name is split with the release's `vocabulary` when given (`parse_identity`); a
    name it cannot split is noted as an unparsed identity, one whose split the vocabulary leaves
    in doubt as an ambiguous identity (`parse_identity_with_doubt`).
    """
    key, fields = sample
    missing = sorted(SAMPLE_FIELDS - fields.keys())
    if missing:
        problems.bad_sample("missing field", f"the sample has no {missing} (it has {sorted(fields)})", file=file, key=key)
        return None
    for extra in sorted(fields.keys() - SAMPLE_FIELDS):
        problems.note("unknown field", f"unknown field {extra!r} is ignored", file=file, key=key)
    images = []
    for expression in EXPRESSIONS:
        member_name, data = fields[f"{expression}.{IMAGE_EXTENSION}"]
        bad = jpeg_problem(data, member=member_name, resolution=resolution)
        if bad is not None:
            problems.bad_sample(*bad, file=file, key=key)
            return None
        images.append((member_name.rpartition("/")[2], data))
    json_member, json_bytes = fields[JSON_FIELD]
    try:
        sample_json = str(json_bytes, "utf-8")
        meta = json.loads(sample_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.bad_sample("invalid JSON", f"member {shorten(json_member, NAME_CHARS)} is not valid JSON ({error}): {shorten(json_bytes)}", file=file, key=key)
        return None
    except RecursionError:
        problems.bad_sample("invalid JSON", f"member {shorten(json_member, NAME_CHARS)} is JSON nested too deeply to read: {shorten(json_bytes)}", file=file, key=key)
        return None
    if not isinstance(meta, dict):
        problems.bad_sample("invalid JSON", f"member {shorten(json_member, NAME_CHARS)} holds {type(meta).__name__}, not an object", file=file, key=key)
        return None
    parsed_key = parse_sample_key(key)
    json_identity = meta.get("identity")
    if parsed_key is None:
        problems.note("unparsed sample key", f"key {shorten(key, NAME_CHARS)} is not '<8 digits>_<identity>_<8 hex>'; the identity is taken from the JSON", file=file, key=key)
        identity = json_identity if isinstance(json_identity, str) else key
    else:
        identity = parsed_key.identity
        if json_identity is not None and json_identity != identity:
            problems.bad_sample("identity mismatch", f"the JSON names identity {shorten(json_identity, 200)} but the key names {identity!r}", file=file, key=key)
            return None
    parts, doubt = parse_identity_with_doubt(identity, vocabulary)
    if parts.problem:
        problems.note("unparsed identity", parts.problem, file=file, key=key)
    elif doubt:
        problems.note("ambiguous identity", doubt, file=file, key=key)
    return Record(key, identity, parts, tuple(images), sample_json)


def read_shard_records(
    raw,
    *,
    file: str,
    expected_sha256: str | None,
    keep: Callable[[str], bool] | None = None,
    seen: dict[str, str] | None = None,
    problems: Problems | None = None,
    resolution: int | None = None,
    vocabulary: Vocabulary | None = None,
    on_declined: Callable[[str, int, int], None] | None = None,
    spans: Sequence[tuple[int, int]] | None = None,
) -> Iterator[Record]:
    """The records of one open shard, in tar order, verified against `expected_sha256` when it is given.

    `resolution` (512 or 1024) is the image size every JPEG header must state; `vocabulary`
    (`Vocabulary.from_identities` over the release's identity names) splits identity names
    whose accessories have no article. Both are optional: without them, sizes are not compared
    and names are split by rules 1-3 of `parse_identity`.

    The hash is checked when the shard has been read to its end, after its last record was yielded:
    a caller that must not keep records of a damaged shard writes them somewhere temporary first.

    `on_declined` is told of the samples `keep` declined, with their byte spans (`iter_samples`);
    given those `spans` (in shard order), a read that follows goes straight to those samples and
    reads nothing else (it cannot verify: the hash needs every byte).
    """
    if spans is not None and expected_sha256 is not None:
        raise ValueError("a read of some spans of a shard cannot verify its SHA-256")
    problems = problems if problems is not None else Problems()
    seen = seen if seen is not None else {}
    stream = ShardStream(raw, file=file, verify=expected_sha256 is not None)
    options = {"keep": keep, "seen": seen, "problems": problems, "on_declined": on_declined}
    try:
        samples = iter_samples(stream, **options) if spans is None else _samples_in_spans(stream, spans, **options)
        for sample in samples:
            record = build_record(sample, file=file, problems=problems, resolution=resolution, vocabulary=vocabulary)
            if record is not None:
                yield record
        if stream.members == 0 and spans is None:
            raise ReleaseError("the shard holds no samples", file=file, hint="Download the shard again")
        actual = stream.finish() if expected_sha256 is not None else None
    finally:
        if stream.hash is not None:
            stream.hash.close()  # also when the caller stops early: no thread is left waiting
    if actual != expected_sha256:
        raise ChecksumMismatch(file=file, expected=expected_sha256, actual=actual, hint=VERIFY_HINT)


def read_shard_rows(raw, **options) -> Iterator[dict]:
    """`read_shard_records` as `datasets` row dicts (`record_to_row`); the same options."""
    return map(record_to_row, read_shard_records(raw, **options))
