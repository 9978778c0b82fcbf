"""The command lines speak their own words: converter errors name its options, the sample writer is complete."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from convert.push import CLI_WORDS, in_cli_words, main
from reghead import RegHead, ReleaseError
from reghead_release.sample import write_release_assets, write_sample_release

REPO = Path(__file__).resolve().parent.parent
BUILDER_WORDS = ("data_dir", "verify_checksums", "strict=", "the config '")


def convert_error(capsys, *argv: str) -> str:
    assert main([*argv, "--quiet", "--num-proc=1"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1, error
    for words in BUILDER_WORDS:
        assert words not in error, f"{words!r} is the builder's word, not the converter's: {error}"
    return error


def builder_error(data_dir: Path, config: str = "512", **options) -> ReleaseError:
    with pytest.raises(ReleaseError) as caught:
        RegHead(config_name=config, data_dir=str(data_dir), **options).download_and_prepare()
    return caught.value


def drop_member(release, suffix: str) -> None:
    """Remove one member from the first sample of the first shard; checksums rewritten to match."""
    path = release.shard_paths[0]
    with tarfile.open(path) as archive:
        items = [(m.name, archive.extractfile(m).read()) for m in archive]
    dropped = next(name for name, _ in items if name.endswith(suffix))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in items:
            if name != dropped:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    write_release_assets(release.root, resolution=release.resolution, shard_paths=list(release.shard_paths))


# --- converter errors in the converter's words ----------------------------------------------------


def test_missing_release_folder(tmp_path, capsys):
    error = convert_error(capsys, "--release=512=/nonexistent", f"--output-dir={tmp_path / 'out'}")
    assert error == (
        "error: file '/nonexistent': is not a folder. "
        "Pass --release RES=DIR, DIR being the folder the release was downloaded to\n"
    )
    assert "Pass data_dir= the folder" in str(builder_error(Path("/nonexistent")))


def test_release_of_the_other_resolution(releases, tmp_path, capsys):
    error = convert_error(capsys, f"--release=512={releases[1024].root}", f"--output-dir={tmp_path / 'out'}")
    assert error.endswith(". Use --release 1024=DIR for this folder, or point --release 512=DIR at the 512 release\n")
    assert "Use the config '1024' for this folder, or point data_dir at the 512 release" in str(builder_error(releases[1024].root))


def test_checksum_mismatch(releases, copy_release, tmp_path, capsys):
    root = copy_release(releases[512])
    shard = sorted((root / "data").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    error = convert_error(capsys, f"--release=512={root}", f"--output-dir={tmp_path / 'out'}")
    assert "SHA-256 mismatch" in error and error.endswith("Download the shard again; to read it anyway, pass --no-verify\n")
    assert str(builder_error(root)).endswith("to read it anyway, pass verify_checksums=False")


def test_bad_sample(tmp_path, capsys, caplog):
    release = write_sample_release(tmp_path / "release", num_identities=4, samples_per_shard=2)
    drop_member(release, ".close_m_smile.jpg")
    error = convert_error(capsys, f"--release=512={release.root}", f"--output-dir={tmp_path / 'out'}")
    assert "close_m_smile" in error and error.endswith("to skip such samples instead, run with --lenient\n")
    assert str(builder_error(release.root)).endswith("to skip such samples instead, read with strict=False")
    with caplog.at_level(logging.WARNING, logger="reghead"):
        assert main([f"--release=512={release.root}", f"--output-dir={tmp_path / 'out'}", "--num-proc=1", "--lenient"]) == 0
    # a lenient run summarises what it skipped, with no hint in the builder's words
    (skipped,) = [r.getMessage() for r in caplog.records if "skipped a sample" in r.getMessage()]
    assert "close_m_smile" in skipped and "strict=False" not in skipped


def test_error_keeps_its_facts_with_the_new_hint():
    error = ReleaseError("is bad", file="f.tar", key="k", hint="pass verify_checksums=False")
    reworded = error.with_hint(in_cli_words(error.hint))
    assert (reworded.message, reworded.file, reworded.key, reworded.hint) == ("is bad", "f.tar", "k", "pass --no-verify")
    assert str(reworded) == "file 'f.tar', sample 'k': is bad. pass --no-verify"
    assert in_cli_words(None) is None


def hint_texts() -> list[str]:
    """Every hint the code can give: `hint=` arguments and `*_HINT` constants, f-string fields as 1024."""

    def text(node) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(
                text(part) if isinstance(part, ast.Constant) else "'1024'" if part.conversion == ord("r") else "1024"
                for part in node.values
            )
        return None

    hints = []
    for path in [REPO / "reghead.py", *sorted((REPO / "reghead_release").glob("*.py")), *sorted((REPO / "convert").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "hint":
                hints.append(text(node.value))
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.endswith("_HINT") for t in node.targets):
                hints.append(text(node.value))
    return [hint for hint in hints if hint]


def test_every_hint_in_builder_words_has_converter_words():
    hints = hint_texts()
    assert any("data_dir=" in h for h in hints) and any("verify_checksums=False" in h for h in hints)
    for hint in hints:
        translated = in_cli_words(hint)
        for words in BUILDER_WORDS:
            assert words not in translated, f"CLI_WORDS has no converter words for {hint!r}"
    for builder_words, _ in CLI_WORDS:
        assert any(re.search(builder_words, hint) for hint in hints), f"CLI_WORDS entry {builder_words!r} matches no hint"


# --- the sample release command ----------------------------------------------------------------


@pytest.mark.parametrize("layout", ["readme", "flat"])
def test_sample_command_writes_a_release_the_builder_reads(layout, tmp_path):
    out = tmp_path / "sample"
    run = subprocess.run(
        [sys.executable, "-m", "reghead_release.sample", str(out), "--resolution", "512", "--identities", "6",
         "--samples-per-shard", "4", "--layout", layout],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=True,
    )
    assert run.stdout == f'wrote 6 identities in 2 shards to {out}; read it with RegHead(config_name="512", data_dir={json.dumps(str(out))})\n'
    shards = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tar"))
    prefix = "data/" if layout == "readme" else ""
    assert shards == [f"{prefix}reghead-v1-512-000000.tar", f"{prefix}reghead-v1-512-000001.tar"]
    assert (out / "metadata.tar.gz").is_file() and (out / "checksums.tar.gz").is_file()
    builder = RegHead(config_name="512", data_dir=str(out))
    builder.download_and_prepare()
    assert sum(builder.as_dataset().num_rows.values()) == 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--resolution", "768"], "argument --resolution: invalid choice: 768"),
        (["--layout", "nested"], "argument --layout: invalid choice: 'nested'"),
        (["--identities", "0"], "--identities and --samples-per-shard must be at least 1"),
        (["--images-dir", "/nonexistent"], "--images-dir '/nonexistent': expected a folder of <identity>/<expression>.jpg"),
    ],
)
def test_sample_command_refuses_bad_arguments(argv, message, tmp_path, capsys):
    from reghead_release.sample import main as sample_main

    with pytest.raises(SystemExit) as stopped:
        sample_main([str(tmp_path / "out"), *argv])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sample_command_does_not_write_over_a_folder(tmp_path, capsys):
    from reghead_release.sample import main as sample_main

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        sample_main([str(tmp_path / "out")])
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


# --- the converter's own arguments -------------------------------------------------------------


def test_load_hint_names_a_converted_config(releases, tmp_path, capsys):
    out = tmp_path / "only-1024"
    assert main([f"--release=1024={releases[1024].root}", f"--output-dir={out}", "--num-proc=1"]) == 0
    assert capsys.readouterr().out.endswith(f'Load it: datasets.load_dataset({json.dumps(str(out))}, "1024")\n')


def test_sample_images_must_hold_identity_folders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "nowhere"):
        with pytest.raises(SystemExit) as stopped:
            main([f"--sample-images={folder}", f"--output-dir={tmp_path / 'out'}"])
        assert stopped.value.code == 2
        assert f"--sample-images {str(folder)!r}: expected a folder of <identity>/<expression>.jpg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
