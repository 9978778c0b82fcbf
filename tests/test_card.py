"""The dataset card says what the folder holds: its configs and splits, read from the repo or the folder."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
from huggingface_hub import DatasetCard

from conftest import ALICE_TOKEN
from convert.card import render_card
from convert.push import convert, main, parse_args

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def section(card: str, title: str) -> str:
    return card.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def load_section(card: str) -> str:
    return section(card, "Load")


def blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def run_python_blocks(card: str, *, polars: bool = True) -> dict:
    namespace: dict = {}
    for number, snippet in enumerate(blocks(load_section(card), "python")):
        if not polars and "import polars" in snippet:
            continue  # polars reads hf:// from huggingface.co itself, not from the loopback Hub
        exec(compile(snippet, f"card python block {number}", "exec"), namespace)  # noqa: S102 - our own card
    return namespace


@pytest.fixture(scope="module")
def converted(releases, tmp_path_factory):
    """{configs: (folder holding the output, results)}, each converted with a relative --output-dir."""

    def convert_in(resolutions: tuple[int, ...]) -> tuple[Path, list]:
        cwd = tmp_path_factory.mktemp("card")
        argv = [f"--release={r}={releases[r].root}" for r in resolutions] + [f"--output-dir={cwd / 'out'}", "--num-proc=1", "--quiet"]
        results, _ = convert(parse_args(argv))
        return cwd, results

    return {resolutions: convert_in(resolutions) for resolutions in ((512,), (1024,), (512, 1024))}


@pytest.mark.parametrize("resolutions", [(512,), (1024,), (512, 1024)])
def test_card_names_exactly_the_converted_configs(converted, resolutions):
    cwd, results = converted[resolutions]
    card = render_card(results, repo_id=None, folder="out")
    configs = [str(r) for r in resolutions]
    missing = {"512", "1024"} - set(configs)
    assert sorted(c["config_name"] for c in DatasetCard(card).data["configs"]) == sorted(configs)
    phrase = "one config, `512`" if configs == ["512"] else "one config, `1024`" if configs == ["1024"] else "2 configs, `512` and `1024`"
    assert f"This folder holds 24 identities (240 images) in {phrase}:" in card
    assert "two configs" not in card and "both resolutions" not in card
    for config in missing:
        assert f'"{config}"' not in card and f"/{config}/" not in card and f"| `{config}` |" not in card
    for config in configs:
        assert f'"{config}"' in load_section(card) and f"| `{config}` | {config}x{config} | train |" in card


def test_one_config_card_without_repo_id_runs_from_where_the_converter_ran(releases, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([f"--release=512={releases[512].root}", "--output-dir=out", "--num-proc=1", "--quiet"]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    section = load_section(card)
    assert 'ds = load_dataset("out", "512")' in section
    assert "FROM 'out/512/*.parquet'" in section and 'pl.scan_parquet("out/512/train-*.parquet")' in section
    assert "hf://" not in card and 'load_dataset("reghead"' not in card
    namespace = run_python_blocks(card)
    assert sum(namespace["ds"].num_rows.values()) == 24 and namespace["first"]["sample_key"]
    (sql,) = blocks(section, "sql")
    assert duckdb.sql(sql.strip().rstrip(";")).fetchall()


def test_both_configs_card_without_repo_id_loads_both(converted, monkeypatch):
    cwd, results = converted[(512, 1024)]
    monkeypatch.chdir(cwd)
    card = render_card(results, repo_id=None, folder="out")
    assert 'test_1024 = load_dataset("out", "1024", split="test")' in card
    namespace = run_python_blocks(card)
    assert namespace["test_1024"].num_rows == 1
    assert namespace["test_1024"][0]["close_m_smile"].size == (1024, 1024)


def test_card_with_repo_id_names_the_repo(converted):
    _, results = converted[(512,)]
    card = render_card(results, repo_id="acme/RegHead", folder="out")
    section = load_section(card)
    assert "This repository holds" in card and "From the Hub repo `acme/RegHead`:" in section
    assert 'ds = load_dataset("acme/RegHead", "512")' in section
    assert "FROM 'hf://datasets/acme/RegHead/512/*.parquet'" in section
    assert 'pl.scan_parquet("hf://datasets/acme/RegHead/512/train-*.parquet")' in section
    assert '"out"' not in section and "1024" not in card


def test_both_configs_card_pushed_with_repo_id_loads_from_the_hub(releases, hub, tmp_path):
    argv = [f"--release={r}={releases[r].root}" for r in (512, 1024)]
    out = tmp_path / "out"
    assert main([*argv, f"--output-dir={out}", "--repo-id=alice/reghead", f"--token={ALICE_TOKEN}", "--num-proc=1", "--quiet"]) == 0
    card = (out / "README.md").read_text()
    assert "2 configs, `512` and `1024`" in card and "FROM 'hf://datasets/alice/reghead/512/*.parquet'" in card
    assert str(out) not in card
    namespace = run_python_blocks(card, polars=False)
    assert sum(namespace["ds"].num_rows.values()) == 24 and namespace["test_1024"].num_rows == 1
