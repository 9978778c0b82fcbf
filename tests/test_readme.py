"""The README's commands are the ones CI runs."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci_lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(ci_lines) == 1
    assert ci_lines[0] in readme.splitlines()


def test_readme_main_job_runs_the_converter_demo():
    readme = (REPO / "README.md").read_text().splitlines()
    assert "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/python convert/push.py" in readme
