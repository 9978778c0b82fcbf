"""Where a release's files are, and which shards it has, from its own SHA256SUMS and manifest.

A release is a local folder (the README layout, `data/*.tar` beside `metadata.tar.gz` and
`checksums.tar.gz`, extracted or not; or the flat layout `gh release download` leaves) or the
GitHub release URLs. The shard list is read from `checksums/SHA256SUMS` and cross-checked with
`metadata/release_manifest.json`; file names are never guessed. The `.tar.gz` assets are read in
memory and never extracted.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ReleaseError, logger, shorten
from .http import HttpFile, is_url, redact
from .schema import IDENTITY_PATTERN, Vocabulary, parse_sample_key, release_tag

DEFAULT_BASE_URL = "https://github.com/snap-research/RegHead/releases/download"
BASE_URL_ENV = "REGHEAD_BASE_URL"
METADATA_ASSET = "metadata.tar.gz"
CHECKSUMS_ASSET = "checksums.tar.gz"
MANIFEST_MEMBER = "metadata/release_manifest.json"
SAMPLES_MEMBER = "metadata/webdataset_samples.jsonl"
SHA256SUMS_MEMBER = "checksums/SHA256SUMS"
SHARD_DIR = "data"
SHARD_NAME_PATTERN = re.compile(r"^reghead-v\d+-(?P<resolution>\d+)-\d+\.tar$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
DOWNLOAD_HINT = "Download the release again (gh release download <tag>)"
# The most each asset member may hold, checked before it is read or inflated; the real ones are
# about 5 KB (SHA256SUMS), 10 KB (the manifest) and 10 MB (one row per identity).
MAX_MEMBER_BYTES = {SHA256SUMS_MEMBER: 2**20, MANIFEST_MEMBER: 16 * 2**20, SAMPLES_MEMBER: 128 * 2**20}
# What an asset's other members and tar headers may add to its members' bounds, inflated.
ASSET_SLACK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class Shard:
    """One `.tar` shard: its position in the release, file name, where to read it, and its SHA-256."""

    index: int
    name: str
    location: str
    sha256: str | None
    size: int | None = None


@dataclass(frozen=True)
class ReleaseIndex:
    """What the release's checksums and metadata assets say: shard names, hashes, sizes, samples."""

    sha256: dict[str, str]  # shard file name -> hex digest
    sizes: dict[str, int] = field(default_factory=dict)
    identities: tuple[str, ...] = ()  # every identity name, from webdataset_samples.jsonl when present

    def shard_names(self) -> list[str]:
        return sorted(self.sha256)

    def vocabulary(self) -> Vocabulary | None:
        """The release's own vocabulary of features and accessories, from its identity names (or None)."""
        return Vocabulary.from_identities(self.identities) if self.identities else None


def base_url_for(resolution: int, base_url: str | None = None) -> str:
    """The folder URL of a resolution's release assets: `<base>/<tag>`.

    The base is, in order: `base_url`, the `REGHEAD_BASE_URL` environment variable, GitHub.
    """
    base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return f"{base.rstrip('/')}/{release_tag(resolution)}"


# --- reading the checksums and metadata assets -------------------------------------------------


def parse_sha256sums(text: str, *, file: str) -> dict[str, str]:
    """`<sha256>  data/<shard>.tar` lines -> {shard file name: sha256}.

    A shard listed twice with the same hash is taken once; with two different hashes, the
    file is refused, since either could be the right one.
    """
    sums: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, _, path = line.strip().partition(" ")
        name = path.strip().lstrip("*").rpartition("/")[2]
        if not SHA256_PATTERN.match(digest.lower()) or not name:
            raise ReleaseError(f"line {number} is not '<sha256>  <path>': {shorten(line)}", file=file, hint=DOWNLOAD_HINT)
        if not name.endswith(".tar"):
            continue
        if name in sums and sums[name] != digest.lower():
            raise ReleaseError(
                f"shard {shorten(name)} is listed twice with different hashes: {sums[name]} on line {lines[name]}, "
                f"{digest.lower()} on line {number}",
                file=file,
                hint=DOWNLOAD_HINT,
            )
        sums[name], lines[name] = digest.lower(), lines.get(name, number)
    if not sums:
        raise ReleaseError("lists no .tar shard", file=file, hint=DOWNLOAD_HINT)
    return sums


def manifest_shard_sizes(manifest) -> dict[str, int | None]:
    """{shard file name: size or None} from a manifest whose exact layout is not published.

    Any JSON object holding a string that ends in `.tar` is taken as a shard entry; its size is
    the integer under a key containing `size` or `bytes`, when there is one.
    """
    sizes: dict[str, int | None] = {}
    stack = [manifest]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            names = [v.rpartition("/")[2] for v in node.values() if isinstance(v, str) and v.endswith(".tar")]
            size = next(
                (v for k, v in node.items() if type(v) is int and ("size" in k or "bytes" in k)), None
            )
            for name in names:
                sizes[name] = size
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    return sizes


class _Bounded(io.RawIOBase):
    """A file's bytes, refused past `limit` without reading on: a bomb or a runaway asset stops early.

    `too_large` is the message, formatted with the limit, that the `ReleaseError` gives.
    """

    def __init__(self, source, *, limit: int, file: str, too_large: str):
        super().__init__()
        self.source, self.limit, self.file, self.too_large, self.count = source, limit, file, too_large, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.source.read(min(len(buffer), self.limit + 1 - self.count))
        self.count += len(data)
        if self.count > self.limit:
            raise ReleaseError(self.too_large.format(limit=self.limit), file=self.file, hint=DOWNLOAD_HINT)
        buffer[: len(data)] = data
        return len(data)


def asset_bound(members) -> int:
    """The most bytes an asset holding these members may inflate to (or be sent as)."""
    return sum(MAX_MEMBER_BYTES[member] for member in members) + ASSET_SLACK_BYTES


def member_bound(path: str, size: int, *, file: str) -> None:
    """Refuse an asset member larger than its role allows, before it is read."""
    limit = MAX_MEMBER_BYTES[path]
    if size > limit:
        raise ReleaseError(
            f"{path} is {size:,} bytes, more than the {limit:,} bytes it may hold", file=file, hint=DOWNLOAD_HINT
        )


def read_tar_gz_members(fileobj, *, file: str, wanted: set[str]) -> dict[str, bytes]:
    """{wanted path: bytes} for the members of a `.tar.gz` asset whose base name matches a wanted path's.

    Nothing is extracted to disk; a damaged archive raises `ReleaseError` naming the asset, and
    so do a member larger than `MAX_MEMBER_BYTES` allows (before it is inflated) and an archive
    that inflates to more than the wanted members' bounds.
    """
    by_base = {path.rpartition("/")[2]: path for path in wanted}
    found = {}
    limit = asset_bound(wanted)
    try:
        with gzip.GzipFile(fileobj=fileobj, mode="rb") as inflating:
            too_large = "the archive inflates to more than {limit:,} bytes, far more than a release asset holds"
            inflated = _Bounded(inflating, limit=limit, file=file, too_large=too_large)
            with tarfile.open(fileobj=inflated, mode="r|") as archive:
                for member in archive:
                    path = by_base.get(member.name.rpartition("/")[2])
                    if path and member.isfile():
                        member_bound(path, member.size, file=file)
                        found[path] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error, gzip.BadGzipFile) as error:
        raise ReleaseError(f"the archive is damaged ({shorten(str(error), 200)})", file=file, hint=DOWNLOAD_HINT) from None
    return found


def _decode(data: bytes, *, file: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ReleaseError(f"is not UTF-8 text ({error})", file=file, hint=DOWNLOAD_HINT) from None


def _load_json(data: bytes | str, *, file: str):
    text = data if isinstance(data, str) else _decode(data, file=file)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ReleaseError(f"is not valid JSON ({error}): {shorten(text)}", file=file, hint=DOWNLOAD_HINT) from None
    except RecursionError:
        raise ReleaseError(f"is JSON nested too deeply to read: {shorten(text)}", file=file, hint=DOWNLOAD_HINT) from None


def _row_identity(row) -> str | None:
    """The identity name in one row of `webdataset_samples.jsonl`, whose key names are not published.

    In order: the row's `identity` string; a string value that is an identity name
    (`id<digits>_...`); the identity inside a string value that is a sample key.
    """
    if isinstance(row, str):
        values = [row]
    elif isinstance(row, dict):
        values = [value for value in row.values() if isinstance(value, str)]
        if isinstance(row.get("identity"), str):
            return row["identity"]
    else:
        return None
    for value in values:
        if IDENTITY_PATTERN.match(value):
            return value
    for value in values:
        if (key := parse_sample_key(value)) is not None:
            return key.identity
    return None


def sample_index_identities(text: str, *, file: str) -> tuple[str, ...]:
    """Every identity name listed in `webdataset_samples.jsonl` (one JSON row per identity), in order."""
    identities = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            identity = _row_identity(_load_json(line, file=f"{file}, line {number}"))
            if identity is not None:
                identities.append(identity)
    return tuple(identities)


def build_index(contents: dict[str, bytes], *, origin: str) -> ReleaseIndex:
    """The release index from the member texts found, SHA256SUMS cross-checked with the manifest."""
    if SHA256SUMS_MEMBER not in contents:
        raise ReleaseError(
            f"no {SHA256SUMS_MEMBER} was found (neither extracted nor in {CHECKSUMS_ASSET})",
            file=origin,
            hint=f"Put {CHECKSUMS_ASSET} from the release beside the shards",
        )
    sums_file = f"{origin}/{SHA256SUMS_MEMBER}"
    sha256 = parse_sha256sums(_decode(contents[SHA256SUMS_MEMBER], file=sums_file), file=sums_file)
    sizes = {}
    if MANIFEST_MEMBER in contents:
        manifest_file = f"{origin}/{MANIFEST_MEMBER}"
        listed = manifest_shard_sizes(_load_json(contents[MANIFEST_MEMBER], file=manifest_file))
        unlisted = sorted(set(listed) - set(sha256))
        if unlisted:
            raise ReleaseError(
                f"the manifest lists shards that SHA256SUMS does not: {unlisted}", file=manifest_file, hint=DOWNLOAD_HINT
            )
        sizes = {name: size for name, size in listed.items() if size is not None}
    identities: tuple[str, ...] = ()
    if SAMPLES_MEMBER in contents:
        samples_file = f"{origin}/{SAMPLES_MEMBER}"
        identities = sample_index_identities(_decode(contents[SAMPLES_MEMBER], file=samples_file), file=samples_file)
    return ReleaseIndex(sha256=sha256, sizes=sizes, identities=identities)


# The members of each `.tar.gz` asset that the index is built from.
ASSET_MEMBERS = {CHECKSUMS_ASSET: (SHA256SUMS_MEMBER,), METADATA_ASSET: (MANIFEST_MEMBER, SAMPLES_MEMBER)}


def read_assets(assets: dict, *, origin: str) -> ReleaseIndex:
    """The release index from open `.tar.gz` assets, {asset file name: file object}."""
    contents: dict[str, bytes] = {}
    for asset, fileobj in assets.items():
        contents.update(read_tar_gz_members(fileobj, file=f"{origin}/{asset}", wanted=set(ASSET_MEMBERS[asset])))
    return build_index(contents, origin=origin)


def check_resolution(index: ReleaseIndex, resolution: int, *, origin: str) -> None:
    """Refuse a release of the other resolution (shard names say which one they are)."""
    for name in index.shard_names():
        match = SHARD_NAME_PATTERN.match(name)
        if match and int(match["resolution"]) != resolution:
            raise ReleaseError(
                f"shard {name!r} belongs to the {match['resolution']} release, not {resolution}",
                file=origin,
                hint=f"Use the config {match['resolution']!r} for this folder, or point data_dir at the {resolution} release",
            )


# --- a release in a local folder ---------------------------------------------------------------


def _first_existing(*paths: Path) -> Path | None:
    return next((path for path in paths if path.is_file()), None)


def read_local_index(root: Path) -> ReleaseIndex:
    """The index of a local release, from extracted `checksums/`, `metadata/` or the `.tar.gz` assets."""
    contents: dict[str, bytes] = {}
    for asset, members in ASSET_MEMBERS.items():
        for member in members:
            path = _first_existing(root / member, root / member.rpartition("/")[2])
            if path is not None:
                member_bound(member, path.stat().st_size, file=str(path))
                contents[member] = path.read_bytes()
        missing = {member for member in members if member not in contents}
        if missing and (root / asset).is_file():
            with open(root / asset, "rb") as fileobj:
                contents.update(read_tar_gz_members(fileobj, file=str(root / asset), wanted=missing))
    return build_index(contents, origin=str(root))


def locate_local_release(data_dir: str | os.PathLike, resolution: int) -> list[Shard]:
    """The shards of a release downloaded to `data_dir`, each checked to exist (`read_local_release`)."""
    return read_local_release(data_dir, resolution)[1]


def read_local_release(data_dir: str | os.PathLike, resolution: int) -> tuple[ReleaseIndex, list[Shard]]:
    """The index and the shards of a release downloaded to `data_dir`, each shard checked to exist.

    A shard is looked for in `data_dir/data/` and then in `data_dir/`. A `.tar` file there that
    the release does not list is ignored with a warning.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise ReleaseError("is not a folder", file=str(root), hint="Pass data_dir= the folder the release was downloaded to")
    index = read_local_index(root)
    check_resolution(index, resolution, origin=str(root))
    shards = []
    for position, name in enumerate(index.shard_names()):
        path = _first_existing(root / SHARD_DIR / name, root / name)
        if path is None:
            raise ReleaseError(
                f"shard {name!r} is listed in SHA256SUMS but is in neither {root / SHARD_DIR} nor {root}",
                file=name,
                hint=DOWNLOAD_HINT,
            )
        size = path.stat().st_size
        if name in index.sizes and index.sizes[name] != size:
            raise ReleaseError(
                f"the shard is {size} bytes but the release manifest says {index.sizes[name]}",
                file=str(path),
                hint="The download is incomplete or damaged: download the shard again",
            )
        shards.append(Shard(position, name, str(path), index.sha256[name], size))
    listed = set(index.sha256)
    for folder in (root / SHARD_DIR, root):
        for extra in sorted(folder.glob("*.tar")) if folder.is_dir() else ():
            if extra.name not in listed:
                logger.warning("%s is not listed in the release's SHA256SUMS and is ignored", extra)
    return index, shards


def remote_shards(index: ReleaseIndex, base_url: str) -> list[Shard]:
    """The shards of a release published at `base_url` (flat, as GitHub serves release assets)."""
    return [
        Shard(position, name, f"{base_url}/{name}", index.sha256[name], index.sizes.get(name))
        for position, name in enumerate(index.shard_names())
    ]


def open_shard(location: str, *, what: str | None = None, size: int | None = None):
    """Open a shard (local path or http(s) URL) for reading, buffered for large sequential reads.

    `size` (the manifest's, when known) lets a URL refuse a response of another size.
    """
    if is_url(location):
        return io.BufferedReader(HttpFile(location, what=what, size=size), buffer_size=1 << 20)
    return open(location, "rb", buffering=1 << 16)


def read_remote_index(base_url: str) -> ReleaseIndex:
    """The index of a release published at `base_url`, from its two `.tar.gz` assets.

    Messages name the assets by `redact(base_url)`: never a mirror's credentials.
    """
    assets = {}
    for name, members in ASSET_MEMBERS.items():
        with HttpFile(f"{base_url}/{name}", what=name) as f:
            assets[name] = io.BytesIO(read_at_most(f, asset_bound(members), file=redact(f"{base_url}/{name}")))
    return read_assets(assets, origin=redact(base_url))


def read_at_most(fileobj, limit: int, *, file: str) -> bytes:
    """All of a file's bytes, refused (without reading on) once they pass `limit`."""
    too_large = "is more than {limit:,} bytes, far more than a release asset holds"
    return _Bounded(fileobj, limit=limit, file=file, too_large=too_large).readall()


def read_remote_release(base_url: str, resolution: int) -> tuple[ReleaseIndex, list[Shard]]:
    """The index and shards of the release published at `base_url` (`<base>/<tag>`), from its own checksums.

    The builder and the converter both find remote shards here: nothing is downloaded but the
    two small `.tar.gz` assets.
    """
    index = read_remote_index(base_url)
    check_resolution(index, resolution, origin=redact(base_url))
    return index, remote_shards(index, base_url)


def read_release(source: str | os.PathLike, resolution: int) -> tuple[ReleaseIndex, list[Shard]]:
    """The index and shards of a release given as a local folder or as the URL of its assets (`<base>/<tag>`)."""
    if is_url(str(source)):
        return read_remote_release(str(source).rstrip("/"), resolution)
    return read_local_release(source, resolution)
