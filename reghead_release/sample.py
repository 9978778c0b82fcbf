"""Writes small RegHead releases in the exact upstream layout, for the tests, the demo and the benchmarks.

A sample release has everything a downloaded release has: WebDataset shards, `metadata.tar.gz`
(manifest and per-sample index) and `checksums.tar.gz` (`SHA256SUMS`), with realistic identity
names and the upstream per-sample JSON. Identities and keys depend only on their position, so the
two resolutions, and releases of different sizes, agree (a smaller release is a prefix of a larger).

Images are simple cartoon heads drawn here, one look per identity, with eyes, mouth and brows that
follow the expression. `images_dir` swaps in real images laid out as `<identity dir>/<expression>.jpg`
(the layout of `../shared/samples/reghead-512`), used in turn and re-encoded at the target size.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .reader import split_member_name
from .release import (
    CHECKSUMS_ASSET,
    MANIFEST_MEMBER,
    METADATA_ASSET,
    SAMPLES_MEMBER,
    SHA256SUMS_MEMBER,
    SHARD_DIR,
)
from .schema import EXPRESSIONS, RESOLUTIONS, STYLES, release_tag, shard_name

JPEG_QUALITY = 95
LAYOUTS = ("readme", "flat")

# A vocabulary in the shape of the real one: multi-word animals, hyphens, apostrophes, `a`/`an`.
ANIMALS = (
    "Doberman Dog", "Polar Bear", "Cormorant", "Mole", "Antelope", "Owl", "Reindeer", "Giant Anteater",
    "Red Fox", "Snow Leopard", "Axolotl", "Black-footed Cat", "Przewalski's Horse", "Emperor Penguin",
    "Komodo Dragon", "Fennec Fox", "Three-toed Sloth", "Bald Eagle", "Hippopotamus", "Koala",
)
FEATURES = (
    "round eyes", "fluffy cheeks", "bushy eyebrows", "arched eyebrows", "curved horns", "long whiskers",
    "droopy ears", "a single horn", "freckled snout", "oversized ears",
)
ACCESSORIES = (
    "a wreath", "a pirate hat", "a bunny-ear headband", "a party hat", "a space helmet", "a laurel crown",
    "an eyepatch", "an aviator cap", "a knitted scarf", "an explorer's pith helmet", "a flower crown",
    "a monocle",
)


def identity_parts(index: int) -> tuple[str, str, str, list[str]]:
    """(animal, style, feature, accessories) of the identity at position `index`."""
    animal = ANIMALS[index % len(ANIMALS)]
    style = STYLES[index % len(STYLES)]
    feature = FEATURES[(index * 7 + index // len(FEATURES)) % len(FEATURES)]
    first = ACCESSORIES[(index * 5) % len(ACCESSORIES)]
    accessories = [first] if index % 3 == 2 else [first, ACCESSORIES[(index * 5 + 1) % len(ACCESSORIES)]]
    return animal, style, feature, accessories


def identity_name(index: int) -> str:
    """The identity name at position `index`: `id000_Doberman_Dog_Photorealistic_round_eyes_a_wreath_a_pirate_hat`."""
    animal, style, feature, accessories = identity_parts(index)
    return "_".join([f"id{index:03d}", animal, style, feature, *accessories]).replace(" ", "_")


def sample_key(position: int, identity: str) -> str:
    """`<8-digit position>_<identity>_<8 hex chars>`, the hex a hash of the identity."""
    return f"{position:08d}_{identity}_{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


def sample_json(key: str, identity: str) -> bytes:
    record = {
        "identity": identity,
        "identity_dir": identity,
        "sample_key": key,
        "num_expressions": len(EXPRESSIONS),
        "expressions": [
            {"expression": e, "field": f"{e}.jpg", "original_file": f"{e}.jpg"} for e in EXPRESSIONS
        ],
    }
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


# --- images ------------------------------------------------------------------------------------

# Per expression: eye openness (0..1), mouth ("open", "half", "closed", "smile"), brow lift, frown.
_FACES = {
    "open_m_open_e": (1.0, "open", 0.0, False),
    "halfo_m_o_e": (1.0, "half", 0.0, False),
    "close_m_o_e": (1.0, "closed", 0.0, False),
    "close_m_halfo_e": (0.5, "closed", 0.0, False),
    "close_m_0_25o_e": (0.25, "closed", 0.0, False),
    "close_m_0_75o_e": (0.75, "closed", 0.0, False),
    "close_m_close_e": (0.0, "closed", 0.0, False),
    "close_m_smile": (1.0, "smile", 0.0, False),
    "raise_eyebrows": (1.0, "closed", 1.0, False),
    "frown": (1.0, "closed", 0.0, True),
}


def _colour(seed: str, low: int = 60, high: int = 230) -> tuple[int, int, int]:
    digest = hashlib.sha256(seed.encode()).digest()
    return tuple(low + digest[i] * (high - low) // 255 for i in range(3))


def draw_head(identity: str, expression: str, size: int):
    """A cartoon head: its look comes from the identity, its eyes, mouth and brows from the expression."""
    from PIL import Image, ImageDraw

    eyes, mouth, lift, frown = _FACES[expression]
    image = Image.new("RGB", (size, size), _colour("bg" + identity, 170, 250))
    draw = ImageDraw.Draw(image)
    s = size / 512
    fur, dark = _colour("fur" + identity), (35, 30, 30)
    pointy = hashlib.sha256(identity.encode()).digest()[3] % 2 == 0
    for side in (-1, 1):  # ears
        x = 256 + side * 130
        if pointy:
            draw.polygon([((x - 55) * s, 180 * s), ((x + side * 40) * s, 40 * s), ((x + 55) * s, 170 * s)], fill=fur)
        else:
            draw.ellipse([(x - 60) * s, 70 * s, (x + 60) * s, 190 * s], fill=fur)
    draw.ellipse([96 * s, 110 * s, 416 * s, 440 * s], fill=fur, outline=dark, width=max(1, int(4 * s)))
    draw.polygon([(196 * s, 120 * s), (256 * s, 20 * s), (316 * s, 120 * s)], fill=_colour("hat" + identity))
    for side in (-1, 1):
        x = 256 + side * 70
        height = max(2, 44 * eyes)
        draw.ellipse([(x - 30) * s, (250 - height / 2) * s, (x + 30) * s, (250 + height / 2) * s], fill="white", outline=dark, width=max(1, int(3 * s)))
        if eyes > 0.2:
            draw.ellipse([(x - 11) * s, (250 - 11 * eyes) * s, (x + 11) * s, (250 + 11 * eyes) * s], fill=dark)
        inner, outer = (200 - 40 * lift, 196 - 40 * lift) if not frown else (214, 186)
        draw.line([(x - side * 32) * s, inner * s, (x + side * 34) * s, outer * s], fill=dark, width=max(2, int(9 * s)))
    draw.ellipse([236 * s, 300 * s, 276 * s, 326 * s], fill=dark)  # nose
    if mouth == "open":
        draw.ellipse([216 * s, 345 * s, 296 * s, 420 * s], fill=(120, 20, 30), outline=dark, width=max(1, int(4 * s)))
    elif mouth == "half":
        draw.ellipse([216 * s, 355 * s, 296 * s, 390 * s], fill=(120, 20, 30), outline=dark, width=max(1, int(4 * s)))
    elif mouth == "smile":
        draw.arc([196 * s, 320 * s, 316 * s, 395 * s], 20, 160, fill=dark, width=max(2, int(8 * s)))
    else:
        draw.line([216 * s, 370 * s, 296 * s, 370 * s], fill=dark, width=max(2, int(7 * s)))
    return image


def _jpeg(image, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@lru_cache(maxsize=256)
def _real_image(path: str, size: int) -> bytes:
    """A real image at `size`: its own bytes when it already has that size, else resized and re-encoded."""
    from PIL import Image

    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        if image.size == (size, size):
            return data
        return _jpeg(image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))


def real_identity_dirs(images_dir: str | Path) -> list[Path]:
    """The identity folders of a real-image sample that hold all 10 expressions."""
    folders = sorted(p for p in Path(images_dir).iterdir() if p.is_dir())
    return [p for p in folders if all((p / f"{e}.jpg").is_file() for e in EXPRESSIONS)]


# --- writing a release -------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRelease:
    root: Path
    resolution: int
    keys: tuple[str, ...]
    shard_paths: tuple[Path, ...]


def _write_tar_gz(path: Path, members: dict[str, bytes]) -> None:
    """A reproducible `.tar.gz`: fixed times and owners, so the same release is the same bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                archive.addfile(info, io.BytesIO(data))


def _shard_keys(path: Path) -> list[str]:
    """The sample keys of a shard, in order, split from member names as the reader splits them."""
    keys: list[str] = []
    with tarfile.open(path) as archive:
        for name in archive.getnames():
            parts = split_member_name(name, current_key=keys[-1] if keys else None)
            if parts is not None and (not keys or keys[-1] != parts[0]):
                keys.append(parts[0])
    return keys


def write_release_assets(root: Path, *, resolution: int, shard_paths: list[Path], extracted: bool = False) -> None:
    """Write `metadata.tar.gz` and `checksums.tar.gz` describing the shards as they are now.

    Tests use it after damaging a shard on purpose, so that the damage is not a checksum mismatch.
    """
    manifest_shards, index_rows, sums = [], [], []
    for path in shard_paths:
        with open(path, "rb") as file:  # in blocks: full-size shards are ~2 GB
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        size = path.stat().st_size
        keys = _shard_keys(path) if size else []
        sums.append(f"{digest}  {SHARD_DIR}/{path.name}\n")
        manifest_shards.append({"file": f"{SHARD_DIR}/{path.name}", "size_bytes": size, "sha256": digest, "num_samples": len(keys)})
        for key in keys:
            index_rows.append({"sample_key": key, "identity": key[9:-9], "shard": f"{SHARD_DIR}/{path.name}", "num_expressions": len(EXPRESSIONS)})
    manifest = {
        "release_tag": release_tag(resolution),
        "resolution": resolution,
        "num_identities": len(index_rows),
        "num_images": len(index_rows) * len(EXPRESSIONS),
        "expressions": list(EXPRESSIONS),
        "shards": manifest_shards,
    }
    metadata = {
        MANIFEST_MEMBER: json.dumps(manifest, indent=2).encode(),
        SAMPLES_MEMBER: "".join(json.dumps(row) + "\n" for row in index_rows).encode(),
    }
    checksums = {SHA256SUMS_MEMBER: "".join(sums).encode()}
    _write_tar_gz(root / METADATA_ASSET, metadata)
    _write_tar_gz(root / CHECKSUMS_ASSET, checksums)
    if extracted:
        for name, data in {**metadata, **checksums}.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)


def write_sample_release(
    out_dir: str | Path,
    *,
    resolution: int = 512,
    num_identities: int = 24,
    samples_per_shard: int = 8,
    layout: str = "readme",
    extracted: bool = False,
    images_dir: str | Path | None = None,
    identities: list[str] | None = None,
    tar_format: str = "pax",
) -> SampleRelease:
    """Write a release of `num_identities` identities (or the given `identities` names) to `out_dir`.

    `layout="readme"` puts the shards in `data/` (the upstream README's layout); `"flat"` leaves
    everything side by side, as `gh release download` does. `extracted=True` also unpacks the
    two `.tar.gz` assets next to them, as the upstream instructions do. `tar_format` is `"pax"`,
    `"gnu"` or `"ustar"` (long member names need one of the first two).
    """
    import webdataset
    from datasets.utils import tqdm as hf_tqdm

    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}, expected one of {LAYOUTS}")
    root = Path(out_dir)
    shard_dir = root / SHARD_DIR if layout == "readme" else root
    shard_dir.mkdir(parents=True, exist_ok=True)
    names = identities if identities is not None else [identity_name(i) for i in range(num_identities)]
    real_dirs = real_identity_dirs(images_dir) if images_dir else []
    if images_dir and not real_dirs:
        raise ValueError(f"images_dir={str(images_dir)!r} holds no folder with all 10 expressions")

    keys, shard_paths = [], []
    bar = hf_tqdm(total=len(names), unit=" identities", desc=f"Writing a {resolution} sample release")
    for first in range(0, len(names), samples_per_shard):
        path = shard_dir / shard_name(resolution, len(shard_paths))
        with open(path, "wb") as raw:
            writer = webdataset.TarWriter(raw, encoder=False, mtime=0, format=f"{tar_format.upper()}_FORMAT")
            for position in range(first, min(first + samples_per_shard, len(names))):
                identity = names[position]
                key = sample_key(position, identity)
                sample = {"__key__": key, "json": sample_json(key, identity)}
                for expression in EXPRESSIONS:
                    if real_dirs:
                        source = real_dirs[position % len(real_dirs)] / f"{expression}.jpg"
                        sample[f"{expression}.jpg"] = _real_image(str(source), resolution)
                    else:
                        sample[f"{expression}.jpg"] = _jpeg(draw_head(identity, expression, resolution))
                writer.write(sample)
                keys.append(key)
                bar.update(1)
            writer.close()
        shard_paths.append(path)
    bar.close()
    write_release_assets(root, resolution=resolution, shard_paths=shard_paths, extracted=extracted)
    return SampleRelease(root, resolution, tuple(keys), tuple(shard_paths))


def main(argv: list[str] | None = None) -> int:
    """`python -m reghead_release.sample OUT ...`: a release folder for `RegHead(data_dir=OUT)` or a mirror."""
    parser = argparse.ArgumentParser(
        prog="python -m reghead_release.sample",
        description=(
            "Write a small RegHead release (drawn identities) in the upstream layout to OUT: shards, "
            "metadata.tar.gz and checksums.tar.gz. Read it with RegHead(config_name=\"512\", data_dir=OUT), "
            "convert it with convert/push.py --release 512=OUT, or serve a --layout flat release as a "
            "mirror folder <base>/<release tag>/ (the tag of 512 is " + release_tag(512) + ")."
        ),
    )
    parser.add_argument("out_dir", metavar="OUT", help="the folder to write; it must not exist or be empty")
    parser.add_argument("--resolution", type=int, choices=RESOLUTIONS, default=512, help="image size (default: 512)")
    parser.add_argument("--identities", type=int, default=24, metavar="N", help="identities to write (default: 24)")
    parser.add_argument("--samples-per-shard", type=int, default=8, metavar="N", help="identities per shard (default: 8)")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="readme",
        help="readme: shards in OUT/data/ (the upstream README's layout, the default); "
        "flat: everything side by side, as `gh release download` leaves it and as a mirror serves it",
    )
    parser.add_argument("--extracted", action="store_true", help="also unpack the two .tar.gz assets beside them")
    parser.add_argument("--images-dir", metavar="DIR", help="real images laid out as <identity>/<expression>.jpg instead of drawn ones")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        parser.error(f"OUT {args.out_dir!r} exists and is not an empty folder: choose a new one")
    if args.identities < 1 or args.samples_per_shard < 1:
        parser.error("--identities and --samples-per-shard must be at least 1")
    if args.images_dir and not (Path(args.images_dir).is_dir() and real_identity_dirs(args.images_dir)):
        parser.error(f"--images-dir {args.images_dir!r}: expected a folder of <identity>/<expression>.jpg with all 10 expressions")
    release = write_sample_release(
        out,
        resolution=args.resolution,
        num_identities=args.identities,
        samples_per_shard=args.samples_per_shard,
        layout=args.layout,
        extracted=args.extracted,
        images_dir=args.images_dir,
    )
    print(
        f"wrote {len(release.keys)} identities in {len(release.shard_paths)} shards to {release.root}; read it with "
        f"RegHead(config_name={json.dumps(str(args.resolution))}, data_dir={json.dumps(str(release.root))})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
