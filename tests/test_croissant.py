"""croissant.json: validated by the real `mlcroissant`, read row for row, checked by SHA-256, pushed with the card."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import mlcroissant as mlc
import pytest
from huggingface_hub import HfApi

from conftest import ALICE_TOKEN
from convert import conversion
from convert.push import main
from convert.upload import push_folder
from reghead import EXPRESSIONS, FEATURES
from reghead_release.sample import identity_name, write_sample_release
from test_card import blocks, section

RAW_IMAGES = datasets.Features({**FEATURES, **{e: datasets.Image(decode=False) for e in EXPRESSIONS}})
TEXT_COLUMNS = ("sample_key", "identity", "animal", "style", "feature", "sample_json")
RAI = (
    "dataCollection", "dataCollectionType", "dataPreprocessingProtocol", "dataBiases", "dataLimitations",
    "dataUseCases", "dataSocialImpact", "personalSensitiveInformation", "dataReleaseMaintenancePlan",
)  # fmt: skip
# Quotes, apostrophes, dots, non-ASCII letters, and a name the parser cannot split (null attributes).
AWKWARD = [
    "id000_Przewalski's_Horse_Photorealistic_round_eyes_a_\"lucky\"_hat",
    "id001_Café_Crème_Owl_Plastic_Toy_Render_fluffy_cheeks_an_über_crown",
    "id002_St._Bernard_Video_Game_NPC_Style_round_eyes_a_wreath_a_pirate_hat",
    "id003_日本_Crane_Computer_Animated_Film-Style_3D_bushy_eyebrows_a_scarf",
    "Not-An-Identity",
    *(identity_name(i) for i in range(5, 12)),
]
REPO_ID = "alice/reghead"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo, as `python convert/push.py --output-dir OUT` writes it: both configs of the sample release."""
    out = tmp_path_factory.mktemp("croissant") / "demo"
    assert main([f"--output-dir={out}", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def awkward(tmp_path_factory) -> Path:
    """One resolution only (`--release 512=DIR`) of a release with awkward identity names."""
    root = tmp_path_factory.mktemp("awkward")
    release = write_sample_release(root / "release", identities=AWKWARD, samples_per_shard=5)
    assert main([f"--release=512={release.root}", f"--output-dir={root / 'out'}", "--quiet", "--num-proc=1"]) == 0
    return root / "out"


def croissant(folder: Path) -> dict:
    return json.loads((folder / "croissant.json").read_text())


def mlcroissant_validate(path: Path) -> subprocess.CompletedProcess:
    """The real `mlcroissant validate --jsonld PATH` (the command the venv installs)."""
    command = Path(sys.executable).parent / "mlcroissant"
    return subprocess.run([str(command), "validate", "--jsonld", str(path)], capture_output=True, text=True)


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def records_by_key(folder: Path, config: str) -> dict[str, dict]:
    """mlcroissant's records of a config, by sample key, with the field names of the columns."""
    dataset = mlc.Dataset(jsonld=folder / "croissant.json")
    rows = [{name.split("/", 1)[1]: value for name, value in record.items()} for record in dataset.records(config)]
    by_key = {text(row["sample_key"]): row for row in rows}
    assert len(by_key) == len(rows)
    return by_key


@pytest.mark.parametrize("output", ["demo", "awkward"])
def test_mlcroissant_validate_passes_without_a_warning(output, request):
    folder = request.getfixturevalue(output)
    validated = mlcroissant_validate(folder / "croissant.json")
    assert validated.returncode == 0, validated.stderr
    # absl's log lines start with their level: I(nfo), W(arning), E(rror), F(atal).
    assert [line for line in validated.stderr.splitlines() if line.startswith(("W", "E", "F"))] == []
    assert "Done." in validated.stderr


@pytest.mark.parametrize("output", ["demo", "awkward"])
def test_the_metadata_names_the_dataset_its_files_and_the_responsible_ai_fields(output, request, caplog):
    folder = request.getfixturevalue(output)
    with caplog.at_level(logging.WARNING):
        metadata = mlc.Dataset(jsonld=folder / "croissant.json").metadata
    assert caplog.records == [] and metadata.ctx.issues.warnings == set()
    assert metadata.conforms_to == ["http://mlcommons.org/croissant/1.1", "http://mlcommons.org/croissant/RAI/1.0"]
    assert metadata.name == "RegHead" and metadata.version == "1.0.0" and metadata.url == "https://github.com/snap-research/RegHead"
    assert metadata.cite_as.startswith("@inproceedings{reghead2026,") and metadata.date_published.year == 2026
    assert [creator.name for creator in metadata.creators] == ["Snap Research"]
    assert [(lic.name, lic.url) for lic in metadata.license] == [
        ("Snap Inc. Non-Commercial License (research purposes only)", "https://github.com/snap-research/RegHead/blob/main/LICENSE")
    ]
    record = json.loads((folder / conversion.PUBLISHED_RECORD).read_text())
    assert "croissant.json" in record["made"]
    published = {config["config"]: config for config in record["configs"]}
    assert [record_set.id for record_set in metadata.record_sets] == sorted(published, key=int)
    for file_object in metadata.file_objects:
        assert file_object.content_url == file_object.id and file_object.encoding_formats == ["application/x-parquet"]
        assert file_object.sha256 == hashlib.sha256((folder / file_object.content_url).read_bytes()).hexdigest()
    assert sorted(f.id for f in metadata.file_objects) == sorted(n for c in published.values() for s in c["files"].values() for n in s)
    for file_set in metadata.file_sets:
        config = file_set.id.removeprefix("parquet-files-")
        assert file_set.includes == [name for split in ("train", "validation", "test") for name in published[config]["files"][split]]
    jsonld = croissant(folder)
    for name in RAI:
        assert jsonld[f"rai:{name}"], name
    identities = sum(split["rows"] for split in published["512"]["stats"].values())
    rows = {split: stats["rows"] for split, stats in published["512"]["stats"].items()}
    assert f"512: {rows['train']} train, {rows['validation']} validation, {rows['test']} test" in jsonld["rai:dataPreprocessingProtocol"][2]
    styles = Counter()
    for stats in published["512"]["stats"].values():
        styles.update(stats["attributes"]["style"])
    for style, count in styles.items():
        assert f"{style} {count:,} ({count / identities:.0%})" in jsonld["rai:dataBiases"][0]
    assert f"holds {identities:,} identities ({identities * 10:,} images)" in jsonld["description"]
    assert "gpt-image-1" in jsonld["rai:dataCollection"] and "Qwen-Image" in jsonld["rai:dataCollection"]


@pytest.mark.parametrize(("output", "config"), [("demo", "512"), ("demo", "1024"), ("awkward", "512")])
def test_records_are_the_rows_load_dataset_reads(output, config, request):
    folder = request.getfixturevalue(output)
    records = records_by_key(folder, config)
    loaded = datasets.load_dataset(str(folder), config).cast(RAW_IMAGES)
    rows = {row["sample_key"]: (split, row) for split in loaded for row in loaded[split]}
    assert sorted(records) == sorted(rows) and len(rows) == sum(loaded.num_rows.values())
    for key, (split, row) in rows.items():
        record = records[key]
        assert text(record["split"]) == split
        assert {name: text(record[name]) for name in TEXT_COLUMNS} == {name: row[name] for name in TEXT_COLUMNS}
        assert (None if record["identity_index"] is None else int(record["identity_index"])) == row["identity_index"]
        assert [text(value) for value in record["accessories"]] == row["accessories"]
        for expression in EXPRESSIONS:
            image = record[expression]
            assert image.format == "JPEG" and image.size == (int(config), int(config))
            # mlcroissant opens the image on the column's bytes, which PIL keeps until it decodes.
            assert image.fp.getvalue() == row[expression]["bytes"]
    one = next(iter(records.values()))[EXPRESSIONS[-1]]
    one.load()
    assert one.mode == "RGB" and one.getbbox() is not None


def test_mlcroissants_split_filter_reads_that_split_alone(demo):
    dataset = mlc.Dataset(jsonld=demo / "croissant.json")
    for split in ("train", "validation", "test"):
        keys = sorted(text(record["1024/sample_key"]) for record in dataset.records("1024", filters={"1024/split": split}))
        assert keys == sorted(datasets.load_dataset(str(demo), "1024", split=split)["sample_key"])


def test_awkward_names_come_back_exactly(awkward):
    records = records_by_key(awkward, "512")
    identities = {text(record["identity"]): record for record in records.values()}
    assert sorted(identities) == sorted(AWKWARD)
    horse = identities[AWKWARD[0]]
    assert text(horse["animal"]) == "Przewalski's Horse" and [text(a) for a in horse["accessories"]] == ['a "lucky" hat']
    assert text(identities[AWKWARD[1]]["animal"]) == "Café Crème Owl"
    assert text(identities[AWKWARD[3]]["animal"]) == "日本 Crane"
    unparsed = identities["Not-An-Identity"]
    assert (unparsed["identity_index"], unparsed["animal"], unparsed["style"], unparsed["feature"]) == (None, None, None, None)


def with_file_checks(folder: Path) -> Path:
    """croissant.json plus, beside it, a record set reading each FileObject (`check-<n>`, in order):
    mlcroissant checks a FileObject's SHA-256 when a record set reads it (the configs' record sets
    read their FileSets)."""
    jsonld = croissant(folder)
    files = [entry["@id"] for entry in jsonld["distribution"] if entry["@type"] == "cr:FileObject"]
    checks = [
        {
            "@type": "cr:RecordSet",
            "@id": f"check-{number}",
            "field": [
                {
                    "@type": "cr:Field",
                    "@id": f"check-{number}/sample_key",
                    "dataType": "sc:Text",
                    "source": {"fileObject": {"@id": file_id}, "extract": {"column": "sample_key"}},
                }
            ],
        }
        for number, file_id in enumerate(files)
    ]
    path = folder / "croissant-checks.json"
    path.write_text(json.dumps({**jsonld, "recordSet": [*jsonld["recordSet"], *checks]}))
    return path


def test_a_changed_parquet_file_fails_its_sha256(demo, tmp_path):
    folder = Path(shutil.copytree(demo, tmp_path / "copy"))
    files = [entry for entry in croissant(folder)["distribution"] if entry["@type"] == "cr:FileObject"]
    path = with_file_checks(folder)
    dataset = mlc.Dataset(jsonld=path)
    keys = [text(record[f"check-{number}/sample_key"]) for number in range(len(files)) for record in dataset.records(f"check-{number}")]
    assert sorted(keys) == sorted(key for config in ("512", "1024") for key in records_by_key(folder, config))

    changed = files[len(files) // 2]
    data = bytearray((folder / changed["@id"]).read_bytes())
    data[len(data) // 2] ^= 1  # one bit of an image
    (folder / changed["@id"]).write_bytes(bytes(data))
    dataset = mlc.Dataset(jsonld=path)
    for number, entry in enumerate(files):
        if entry is not changed:
            assert list(dataset.records(f"check-{number}"))
    with pytest.raises(mlc.GenerationError) as error:
        list(dataset.records(f"check-{files.index(changed)}"))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    assert str(error.value.__cause__) == (
        f"Hash of downloaded file {folder / changed['@id']} is not identical with the reference in the Croissant JSON-LD."
        f" Expected: {changed['sha256']} - Got: {actual} (hex) / {base64.b64encode(bytes.fromhex(actual)).decode()} (base64)"
    )


def test_the_cards_mlcroissant_snippet_runs_where_the_converter_ran(demo):
    card = (demo / "README.md").read_text()
    assert "[`croissant.json`](croissant.json)" in card and "lacks these fields" in card
    (snippet,) = blocks(section(card, "Croissant"), "python")
    assert f'mlc.Dataset(jsonld="{demo}/croissant.json")' in snippet
    namespace: dict = {}
    exec(compile(snippet, "card croissant block", "exec"), namespace)  # noqa: S102 - our own card
    assert sum(1 for _ in namespace["records"]) == 24
    rai = section(card, "Responsible AI")
    assert "- **Data collection**: Synthetic: every image was generated by models" in rai
    assert "- **Personal sensitive information**:" in rai


def test_pushed_with_the_card_in_its_last_commit_with_hub_urls(hub, releases, tmp_path):
    out = tmp_path / "out"
    argv = [f"--release=512={releases[512].root}", f"--output-dir={out}", f"--repo-id={REPO_ID}", f"--token={ALICE_TOKEN}"]
    assert main([*argv, "--revision=v1", "--num-proc=1", "--quiet"]) == 0
    api = HfApi(token=ALICE_TOKEN)
    commits = api.list_repo_commits(REPO_ID, repo_type="dataset", revision="v1")
    last, before = (set(api.list_repo_files(REPO_ID, repo_type="dataset", revision=c.commit_id)) for c in commits[:2])
    assert {"croissant.json", "README.md", "images/preview.png"} <= last - before
    jsonld = json.loads(hub.read(REPO_ID, "croissant.json", revision="v1"))
    assert jsonld == croissant(out) and jsonld["url"] == f"{hub.url}/datasets/{REPO_ID}"
    files = [entry for entry in jsonld["distribution"] if entry["@type"] == "cr:FileObject"]
    assert files and {entry["@id"] for entry in files} == {name for name in last if name.endswith(".parquet")}
    for entry in files:
        assert entry["contentUrl"] == f"{hub.url}/datasets/{REPO_ID}/resolve/v1/{entry['@id']}"
        assert hashlib.sha256(hub.read(REPO_ID, entry["@id"], revision="v1")).hexdigest() == entry["sha256"]

    # The card's snippet downloads croissant.json and the files of the config, then mlcroissant
    # reads them. (Its snippets read the main branch: here, the branch pushed to.)
    card = hub.read(REPO_ID, "README.md", revision="v1").decode()
    (snippet,) = blocks(section(card, "Croissant"), "python")
    assert 'snapshot_download("alice/reghead", repo_type="dataset", allow_patterns=["croissant.json", "512/*"])' in snippet
    snippet = snippet.replace('repo_type="dataset",', 'repo_type="dataset", revision="v1",')
    namespace: dict = {}
    exec(compile(snippet, "card croissant block", "exec"), namespace)  # noqa: S102 - our own card
    assert sorted(text(record["512/sample_key"]) for record in namespace["records"]) == sorted(releases[512].keys)
    assert hub.blocked_hosts == []


def test_a_kept_config_of_an_older_record_gets_its_hashes_from_the_files(tmp_path):
    release = {res: write_sample_release(tmp_path / str(res), resolution=res, num_identities=4) for res in (512, 1024)}
    out = tmp_path / "out"
    assert main([*(f"--release={r}={release[r].root}" for r in release), f"--output-dir={out}", "--quiet", "--num-proc=1"]) == 0
    path = out / conversion.PUBLISHED_RECORD
    record = json.loads(path.read_text())
    for config in record["configs"]:
        del config["sha256"]  # as a version before croissant.json wrote it
    path.write_text(json.dumps(record))
    assert main([f"--release=512={release[512].root}", f"--output-dir={out}", "--quiet", "--num-proc=1"]) == 0
    files = [entry for entry in croissant(out)["distribution"] if entry["@type"] == "cr:FileObject"]
    assert any(entry["@id"].startswith("1024/") for entry in files)
    for entry in files:
        assert entry["sha256"] == hashlib.sha256((out / entry["@id"]).read_bytes()).hexdigest()


def test_a_push_of_a_folder_without_croissant_json_deletes_the_hubs(hub, demo, tmp_path):
    """A folder converted by a version without croissant.json, pushed over a newer push: the Hub's goes."""
    folder = Path(shutil.copytree(demo, tmp_path / "older"))
    push_folder(folder, repo_id=REPO_ID, token=ALICE_TOKEN)
    (folder / "croissant.json").unlink()
    assert push_folder(folder, repo_id=REPO_ID, token=ALICE_TOKEN).deleted == ["croissant.json"]
    assert "croissant.json" not in HfApi(token=ALICE_TOKEN).list_repo_files(REPO_ID, repo_type="dataset")
