"""docs/: the CLI reference matches `--help`, the snippets run on the converted demo, the facts match the code."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from PIL import Image

import reghead
from convert.push import DEFAULT_OUTPUT
from convert.push import main as convert_main
from reghead_release.sample import identity_name, sample_key

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
OUR_PAGES = ["README.md", "LOADING.md", "TOOLS.md", "ATTRIBUTES.md", "SPLITS.md", "CLI.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
MIRROR_SECTION = "## From a mirror"  # LOADING.md: needs a server, run by its own test


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blocks(page: str, language: str, *, text: str | None = None) -> list[str]:
    return [body for lang, body in FENCE.findall(text if text is not None else (DOCS / page).read_text()) if lang == language]


def section(page: str, heading: str) -> str:
    """The text of a page from `heading` to the next heading of the same level."""
    after = (DOCS / page).read_text().split(f"\n{heading}\n", 1)[1]
    return after.split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def generate():
    return load_module(DOCS / "generate.py", "docs_generate")


@pytest.fixture(scope="module")
def demo(releases, tmp_path_factory) -> Path:
    """A folder holding `reghead-parquet/`, the demo as `python convert/push.py` leaves it (512 config)."""
    folder = tmp_path_factory.mktemp("docs")
    assert convert_main([f"--release=512={releases[512].root}", f"--output-dir={folder / DEFAULT_OUTPUT}", "--num-proc=1", "--quiet"]) == 0
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
    text = (DOCS / page).read_text()
    if MIRROR_SECTION in text:
        text = text.replace(section(page, MIRROR_SECTION), "")
    snippets = blocks(page, "python", text=text)
    assert snippets
    for number, snippet in enumerate(snippets):
        exec(compile(snippet, f"{page} python block {number}", "exec"), namespace)  # noqa: S102 - our own docs


def test_attribute_page_matches_the_data(demo, monkeypatch, capsys):
    monkeypatch.chdir(demo)
    for query in blocks("ATTRIBUTES.md", "sql")[0].strip().splitlines():
        assert duckdb.sql(query.rstrip(";")).fetchall()
    vocabulary = load_module(REPO / "examples" / "vocabulary.py", "vocabulary")
    assert vocabulary.main([DEFAULT_OUTPUT, "--top", "0"]) == 0
    printed = capsys.readouterr().out
    style_block = next(body for lang, body in FENCE.findall((DOCS / "ATTRIBUTES.md").read_text()) if body.startswith("## style"))
    assert style_block.strip() in printed
    page = (DOCS / "ATTRIBUTES.md").read_text()
    assert all(f"`{style}`" in page for style in reghead.STYLES) and len(reghead.STYLES) == 4


ATTRIBUTE_ROW = re.compile(r"^\| `\.\.\._(\S+)`(?: \(once\))? \| (.+?) \| (.+?) \|$", re.MULTILINE)


def attribute_cell(text: str, without: tuple | None = None) -> tuple:
    """(feature, accessories) from a cell of the attribute page's table: "`f`, [`a x`, `y`]",
    "`f`, no accessory", or "the same..." (as without the vocabulary)."""
    if text.startswith("the same"):
        return without
    feature, _, accessories = text.partition(", ")
    return feature.strip("`"), [] if accessories == "no accessory" else re.findall(r"`([^`]+)`", accessories)


def test_attribute_table_matches_parse_identity():
    text = section("ATTRIBUTES.md", "### The release's vocabulary: where a feature and an accessory end")
    others = re.findall(r"`\.\.\._(\w+)`", text.split("In a release holding", 1)[1].split("\n\n", 1)[0])
    rows = ATTRIBUTE_ROW.findall(text)
    assert len(others) == 5 and len(rows) == 12
    names = [f"id{i:03d}_Owl_Photorealistic_{rest}" for i, rest in enumerate([*others, *(rest for rest, _, _ in rows)])]
    vocabulary = reghead.Vocabulary.from_identities(names)
    for name, (_, without, with_vocabulary) in zip(names[len(others) :], rows):
        plain = reghead.parse_identity(name)
        parts, doubt = reghead.parse_identity_with_doubt(name, vocabulary)
        assert (plain.feature, plain.accessories) == attribute_cell(without), name
        assert (parts.feature, parts.accessories) == attribute_cell(with_vocabulary, attribute_cell(without)), name
        assert (doubt is not None) == ("reported" in with_vocabulary), (name, doubt)


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_mirror_example_runs_against_python_http_server(tmp_path, monkeypatch):
    """LOADING.md's mirror: its commands as written (the port changed to a free one), a real http.server."""
    text = section("LOADING.md", MIRROR_SECTION)
    (commands,) = blocks("LOADING.md", "bash", text=text)
    (snippet,) = blocks("LOADING.md", "python", text=text)
    port = free_port()
    write, serve = (shlex.split(line.replace("8000", str(port))) for line in commands.strip().splitlines())
    assert write[:3] == ["python", "-m", "reghead_release.sample"] and serve[:3] == ["python", "-m", "http.server"]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, *write[1:]], cwd=tmp_path, env=env, check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, *serve[1:]], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "python -m http.server did not start"
                time.sleep(0.05)
        monkeypatch.chdir(tmp_path)
        namespace: dict = {}
        exec(compile(snippet.replace("8000", str(port)), "LOADING.md mirror block", "exec"), namespace)  # noqa: S102
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[1].decode()
    assert namespace["mirror"].as_dataset().num_rows == {"train": 20, "validation": 3, "test": 1}
    assert namespace["first"]["identity"].startswith("id0")
    assert "GET /reghead-webdataset-v1-512/checksums.tar.gz" in log and "GET /reghead-webdataset-v1-512/reghead-v1-512-000000.tar" in log


def test_pages_with_python_commands_say_which_python():
    """A `python ...` command fails with the system Python: each page that shows one names the venv's once."""
    for path in [REPO / "README.md", *(DOCS / name for name in OUR_PAGES)]:
        text = path.read_text()
        if re.search(r"^python |`python ", text, re.MULTILINE):
            assert ".venv/bin/python" in text and "source .venv/bin/activate" in text, f"{path.name} does not say which python"
