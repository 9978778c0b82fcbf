"""JPEG images decoded at the size a model trains at, straight into the caller's arrays.

libjpeg-turbo scales an image while it decodes it, in the inverse DCT, by any of M/8 (M = 1..8):
a 512 image comes out at 256 or 128 for less than a full decode costs, with no resize at all.
`JpegDecoder(size)` asks for the smallest such scale whose sides are at least `size`, then does
one antialiased (PIL bilinear) resize only when that scale is not exactly `size`. With
`size=None`, or the image's own size, the pixels are those of PIL's own decode, bit for bit.

The decoder is `simplejpeg` (libjpeg-turbo, decodes into a given array, releases the GIL) where
its wheel is installed, else Pillow (`Image.draft` scales by 1/2, 1/4, 1/8 only). JPEGs whose
colours Pillow converts in its own way (CMYK, YCCK) are always decoded by Pillow, so they come
out as Pillow gives them. `docs/BENCHMARKS-decoding.md` has what each decoder costs here.

Nothing here knows about datasets or torch: `decode_into` fills a uint8 array of shape
(n, height, width, 3) from n JPEGs given as bytes-like objects (bytes, memoryviews of Arrow
buffers), one library call per image. Images in other formats that Pillow reads (the PNGs
`datasets` writes for images it re-encodes) and PIL images are decoded by Pillow, in full.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CHANNELS = 3
# Colour spaces whose conversion to RGB Pillow does itself (libjpeg's differs by a unit here and there).
PIL_COLORSPACES = frozenset({"CMYK", "YCCK"})
# The scales of libjpeg-turbo's inverse DCT at or below 1, largest first (Pillow's draft: 1, 1/2, 1/4, 1/8).
DCT_EIGHTHS = (8, 7, 6, 5, 4, 3, 2, 1)
PIL_DRAFT_DIVISORS = (1, 2, 4, 8)


class ImageDecodeError(ValueError):
    """An image that cannot be decoded; the message names it (the row's sample key and the column)."""


@functools.cache
def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:  # no wheel for this platform: Pillow decodes everything
        return None
    return simplejpeg


def scaled_side(side: int, eighths: int) -> int:
    """A side of `side` pixels scaled by eighths/8, rounded up, as libjpeg computes it."""
    return -(-side * eighths // 8)


def dct_scaled_size(height: int, width: int, size: int | None, divisors_only: bool = False) -> tuple[int, int]:
    """(height, width) of the smallest DCT scale whose sides are both at least `size`.

    With `divisors_only`, the scales are those of Pillow's draft mode (1, 1/2, 1/4, 1/8).
    """
    if size is None:
        return height, width
    scales = [8 // d for d in PIL_DRAFT_DIVISORS] if divisors_only else DCT_EIGHTHS
    best = (height, width)
    for eighths in scales:
        h, w = scaled_side(height, eighths), scaled_side(width, eighths)
        if h < size or w < size:
            break
        best = (h, w)
    return best


@dataclass(frozen=True)
class JpegDecoder:
    """Decodes JPEGs into uint8 RGB arrays of `size` x `size` (or their own size with None).

    Picklable and cheap to copy: the library is looked up once per process, on first use.
    """

    size: int | None = None

    def __post_init__(self):
        if self.size is not None and (not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1):
            raise ValueError(f"size={self.size!r}: expected a positive number of pixels, or None for the images' own size")

    def output_shape(self, first: bytes) -> tuple[int, int, int]:
        """The (height, width, 3) every image of a batch is decoded to, from its first image."""
        if self.size is not None:
            return self.size, self.size, CHANNELS
        height, width = _image_size(first)
        return height, width, CHANNELS

    def decode(self, data, *, where: str = "the image") -> np.ndarray:
        """One image as a new (height, width, 3) uint8 array."""
        out = np.empty((1, *self.output_shape(data)), dtype=np.uint8)
        self.decode_into([data], out, where=lambda _: where)
        return out[0]

    def decode_into(self, images: Sequence, out: np.ndarray, *, where: Callable[[int], str]) -> None:
        """Decode `images[i]` into `out[i]`, a C-contiguous uint8 array (n, height, width, 3).

        `where(i)` names image i in an error (only called when one is raised).
        """
        height, width = out.shape[1:3]
        simplejpeg = _simplejpeg()
        if simplejpeg is None:
            for i, data in enumerate(images):
                _decode_with_pil(data, out[i], self.size, where(i))
            return
        header, decode = simplejpeg.decode_jpeg_header, simplejpeg.decode_jpeg
        exact = (height, width) if self.size is None else None  # own size: the images must all have it
        scales: dict[tuple[int, int], tuple[int, int]] = {}  # image size -> the DCT scale it is decoded at
        for i, data in enumerate(images):
            try:
                image_height, image_width, colorspace, _ = header(data)
            except (ValueError, TypeError):  # not a JPEG libjpeg-turbo reads: a PNG, a PIL image, or damaged
                _decode_with_pil(data, out[i], self.size, where(i))
                continue
            if exact is not None and (image_height, image_width) != exact:
                raise ImageDecodeError(
                    f"{where(i)} is {image_width}x{image_height} pixels, not {exact[1]}x{exact[0]} as the batch's "
                    "first image: pass size=... to decode images of several sizes"
                )
            scaled = scales.get((image_height, image_width))
            if scaled is None:
                scaled = scales[image_height, image_width] = dct_scaled_size(image_height, image_width, self.size)
            try:
                if colorspace in PIL_COLORSPACES:
                    _decode_with_pil(data, out[i], self.size, where(i))
                elif scaled == (height, width):  # the common case: one call, no copy
                    decode(data, "RGB", False, False, height, width, 1.0, out[i])
                else:
                    _resize_into(decode(data, "RGB", False, False, scaled[0], scaled[1]), out[i])
            except ImageDecodeError:
                raise
            except ValueError as error:
                raise ImageDecodeError(f"{where(i)} cannot be decoded ({error})") from None


def _image_size(data) -> tuple[int, int]:
    """(height, width) of an image, from its header."""
    simplejpeg = _simplejpeg()
    if simplejpeg is not None:
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return height, width
        except (ValueError, TypeError):
            pass
    with _open_with_pil(data, "the image") as image:
        return image.height, image.width


def _open_with_pil(data, where: str):
    """A PIL image of `data` (image bytes, or a PIL image already), or an error naming it."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, Image.Image):
        return data
    try:
        return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, TypeError) as error:
        raise ImageDecodeError(f"{where} is not an image that can be read ({type(error).__name__})") from None


def _resize_into(image: np.ndarray, out: np.ndarray) -> None:
    """`image` (h, w, 3) resized into `out` (height, width, 3) with PIL's antialiased bilinear filter."""
    from PIL import Image

    height, width = out.shape[:2]
    out[...] = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _decode_with_pil(data, out: np.ndarray, size: int | None, where: str) -> None:
    """Pillow's decode: for a JPEG, draft mode to the nearest of 1, 1/2, 1/4, 1/8 at or above
    `size`; then one resize when that is not `out`'s size. Other formats Pillow reads (a PNG
    that `datasets` wrote) and PIL images are decoded in full, then resized."""
    from PIL import Image

    height, width = out.shape[:2]
    image = _open_with_pil(data, where)
    if size is not None:
        draft_height, draft_width = dct_scaled_size(image.height, image.width, size, divisors_only=True)
        image.draft("RGB", (draft_width, draft_height))  # JPEG only; other formats ignore it
    elif image.size != (width, height):
        raise ImageDecodeError(
            f"{where} is {image.width}x{image.height} pixels, not {width}x{height} as the batch's first "
            "image: pass size=... to decode images of several sizes"
        )
    try:
        rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"{where} cannot be decoded ({error})") from None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    out[...] = np.asarray(rgb)
