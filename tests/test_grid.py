"""reghead.expression_grid (sizes, labels, pictures) and the (neutral, expression, name) pairs."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops

import reghead
from reghead import EXPRESSIONS, NEUTRAL_EXPRESSION, RegHead, expression_grid, expression_pairs
from reghead_release.grid import LABEL_HEIGHT, ROW_LABEL_HEIGHT, expression_pairs_batch

OTHERS = [expression for expression in EXPRESSIONS if expression != NEUTRAL_EXPRESSION]


@pytest.fixture(scope="module")
def stream(releases):
    """The train split of the 512 sample release, streamed by the builder (images decoded)."""
    return RegHead(config_name="512", data_dir=str(releases[512].root)).as_streaming_dataset(split="train")


@pytest.fixture(scope="module")
def rows(stream):
    return list(stream.take(3))


def ink(image, box) -> bool:
    """Whether the box holds dark (text) pixels."""
    return image.crop(box).convert("L").getextrema()[0] < 100


@pytest.mark.parametrize("thumb", [64, 128])
def test_grid_size_and_labels(rows, thumb):
    grid = expression_grid(rows, thumb=thumb)
    line = ROW_LABEL_HEIGHT + thumb
    assert grid.size == (thumb * len(EXPRESSIONS), LABEL_HEIGHT + len(rows) * line)
    for column in range(len(EXPRESSIONS)):
        left = column * thumb
        assert ink(grid, (left, 0, left + thumb, LABEL_HEIGHT)), f"no label above column {column}"
        # each label fits its column: nothing is drawn on the column's edges
        assert not ink(grid, (left, 0, left + 1, LABEL_HEIGHT)) and not ink(grid, (left + thumb - 2, 0, left + thumb, LABEL_HEIGHT))
    for number in range(len(rows)):
        top = LABEL_HEIGHT + number * line
        assert ink(grid, (0, top, grid.width, top + ROW_LABEL_HEIGHT)), f"no attributes above line {number}"


def test_grid_pictures_are_the_rows_expressions(rows):
    thumb = 96
    grid = expression_grid(rows, thumb=thumb)
    for number, row in enumerate(rows):
        for column, expression in enumerate(EXPRESSIONS):
            left, top = column * thumb, LABEL_HEIGHT + number * (ROW_LABEL_HEIGHT + thumb) + ROW_LABEL_HEIGHT
            cell = grid.crop((left, top, left + thumb, top + thumb))
            expected = row[expression].convert("RGB").resize((thumb, thumb))
            assert ImageChops.difference(cell, expected).getbbox() is None, (number, expression)


def test_grid_takes_undecoded_rows_and_projected_columns(rows):
    as_stored = []
    for row in rows:
        stored = dict(row)
        for expression in EXPRESSIONS:
            buffer = io.BytesIO()
            row[expression].save(buffer, format="BMP")  # lossless and quick
            stored[expression] = {"bytes": buffer.getvalue(), "path": None}
        as_stored.append(stored)
    assert expression_grid(as_stored, thumb=32).tobytes() == expression_grid(rows, thumb=32).tobytes()

    projected = [{"identity": row["identity"], NEUTRAL_EXPRESSION: row[NEUTRAL_EXPRESSION], "frown": row["frown"]} for row in rows]
    grid = expression_grid(projected, thumb=40)
    assert grid.size == (2 * 40, LABEL_HEIGHT + len(rows) * (ROW_LABEL_HEIGHT + 40))
    assert expression_grid(rows, thumb=40, expressions=["close_m_smile"]).width == 40

    with pytest.raises(ValueError):
        expression_grid([])
    with pytest.raises(ValueError):
        expression_grid([{"identity": "x"}])


def test_pairs_of_a_row(rows):
    row = rows[0]
    pairs = list(expression_pairs(row))
    assert [name for _, _, name in pairs] == OTHERS and len(pairs) == 9
    for neutral, expression, name in pairs:
        assert neutral is row[NEUTRAL_EXPRESSION] and expression is row[name]
    assert reghead.expression_pairs is expression_pairs


def test_pairs_of_a_projected_row_and_another_neutral(rows):
    row = {key: rows[0][key] for key in ("identity", NEUTRAL_EXPRESSION, "close_m_smile")}
    assert [(n, e, name) for n, e, name in expression_pairs(row)] == [(row[NEUTRAL_EXPRESSION], row["close_m_smile"], "close_m_smile")]
    closed = [name for _, _, name in expression_pairs(rows[0], neutral="close_m_o_e")]
    assert closed == [e for e in EXPRESSIONS if e != "close_m_o_e"]
    with pytest.raises(KeyError, match="open_m_open_e"):
        list(expression_pairs({"close_m_smile": row["close_m_smile"]}))


def test_pairs_batch_streams_as_a_dataset(stream, rows):
    pairs = stream.map(expression_pairs_batch, batched=True, batch_size=2, remove_columns=stream.column_names)
    first = list(pairs.take(9 * len(rows)))
    assert [pair["expression_name"] for pair in first] == OTHERS * len(rows)
    assert [pair["identity"] for pair in first] == [row["identity"] for row in rows for _ in OTHERS]
    for pair, (neutral, expression, _) in zip(first, [p for row in rows for p in expression_pairs(row)]):
        assert set(pair) == {"identity", "neutral", "expression", "expression_name"}
        assert isinstance(pair["neutral"], Image.Image) and pair["neutral"].tobytes() == neutral.tobytes()
        assert pair["expression"].tobytes() == expression.tobytes()
    assert expression_pairs_batch({name: [] for name in stream.column_names}) == {
        "identity": [], "neutral": [], "expression": [], "expression_name": []
    }
