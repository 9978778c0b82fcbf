"""docs/: the CLI reference matches `--help`, the snippets run on the converted demo, the facts match the code."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import duckdb
import pytest
from PIL import Image

import reghead
from convert.push import main as convert_main
from reghead_release.sample import identity_name, sample_key

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
OUR_PAGES = ["README.md", "LOADING.md", "TOOLS.md", "ATTRIBUTES.md", "SPLITS.md", "CLI.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blocks(page: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall((DOCS / page).read_text()) if lang == language]


@pytest.fixture(scope="module")
def generate():
    return load_module(DOCS / "generate.py", "docs_generate")


@pytest.fixture(scope="module")
def demo(releases, tmp_path_factory) -> Path:
    """A folder holding `reghead/`, the demo as `python convert/push.py` leaves it (512 config)."""
    folder = tmp_path_factory.mktemp("docs")
    assert convert_main([f"--release=512={releases[512].root}", f"--output-dir={folder / 'reghead'}", "--num-proc=1", "--quiet"]) == 0
    return folder


def test_cli_reference_is_the_help_text(generate):
    documented = generate.help_block(generate.CLI_DOC.read_text())
    assert generate.same_text(documented, generate.cli_help()), "docs/CLI.md is out of date: run `python docs/generate.py`"
    assert generate.main(["--check"]) == 0
    for option in re.findall(r"--[a-z-]+", generate.cli_help()):
        assert f"`{option}" in generate.CLI_DOC.read_text() or option == "--help", f"{option} is not explained in CLI.md"


def test_readme_shows_the_grid_image(generate):
    readme = (REPO / "README.md").read_text()
    assert "](docs/images/grid.png)" in readme
    image = generate.GRID_IMAGE
    assert image.stat().st_size < 300 * 1024
    with Image.open(image) as grid:
        assert grid.format == "PNG"
        assert grid.size == (10 * generate.GRID_THUMB, 18 + generate.GRID_IDENTITIES * (16 + generate.GRID_THUMB))


@pytest.mark.parametrize("page", ["LOADING.md", "TOOLS.md"])
def test_python_snippets_run_on_the_demo(page, demo, monkeypatch):
    monkeypatch.chdir(demo)
    namespace: dict = {}
    snippets = blocks(page, "python")
    assert snippets
    for number, snippet in enumerate(snippets):
        exec(compile(snippet, f"{page} python block {number}", "exec"), namespace)  # noqa: S102 - our own docs


def test_attribute_page_matches_the_data(demo, monkeypatch, capsys):
    monkeypatch.chdir(demo)
    for query in blocks("ATTRIBUTES.md", "sql")[0].strip().splitlines():
        assert duckdb.sql(query.rstrip(";")).fetchall()
    vocabulary = load_module(REPO / "examples" / "vocabulary.py", "vocabulary")
    assert vocabulary.main(["reghead", "--top", "0"]) == 0
    printed = capsys.readouterr().out
    style_block = next(body for lang, body in FENCE.findall((DOCS / "ATTRIBUTES.md").read_text()) if body.startswith("## style"))
    assert style_block.strip() in printed
    page = (DOCS / "ATTRIBUTES.md").read_text()
    assert all(f"`{style}`" in page for style in reghead.STYLES) and len(reghead.STYLES) == 4


def test_split_page_matches_split_of():
    namespace: dict = {}
    exec(blocks("SPLITS.md", "python")[0], namespace)  # noqa: S102
    keys = [sample_key(i, identity_name(i)) for i in range(200)]
    assert [namespace["split_of"](key) for key in keys] == [reghead.split_of(key) for key in keys]
    rows = re.findall(r"^\| `(\S+)` \| `([0-9a-f]{16})` \| (\d+) \| (\w+) \|$", (DOCS / "SPLITS.md").read_text(), re.MULTILINE)
    assert len(rows) == 2
    for key, prefix, bucket, split in rows:
        digest = hashlib.sha256(key.encode()).digest()
        assert digest[:8].hex() == prefix and int.from_bytes(digest[:8], "big") % 10_000 == int(bucket)
        assert reghead.split_of(key) == split


def test_links_in_our_pages_resolve():
    readme_section = (REPO / "README.md").read_text().split("## Notebook and tools", 1)[1].split("\n## ", 1)[0]
    pages = [(DOCS / name, (DOCS / name).read_text()) for name in OUR_PAGES] + [(REPO / "README.md", readme_section)]
    for path, text in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not target.startswith(("http://", "https://")):
                assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"
