"""examples/quickstart.ipynb, run end to end by a real Jupyter kernel: on the demo it converts, and from the Hub.

The kernel is a separate process: it gets its settings through its environment only. A
`sitecustomize` on its PYTHONPATH refuses (and logs) name lookups of hosts other than loopback,
in the kernel and in every Python process it starts (the converter, DataLoader workers).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ALICE_TOKEN
from convert.push import main as convert_main
from convert.upload import push_folder

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"
KERNEL_NAME = "reghead-test"
CELL_TIMEOUT = 120

LOOPBACK_GUARD = '''
import os
import socket

_real_getaddrinfo = socket.getaddrinfo


def _loopback_only(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if name not in (None, "", "127.0.0.1", "localhost", "::1"):
        with open(os.environ["REGHEAD_BLOCKED_HOSTS"], "a") as log:
            log.write(f"{name}\\n")
        raise socket.gaierror(socket.EAI_NONAME, f"network disabled in the notebook test: {name}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_only
'''


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in code_cells(notebook):
        assert cell.outputs == [] and cell.execution_count is None, f"outputs left in cell {cell.id}: clear them"
    parameters = code_cells(notebook)[0]
    assert "parameters" in parameters.metadata.get("tags", [])
    assert any(line.startswith("REPO_ID = None") for line in parameters.source.splitlines())  # as it is: the demo


@pytest.fixture
def kernel_home(tmp_path, monkeypatch):
    """Where the kernel's interpreter, imports, caches and name-lookup log are set up."""
    home = tmp_path / "kernel"
    # This interpreter as the kernel, whatever kernels the machine has.
    spec = home / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL_NAME, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(home / "jupyter"))
    # The project as installed: its two modules, not the checkout (convert/ is not installed).
    site = home / "site"
    site.mkdir()
    (site / "reghead.py").symlink_to(REPO / "reghead.py")
    (site / "reghead_release").symlink_to(REPO / "reghead_release")
    (site / "sitecustomize.py").write_text(LOOPBACK_GUARD)
    return home


def run_notebook(home: Path, *, cwd: Path, parameters: str, env: dict[str, str]) -> list[str]:
    """Execute the notebook with its first code cell replaced; returns the hosts refused to the kernel."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells(notebook)[0].source = parameters
    blocked = home / "blocked-hosts.txt"
    blocked.touch()
    hf_home = home / "hf"
    kernel_env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    kernel_env.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(home / "site"), os.environ.get("PYTHONPATH")])),
            "REGHEAD_BLOCKED_HOSTS": str(blocked),
            "IPYTHONDIR": str(home / "ipython"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "MPLBACKEND": "agg",
            "HF_HOME": str(hf_home),
            "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_DATASETS_CACHE": str(hf_home / "datasets"),
            "HF_XET_CACHE": str(hf_home / "xet"),
            "HF_TOKEN_PATH": str(hf_home / "token"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_UPDATE_DOWNLOAD_COUNTS": "0",
            **env,
        }
    )
    client = NotebookClient(notebook, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT, allow_errors=False)
    client.execute(cwd=str(cwd), env=kernel_env)  # raises CellExecutionError if any cell raises
    return blocked.read_text().split()


def test_notebook_converts_the_demo_and_reads_it_from_disk(kernel_home, tmp_path):
    data_dir = tmp_path / "demo"
    parameters = f"REPO_ID = None\nDATA_DIR = {str(data_dir)!r}\nCHECKOUT = None\n"
    # Started where Jupyter starts it, in the notebook's folder: the checkout is found from there.
    blocked = run_notebook(kernel_home, cwd=NOTEBOOK.parent, parameters=parameters, env={})
    assert (data_dir / "README.md").is_file() and sorted(p.name for p in (data_dir / "512").glob("train-*.parquet"))
    assert not (data_dir / ".reghead-work").exists()
    assert blocked == []


@pytest.fixture
def converted_512(releases, tmp_path):
    out = tmp_path / "converted"
    assert convert_main([f"--release=512={releases[512].root}", f"--output-dir={out}", "--num-proc=1", "--quiet"]) == 0
    return out


def test_notebook_reads_a_hub_repo_from_any_folder(kernel_home, hub, converted_512, tmp_path):
    push_folder(converted_512, repo_id="alice/reghead", token=ALICE_TOKEN)
    anywhere = tmp_path / "anywhere"
    anywhere.mkdir()
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"}
    parameters = "REPO_ID = 'alice/reghead'\nDATA_DIR = None\nCHECKOUT = None\n"
    blocked = run_notebook(kernel_home, cwd=anywhere, parameters=parameters, env=env)
    assert list(anywhere.iterdir()) == []  # nothing converted, nothing written where it ran
    assert hub.count("GET", "/datasets/alice/reghead/resolve/") > 0  # the data came from the Hub
    # datasets asks the dataset viewer, at `datasets-server.` + the endpoint's host, for exported infos
    # (there is no setting to stop it); refused here, it uses the card's. Nothing else leaves loopback.
    assert set(blocked) <= {"datasets-server.127.0.0.1"}, blocked
