"""Pictures of identities: a labelled grid of rows x expressions, and neutral/expression pairs.

`expression_grid` draws the dataset card's preview, the README's image and the notebook's grids.
`expression_pairs` and `expression_pairs_batch` give (neutral, expression, expression name) for
blendshape work, one row at a time, so they fit streaming pipelines.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence

from .schema import EXPRESSIONS, NEUTRAL_EXPRESSION

LABEL_HEIGHT = 18
ROW_LABEL_HEIGHT = 16
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MIN_FONT_SIZE = 6
ROW_FONT_SIZE = 12
PAIR_COLUMNS = ("identity", "neutral", "expression", "expression_name")


def _as_image(value, size: int):
    """A PIL image from a decoded image, or from {"bytes": ...} as stored (decode=False).

    Stored JPEGs are opened in draft mode: decoded straight at 1/2 to 1/8 scale, still >= `size`.
    """
    from PIL import Image

    if isinstance(value, dict):
        image = Image.open(io.BytesIO(value["bytes"]))
        image.draft("RGB", (size, size))
        return image
    return value


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _fitting_font(draw, texts: Sequence[str], width: int, size: int):
    """The largest font, `size` at most, in which every text fits in `width` pixels (or the smallest)."""
    for candidate in range(size, MIN_FONT_SIZE - 1, -1):
        font = _font(candidate)
        if max(draw.textlength(text, font=font) for text in texts) <= width:
            return font
    return font


def _clip(draw, text: str, width: int, font) -> str:
    """`text`, cut with an ellipsis so that it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _attributes(row: dict) -> str:
    parts = [row.get("animal"), row.get("style"), row.get("feature"), ", ".join(row.get("accessories") or [])]
    text = " | ".join(part for part in parts if part)
    return text or row.get("identity", "")


def expression_grid(rows: Iterable[dict], *, thumb: int = 128, expressions: Sequence[str] | None = None):
    """A PIL image: one line per row (identity), one column per expression, labelled.

    Column heads are the expression names; above each line are the identity's animal, style,
    feature and accessories. Rows come from the builder, a parquet read or `load_dataset`
    (streaming or not), with images decoded or not. `expressions` picks the columns; by default
    every expression the first row has, in the upstream order, so rows loaded with
    `columns=[...]` work as they are. The image is `thumb * len(expressions)` pixels wide and
    `18 + len(rows) * (16 + thumb)` high.
    """
    from PIL import Image, ImageDraw

    rows = list(rows)
    if not rows:
        raise ValueError("expression_grid needs at least one row")
    if expressions is None:
        expressions = [expression for expression in EXPRESSIONS if expression in rows[0]]
        if not expressions:
            raise ValueError(f"the rows have none of the expression columns {list(EXPRESSIONS)}")
    width = thumb * len(expressions)
    line = ROW_LABEL_HEIGHT + thumb
    grid = Image.new("RGB", (width, LABEL_HEIGHT + line * len(rows)), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    heads = _fitting_font(draw, expressions, thumb - 4, min(ROW_FONT_SIZE, max(MIN_FONT_SIZE, thumb // 11)))
    labels = _font(ROW_FONT_SIZE)
    for column, expression in enumerate(expressions):
        draw.text((column * thumb + 2, 3), expression, fill=INK, font=heads)
    for number, row in enumerate(rows):
        top = LABEL_HEIGHT + number * line
        draw.text((3, top + 2), _clip(draw, _attributes(row), width - 6, labels), fill=INK, font=labels)
        for column, expression in enumerate(expressions):
            picture = _as_image(row[expression], thumb).convert("RGB").resize((thumb, thumb))
            grid.paste(picture, (column * thumb, top + ROW_LABEL_HEIGHT))
    return grid


def expression_pairs(row: dict, *, neutral: str = NEUTRAL_EXPRESSION) -> Iterator[tuple[object, object, str]]:
    """(neutral image, expression image, expression name) for each other expression of a row.

    For blendshape work, where each expression is learned relative to the neutral face
    (`open_m_open_e`). It needs one row only, so it works on a stream:

        stream = load_dataset(repo, "512", split="train", streaming=True)
        for row in stream:
            for neutral, smile, name in expression_pairs(row): ...

    The expressions are those the row has, in the upstream order: all 9 others for a full row,
    only `close_m_smile` for a row loaded with `columns=["open_m_open_e", "close_m_smile"]`.
    Images are given as they are in the row (PIL images, or {"bytes": ...} with decode=False).
    """
    if neutral not in row:
        raise KeyError(f"the row has no {neutral!r} column: load it too (columns=[{neutral!r}, ...])")
    for expression in EXPRESSIONS:
        if expression != neutral and expression in row:
            yield row[neutral], row[expression], expression


def expression_pairs_batch(batch: dict[str, list], *, neutral: str = NEUTRAL_EXPRESSION) -> dict[str, list]:
    """A batch of rows to a batch of pairs, for `.map(expression_pairs_batch, batched=True, ...)`.

    Each row gives one output row per `expression_pairs` triple, with the columns `identity`,
    `neutral` (image), `expression` (image) and `expression_name`. Use it on a `Dataset` or a
    streaming `IterableDataset`, removing the input columns:

        pairs = stream.map(expression_pairs_batch, batched=True, remove_columns=stream.column_names)

    which keeps the pairs a dataset (shuffle buffers, `split_dataset_by_node`, DataLoader workers).
    """
    out: dict[str, list] = {name: [] for name in PAIR_COLUMNS}
    names = list(batch)
    count = len(batch[names[0]]) if names else 0
    for position in range(count):
        row = {name: batch[name][position] for name in names}
        for neutral_image, expression_image, expression in expression_pairs(row, neutral=neutral):
            out["identity"].append(row.get("identity"))
            out["neutral"].append(neutral_image)
            out["expression"].append(expression_image)
            out["expression_name"].append(expression)
    return out
