"""The README's commands are the ones CI runs, and the ones it shows run as written."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from convert.push import DEFAULT_OUTPUT

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SAMPLE_COMMAND = "python -m reghead_release.sample "


def readme_block(language: str, containing: str) -> str:
    (block,) = [body for lang, body in FENCE.findall((REPO / "README.md").read_text()) if lang == language and containing in body]
    return block


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci_lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(ci_lines) == 1
    assert ci_lines[0] in readme.splitlines()


def test_readme_main_job_runs_the_converter_demo():
    readme = (REPO / "README.md").read_text().splitlines()
    assert "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/python convert/push.py" in readme


def test_readme_sample_release_commands_make_releases_the_builder_reads(tmp_path, monkeypatch):
    """Both layouts, written by the README's commands and read by its snippet, in a folder of their own."""
    commands = [shlex.split(line.partition("#")[0]) for line in readme_block("bash", SAMPLE_COMMAND).strip().splitlines()]
    assert [c[c.index("--layout") + 1] if "--layout" in c else "readme" for c in commands] == ["readme", "flat"]
    for command in commands:
        assert command[:3] == ["python", "-m", "reghead_release.sample"]
        env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert (tmp_path / "sample-512" / "data").is_dir() and not (tmp_path / "sample-512-flat" / "data").exists()
    snippet = readme_block("python", 'data_dir=folder')
    monkeypatch.chdir(tmp_path)
    printed = []
    exec(compile(snippet, "README sample-release block", "exec"), {"print": lambda *a: printed.append(a)})  # noqa: S102
    expected = re.search(r"# (\{.*\})$", snippet, re.MULTILINE)[1]
    assert [(folder, rows) for folder, rows in printed] == [(f, json.loads(expected.replace("'", '"'))) for f in ("sample-512", "sample-512-flat")]


def test_default_output_is_not_the_checkout_name():
    """The demo's folder is never `reghead`, the checkout's name: from the folder above the checkout,
    load_dataset("reghead") would find the checkout (its reghead.py) instead of the data."""
    assert DEFAULT_OUTPUT != REPO.name and DEFAULT_OUTPUT != "reghead"
    readme = (REPO / "README.md").read_text()
    assert f"`./{DEFAULT_OUTPUT}`" in readme and f'load_dataset("{DEFAULT_OUTPUT}", "512")' in readme
    assert f"/{DEFAULT_OUTPUT}/" in (REPO / ".gitignore").read_text().splitlines()
    assert f'find_checkout() / \\"{DEFAULT_OUTPUT}\\"' in (REPO / "examples" / "quickstart.ipynb").read_text()
    old_name = re.compile(r"""\./reghead\b(?!-)|["']reghead["']|["']reghead/|vocabulary\.py reghead\b(?!-)""")
    for path in [REPO / "README.md", *(REPO / "docs").glob("*.md"), REPO / "examples" / "quickstart.ipynb", REPO / "examples" / "vocabulary.py"]:
        text = path.read_text()
        assert not old_name.search(text), f"{path.name} still names the demo folder `reghead`: {old_name.search(text)[0]!r}"


def test_readme_says_which_python_runs_the_commands():
    readme = (REPO / "README.md").read_text()
    install = readme.index(".venv/bin/pip install -q .")
    note = readme.index("use the venv's Python, `.venv/bin/python`, or activate the venv")
    assert install < note < readme.index("python -m reghead_release.sample") < readme.index("python convert/push.py --release")
