"""Regenerate the generated parts of the docs: the CLI reference's help text and the README's grid image.

    python docs/generate.py           # rewrite the help block of docs/CLI.md and docs/images/grid.png
    python docs/generate.py --check   # exit 1 when docs/CLI.md does not match `convert/push.py --help`

tests/test_docs.py runs the same check.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # convert/ is not installed: run it from the checkout

CLI_DOC = REPO / "docs" / "CLI.md"
GRID_IMAGE = REPO / "docs" / "images" / "grid.png"
HELP_COLUMNS = 100
HELP_BEGIN = "<!-- begin: output of `python convert/push.py --help`, written by docs/generate.py -->"
HELP_END = "<!-- end: output of `python convert/push.py --help` -->"
GRID_IDENTITIES = 4
GRID_THUMB = 128


def cli_help() -> str:
    """`python convert/push.py --help` as printed in a terminal HELP_COLUMNS wide, without colours."""
    from convert.push import parse_args

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_COLUMNS)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            parse_args(["--help"])
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).rstrip() + "\n"


def help_block(doc: str) -> str:
    """The help text as the doc holds it, between the markers."""
    start, end = doc.index(HELP_BEGIN) + len(HELP_BEGIN), doc.index(HELP_END)
    return doc[start:end].strip().removeprefix("```text").removesuffix("```").strip() + "\n"


def with_help(doc: str, text: str) -> str:
    start, end = doc.index(HELP_BEGIN) + len(HELP_BEGIN), doc.index(HELP_END)
    return f"{doc[:start]}\n```text\n{text.rstrip()}\n```\n{doc[end:]}"


def same_text(a: str, b: str) -> bool:
    """Equal but for line wrapping, which argparse changes between Python versions."""
    return a.split() == b.split()


def grid_image(path: Path = GRID_IMAGE) -> Path:
    """The README's picture: the first train identities of the demo release (all 4 styles) x the 10 expressions."""
    from reghead import RegHead, expression_grid
    from reghead_release.sample import write_sample_release

    with tempfile.TemporaryDirectory() as tmp:
        release = write_sample_release(Path(tmp) / "release", resolution=512, num_identities=8)
        stream = RegHead(config_name="512", data_dir=str(release.root)).as_streaming_dataset(split="train")
        rows = list(stream.take(GRID_IDENTITIES))
    path.parent.mkdir(parents=True, exist_ok=True)
    expression_grid(rows, thumb=GRID_THUMB).save(path, format="PNG", optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check docs/CLI.md against the converter's --help")
    args = parser.parse_args(argv)
    doc, text = CLI_DOC.read_text(), cli_help()
    if args.check:
        if same_text(help_block(doc), text):
            return 0
        print(f"{CLI_DOC} is out of date: run `python docs/generate.py`", file=sys.stderr)
        return 1
    CLI_DOC.write_text(with_help(doc, text))
    print(f"wrote {CLI_DOC.relative_to(REPO)} and {grid_image().relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
