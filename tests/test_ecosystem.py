"""The converted parquet, read by tools people already use: DuckDB, Polars, PyArrow datasets; and examples/vocabulary.py."""

from __future__ import annotations

import importlib.util
import io
from collections import Counter
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

from convert.push import main as convert_main
from reghead_release.schema import EXPRESSIONS, SPLITS

REPO = Path(__file__).resolve().parent.parent
ATTRIBUTES = ["sample_key", "identity", "animal", "style", "feature", "accessories"]


@pytest.fixture(scope="module")
def converted(releases, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ecosystem") / "reghead"
    assert convert_main([f"--release=512={releases[512].root}", f"--output-dir={out}", "--num-proc=1", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def rows(converted) -> list[dict]:
    """The attribute columns of every row of the 512 config, read file by file, with their split."""
    out = []
    for path in sorted((converted / "512").glob("*.parquet")):
        split = path.name.split("-")[0]
        out += [{**row, "split": split} for row in pq.read_table(path, columns=ATTRIBUTES).to_pylist()]
    assert {row["split"] for row in out} <= set(SPLITS) and len(out) == 24
    return out


def test_duckdb_group_by_matches_the_rows(converted, rows):
    files = f"{converted}/512/*.parquet"
    by_animal = duckdb.sql(f"SELECT animal, count(*) AS n FROM read_parquet('{files}') GROUP BY animal").fetchall()
    assert dict(by_animal) == Counter(row["animal"] for row in rows)

    by_split = duckdb.sql(
        f"SELECT split_part(parse_filename(filename), '-', 1) AS split, style, count(*) "
        f"FROM read_parquet('{files}', filename = true) GROUP BY ALL"
    ).fetchall()
    assert {(split, style): n for split, style, n in by_split} == Counter((row["split"], row["style"]) for row in rows)

    accessories = duckdb.sql(
        f"SELECT accessory, count(*) FROM (SELECT unnest(accessories) AS accessory FROM read_parquet('{files}')) GROUP BY accessory"
    ).fetchall()
    assert dict(accessories) == Counter(a for row in rows for a in row["accessories"])


def test_duckdb_reads_the_image_bytes(converted):
    key, jpeg = duckdb.sql(
        f"SELECT sample_key, close_m_smile.bytes FROM read_parquet('{converted}/512/train-*.parquet') ORDER BY sample_key LIMIT 1"
    ).fetchall()[0]
    assert key.startswith("00000000_")
    assert Image.open(io.BytesIO(jpeg)).size == (512, 512)


def test_polars_lazy_scan_reads_only_the_projected_columns(converted, rows):
    scan = (
        pl.scan_parquet(converted / "512" / "*.parquet")
        .filter(pl.col("style") == "Photorealistic")
        .select("identity", "animal")
    )
    plan = scan.explain()
    assert "PROJECT 3/18 COLUMNS" in plan, plan  # the scan reads the 2 selected columns and the filtered one only
    frame = scan.collect()
    assert frame.columns == ["identity", "animal"]
    expected = sorted(row["identity"] for row in rows if row["style"] == "Photorealistic")
    assert sorted(frame["identity"].to_list()) == expected and expected

    counts = pl.scan_parquet(converted / "512" / "*.parquet").group_by("animal").len().collect()
    assert dict(counts.iter_rows()) == Counter(row["animal"] for row in rows)

    smiles = pl.scan_parquet(converted / "512" / "*.parquet").select(pl.col("close_m_smile").struct.field("bytes")).head(1).collect()
    assert Image.open(io.BytesIO(smiles.item())).size == (512, 512)


def test_pyarrow_dataset_filters_and_projects(converted, rows):
    dataset = pads.dataset(converted / "512", format="parquet")
    assert dataset.schema.names[: len(ATTRIBUTES) + 1] == ["sample_key", "identity", "identity_index", *ATTRIBUTES[2:]]
    toys = dataset.to_table(columns=["identity", "close_m_smile"], filter=pc.field("style") == "Plastic Toy Render")
    expected = [row for row in rows if row["style"] == "Plastic Toy Render"]
    assert toys.column_names == ["identity", "close_m_smile"]
    assert sorted(toys["identity"].to_pylist()) == sorted(row["identity"] for row in expected) and expected

    animal = rows[0]["animal"]
    same_animal = dataset.to_table(columns=["sample_key"], filter=(pc.field("animal") == animal) & pc.field("feature").is_valid())
    assert sorted(same_animal["sample_key"].to_pylist()) == sorted(row["sample_key"] for row in rows if row["animal"] == animal)

    train = pads.dataset(sorted((converted / "512").glob("train-*.parquet")), format="parquet")
    assert train.count_rows() == sum(row["split"] == "train" for row in rows)
    assert all(name in dataset.schema.names for name in EXPRESSIONS)


def load_vocabulary():
    spec = importlib.util.spec_from_file_location("vocabulary", REPO / "examples" / "vocabulary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vocabulary_script_counts_every_attribute(converted, rows, capsys):
    vocabulary = load_vocabulary()
    counts = vocabulary.attribute_counts(str(converted), "512")
    assert counts["animal"] == Counter(row["animal"] for row in rows)
    assert counts["style"] == Counter(row["style"] for row in rows)
    assert counts["feature"] == Counter(row["feature"] for row in rows)
    assert counts["accessories"] == Counter(a for row in rows for a in row["accessories"])

    assert vocabulary.main([str(converted), "--top", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"## style ({len(counts['style'])} distinct values in {len(rows)} identities)" in printed
    assert "| Photorealistic |" in printed
