"""Each JPEG decoder's cost per image, at each output size, on the real sample images.

    python benchmarks/decoders.py --images ../shared/samples/reghead-512 --output decoders.json

The decoders are those the project could use: Pillow (draft mode: DCT scaling by 1/2, 1/4,
1/8), simplejpeg (libjpeg-turbo, DCT scaling by M/8, decodes into a given array), PyTurboJPEG
(libjpeg-turbo through ctypes; needs the system's libturbojpeg) and torchvision's
`decode_jpeg` (no DCT scaling: a full decode, then torch's antialiased bilinear resize). A
decoder that is not installed is left out and named. Each decodes to `size` x `size` x 3 uint8:
the smallest DCT scale at or above `size`, then a resize when that is not `size`.

The 512 images are the samples' own; the 1024 ones are the samples resized (Lanczos) and encoded
at quality 95, as the release's are. Each figure is the best of `--repeats` passes over all
images, in one process (one core), the microseconds per image.

This script imports nothing from the project, so that it runs in a venv with torchvision (whose
wheels need another torch than the project's tests pin).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

SIZES = {512: (512, 256, 128, 64), 1024: (1024, 512, 256, 128, 64)}


def sample_images(folder: Path) -> dict[int, list[bytes]]:
    """The samples' JPEG bytes at 512 (as they are) and at 1024 (resized, quality 95)."""
    from PIL import Image

    own = [path.read_bytes() for path in sorted(folder.glob("*/*.jpg"))]
    large = []
    for data in own:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").resize((1024, 1024), Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=95)
        large.append(buffer.getvalue())
    return {512: own, 1024: large}


def pil_decoder(size: int, source: int):
    from PIL import Image

    def decode(data: bytes):
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))
            image = image.convert("RGB")
            return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.BILINEAR)

    return decode


def resized(image, size: int):
    """A (h, w, 3) array at size x size: itself, or PIL's bilinear resize of it."""
    from PIL import Image

    return image if image.shape[0] == size else Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)


def simplejpeg_decoder(size: int, source: int):
    import numpy as np
    import simplejpeg

    if source // 8 > size:  # below the smallest DCT scale: decode at 1/8, then resize
        return lambda data: resized(simplejpeg.decode_jpeg(data, "RGB", False, False, size, size), size)
    out = np.empty((size, size, 3), dtype=np.uint8)
    return lambda data: simplejpeg.decode_jpeg(data, "RGB", False, False, size, size, 1.0, out)


def turbojpeg_decoder(size: int, source: int):
    from turbojpeg import TJPF_RGB, TurboJPEG

    jpeg = TurboJPEG()
    factors = sorted((f for f in jpeg.scaling_factors if f[0] <= f[1]), key=lambda f: f[0] / f[1])
    factor = next(f for f in factors if -(-source * f[0] // f[1]) >= size)
    return lambda data: resized(jpeg.decode(data, pixel_format=TJPF_RGB, scaling_factor=factor), size)


def torchvision_decoder(size: int, source: int):
    import torch
    from torch.nn.functional import interpolate
    from torchvision.io import decode_jpeg

    torch.set_num_threads(1)

    def decode(data: bytes):
        image = decode_jpeg(torch.frombuffer(data, dtype=torch.uint8))
        if image.shape[-1] != size:
            image = interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True)[0].round().to(torch.uint8)
        return image

    return decode


DECODERS = {"pil": pil_decoder, "simplejpeg": simplejpeg_decoder, "pyturbojpeg": turbojpeg_decoder, "torchvision": torchvision_decoder}


def microseconds(decode, images: list[bytes], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for data in images:
            decode(data)
        best = min(best, time.perf_counter() - started)
    return best / len(images) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="folders of <identity>/<expression>.jpg (the real samples)")
    parser.add_argument("--output", type=Path, required=True, help="a JSON file: {decoder: {source: {size: microseconds}}}")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    images = sample_images(args.images)
    results: dict = {}
    for name, make in DECODERS.items():
        try:
            make(64, 1024)(images[1024][0])
        except Exception as error:  # noqa: BLE001 - not installed, or no library: named in the report
            results[name] = {"missing": f"{type(error).__name__}: {error}"}
            continue
        results[name] = {
            str(source): {str(size): round(microseconds(make(size, source), images[source], args.repeats), 1) for size in sizes}
            for source, sizes in SIZES.items()
        }
        print(name, results[name], flush=True)
    args.output.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
