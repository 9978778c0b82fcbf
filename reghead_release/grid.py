"""Pictures of identities: a labelled grid of rows x expressions, and neutral/expression pairs."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

from .schema import EXPRESSIONS, NEUTRAL_EXPRESSION

LABEL_HEIGHT = 18
ROW_LABEL_HEIGHT = 16
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def _as_image(value):
    """A PIL image from a decoded image, or from {"bytes": ...} as stored (decode=False)."""
    from PIL import Image

    if isinstance(value, dict):
        return Image.open(io.BytesIO(value["bytes"]))
    return value


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _attributes(row: dict) -> str:
    parts = [row.get("animal"), row.get("style"), row.get("feature"), ", ".join(row.get("accessories") or [])]
    text = " | ".join(part for part in parts if part)
    return text or row.get("identity", "")


def expression_grid(rows: Iterable[dict], *, thumb: int = 128, expressions: tuple[str, ...] = EXPRESSIONS):
    """A PIL image: one line per row (identity), one column per expression, labelled.

    Column heads are the expression names; above each line are the identity's animal, style,
    feature and accessories. Rows come from the builder, a parquet read or `load_dataset`,
    with images decoded or not.
    """
    from PIL import Image, ImageDraw

    rows = list(rows)
    if not rows:
        raise ValueError("expression_grid needs at least one row")
    width = thumb * len(expressions)
    line = ROW_LABEL_HEIGHT + thumb
    grid = Image.new("RGB", (width, LABEL_HEIGHT + line * len(rows)), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    small, tiny = _font(max(9, thumb // 11)), _font(12)
    for column, expression in enumerate(expressions):
        draw.text((column * thumb + 3, 3), expression, fill=INK, font=small)
    for number, row in enumerate(rows):
        top = LABEL_HEIGHT + number * line
        draw.text((3, top + 2), _attributes(row)[: width // 6], fill=INK, font=tiny)
        for column, expression in enumerate(expressions):
            picture = _as_image(row[expression]).convert("RGB").resize((thumb, thumb))
            grid.paste(picture, (column * thumb, top + ROW_LABEL_HEIGHT))
    return grid


def expression_pairs(row: dict, *, neutral: str = NEUTRAL_EXPRESSION) -> Iterator[tuple[object, object, str]]:
    """(neutral image, expression image, expression name) for the 9 other expressions of a row.

    For blendshape work, where each expression is learned relative to the neutral face. It
    works on one row at a time, so it fits a streaming pipeline:
    `stream.map(lambda row: ..., )` or a generator over `load_dataset(..., streaming=True)`.
    """
    for expression in EXPRESSIONS:
        if expression != neutral:
            yield row[neutral], row[expression], expression
