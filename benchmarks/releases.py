"""The releases the benchmark runs on, written once into a cache folder and reused when complete.

`full` is a 512 release of the real shape: 33,724 identities in 11 shards. Its images are the real
images of `../shared/samples/reghead-512` (12 identities, used in turn), re-encoded once at JPEG
quality 97-98: the samples are stored smaller than the release's images (33 KB an image; 48 KB at
the release's quality 95, which would make 15.4 GiB), and at 97-98 the mean image (~59 KB) matches
the real release's bytes per image (18.96 GiB / 337,240 images, tar headers included), so the
shards come out at the real sizes (~1.85 GB) and the rows carry the real bytes. `subset` is the first 3 shards of
`full` (hard links, its own checksums), `gib` a ~1 GiB release of 2 shards, `smoke` a tiny one.
`decode` (3,000 identities in 4 shards) and `decode-1024` (the same identities at 1024) are the
decoding benchmark's; the 1024 images are the samples resized (Lanczos) and encoded at quality
98-99, whose mean (~189 KB) matches the 1024 release's bytes per image (58.79 GiB / 337,240).
Each release folder gets a `COMPLETE` marker last; a folder without one is written again.

    python benchmarks/releases.py full --data-dir /work/bench-data
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reghead_release.sample import real_identity_dirs, write_release_assets, write_sample_release  # noqa: E402
from reghead_release.schema import EXPRESSIONS  # noqa: E402

DATA_DIR = Path("/work/bench-data")
REAL_IMAGES = REPO.parent.parent / "shared" / "samples" / "reghead-512"
if not REAL_IMAGES.is_dir():  # a checkout at /work/main or /work/wt/<branch>
    REAL_IMAGES = Path("/work/shared/samples/reghead-512")
RESOLUTION = 512
# Per resolution, the qualities identities take in turn: the mean bytes per image of the real release.
JPEG_QUALITIES = {512: (98, 97, 97), 1024: (98, 98, 98, 99)}
MARKER = "COMPLETE"
FULL_IDENTITIES, FULL_SHARDS, SUBSET_SHARDS = 33_724, 11, 3
# name: (identities, identities per shard); `subset` is made from `full` instead.
WRITTEN = {
    "full": (FULL_IDENTITIES, math.ceil(FULL_IDENTITIES / FULL_SHARDS)),
    "gib": (1_760, 880),
    "smoke": (40, 20),
    "decode": (3_000, 750),
    "decode-1024": (3_000, 750),
    "decode-smoke": (48, 12),
}
RESOLUTIONS = {"decode-1024": 1024}  # the others are 512 releases
KINDS = ("smoke", "gib", "subset", "full", "decode", "decode-1024", "decode-smoke")


def resolution_of(kind: str) -> int:
    return RESOLUTIONS.get(kind, RESOLUTION)


def release_images(data_dir: Path, resolution: int = RESOLUTION) -> Path | None:
    """The real images at `resolution`, re-encoded at JPEG_QUALITIES (written once), or None
    without ../shared (drawn heads)."""
    from PIL import Image

    if not REAL_IMAGES.is_dir():
        return None
    out = data_dir / ("images" if resolution == RESOLUTION else f"images-{resolution}")
    if (out / MARKER).exists():
        return out
    qualities = JPEG_QUALITIES[resolution]
    for index, folder in enumerate(real_identity_dirs(REAL_IMAGES)):
        (out / folder.name).mkdir(parents=True, exist_ok=True)
        quality = qualities[index % len(qualities)]
        for expression in EXPRESSIONS:
            image = Image.open(folder / f"{expression}.jpg").convert("RGB")
            if image.size != (resolution, resolution):
                image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=quality)
            (out / folder.name / f"{expression}.jpg").write_bytes(buffer.getvalue())
    (out / MARKER).touch()
    return out


def _link_subset(full: Path, root: Path) -> None:
    """The first SUBSET_SHARDS shards of `full`, hard-linked, with checksums of their own."""
    (root / "data").mkdir(parents=True)
    shards = []
    for source in sorted((full / "data").glob("*.tar"))[:SUBSET_SHARDS]:
        os.link(source, root / "data" / source.name)
        shards.append(root / "data" / source.name)
    write_release_assets(root, resolution=RESOLUTION, shard_paths=shards)


def release(kind: str, data_dir: Path = DATA_DIR) -> Path:
    """The folder of release `kind` under `data_dir`, written first if it is not complete."""
    resolution = resolution_of(kind)
    root = data_dir / f"reghead-{resolution}-{kind}"
    if (root / MARKER).exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    if kind == "subset":
        _link_subset(release("full", data_dir), root)
    else:
        identities, per_shard = WRITTEN[kind]
        images = release_images(data_dir, resolution)
        write_sample_release(
            root, resolution=resolution, num_identities=identities, samples_per_shard=per_shard, images_dir=images
        )
    (root / MARKER).touch()
    return root


def shards(root: Path) -> list[Path]:
    return sorted((root / "data").glob("*.tar"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write (once) a release the benchmark runs on.")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    root = release(args.kind, args.data_dir)
    sizes = [path.stat().st_size for path in shards(root)]
    low, high = min(sizes) / 1e9, max(sizes) / 1e9
    print(f"{root}: {len(sizes)} shards, {sum(sizes) / 2**30:.2f} GiB, {low:.2f}-{high:.2f} GB each")


if __name__ == "__main__":
    main()
