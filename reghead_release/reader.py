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
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .errors import Problems, ReleaseError
from .schema import (
    EXPRESSIONS,
    IMAGE_EXTENSION,
    JSON_FIELD,
    SAMPLE_FIELDS,
    Identity,
    parse_identity,
    parse_sample_key,
)
from .tar import JPEG_MAGIC, ShardStream, iter_members

VERIFY_HINT = "Download the shard again; to read it anyway, pass verify_checksums=False"


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


def build_record(sample: Sample, *, file: str, problems: Problems) -> Record | None:
    """The checked record of a sample, or None when the sample is bad and `problems` is lenient."""
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
        if data[: len(JPEG_MAGIC)] != JPEG_MAGIC:
            problems.bad_sample("not a JPEG", f"member {member_name!r} is not a JPEG (it starts with {bytes(data[:8])!r})", file=file, key=key)
            return None
        images.append((member_name.rpartition("/")[2], data))
    json_member, json_bytes = fields[JSON_FIELD]
    try:
        sample_json = str(json_bytes, "utf-8")
        meta = json.loads(sample_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.bad_sample("invalid JSON", f"member {json_member!r} is not valid JSON ({error}): {bytes(json_bytes[:80])!r}", file=file, key=key)
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
    return Record(key, identity, parts, tuple(images), sample_json)


def read_shard_records(
    raw,
    *,
    file: str,
    expected_sha256: str | None,
    keep: Callable[[str], bool] | None = None,
    seen: dict[str, str] | None = None,
    problems: Problems | None = None,
) -> Iterator[Record]:
    """The records of one open shard, in tar order, verified against `expected_sha256` when it is given.

    The hash is checked when the shard has been read to its end, after its last record was yielded:
    a caller that must not keep records of a damaged shard writes them somewhere temporary first.
    """
    problems = problems if problems is not None else Problems()
    seen = seen if seen is not None else {}
    stream = ShardStream(raw, file=file, verify=expected_sha256 is not None)
    try:
        for sample in iter_samples(stream, keep=keep, seen=seen, problems=problems):
            record = build_record(sample, file=file, problems=problems)
            if record is not None:
                yield record
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


def read_shard_rows(raw, **options) -> Iterator[dict]:
    """`read_shard_records` as `datasets` row dicts (`record_to_row`); the same options."""
    return map(record_to_row, read_shard_records(raw, **options))
