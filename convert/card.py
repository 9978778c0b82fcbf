"""The dataset card: `dataset_card/README.md` rendered with numbers computed from the converted data.

The YAML front matter (configs with data files per split, `dataset_info` with features and split
sizes, license, optional gating) is produced with `datasets`' and `huggingface_hub`'s own card
classes, so it is what the Hub and `load_dataset` expect. The preview grid is drawn from the
first rows of the converted parquet and stored beside the card, and so is `croissant.json`
(convert/croissant.py). The card's Responsible-AI section and croissant.json's `rai:` fields are
the same texts, `dataset_card/responsible_ai.yaml` with the counts filled in.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from string import Template

import pyarrow.parquet as pq
import yaml
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

import reghead
from reghead_release.grid import expression_grid
from reghead_release.schema import EXPRESSION_DESCRIPTIONS, EXPRESSIONS, FEATURES, SPLITS, release_tag

from .conversion import CARD_PATH, UNPARSED, ConfigResult, SplitStats
from .croissant import CROISSANT_PATH, croissant_bytes, croissant_metadata

CARD_DIR = Path(__file__).resolve().parent.parent / "dataset_card"
TEMPLATE = CARD_DIR / "README.md"
GATED = CARD_DIR / "gated.yaml"
FACTS = CARD_DIR / "responsible_ai.yaml"
PREVIEW_PATH = "images/preview.png"
# What `write_card` writes, in this order: the card last, since its presence means the folder is complete.
CARD_FILES = (PREVIEW_PATH, CROISSANT_PATH, CARD_PATH)
PREVIEW_IDENTITIES = 4
TOP_VALUES = 10
DEFAULT_CONFIG = "512"
LICENSE_NAME = "snap-inc-non-commercial"


def front_matter(results: list[ConfigResult], *, gated: bool) -> str:
    """The card's YAML: license, configs (512 the default) and dataset_info per config."""
    data = DatasetCardData(
        pretty_name="RegHead",
        license="other",
        license_name=LICENSE_NAME,
        license_link=reghead._LICENSE_URL,
        task_categories=["image-to-image"],
        tags=["animals", "faces", "facial-expressions", "blendshapes", "synthetic"],
        size_categories=[_size_category(sum(r.stats[s].rows for r in results for s in SPLITS))],
    )
    configs = {}
    infos = {}
    for result in results:
        splits = result.splits()
        configs[result.config] = {
            # Exact files, never a glob: files beside the card that it does not name are never read.
            "data_files": [{"split": split, "path": result.files[split]} for split in splits],
            **({"default": True} if result.config == DEFAULT_CONFIG else {}),
        }
        split_dict = SplitDict(
            {
                split: SplitInfo(name=split, num_bytes=result.stats[split].image_bytes, num_examples=result.stats[split].rows)
                for split in splits
            }
        )
        infos[result.config] = DatasetInfo(
            features=FEATURES,
            splits=split_dict,
            download_size=sum(result.num_bytes[split] for split in splits),
            dataset_size=sum(result.stats[split].image_bytes for split in splits),
        )
    MetadataConfigs(configs).to_dataset_card_data(data)
    DatasetInfosDict(infos).to_dataset_card_data(data)
    if gated:
        for key, value in yaml.safe_load(GATED.read_text()).items():
            data[key] = value
    return data.to_yaml()


def _size_category(rows: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < bound:
            return name
    return "1M<n<10M"


def _human(num_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if num_bytes < 1024 or unit == "TiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def _split_table(results: list[ConfigResult]) -> str:
    lines = []
    for result in results:
        for split in result.splits():
            lines.append(
                f"| `{result.config}` | {result.config}x{result.config} | {split} | {result.stats[split].rows:,} "
                f"| {len(result.files[split])} | {_human(result.num_bytes[split])} |"
            )
    return "\n".join(lines)


def _by_count(counts) -> list[tuple[str, int]]:
    """(value, count), the most frequent first, ties by value."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _attribute_tables(stats: SplitStats) -> str:
    tables = []
    for name, counts in stats.attributes.items():
        top = _by_count(counts)[:TOP_VALUES]
        rows = "\n".join(f"| {value} | {count:,} |" for value, count in top)
        tables.append(f"Top {name} ({len(counts)} distinct):\n\n| {name} | identities |\n| --- | ---: |\n{rows}")
    return "\n\n".join(tables)


def preview_grid_png(result: ConfigResult, out_dir: Path) -> bytes:
    """A grid of the first identities of the config's first split x the 10 expressions, as PNG."""
    first_file = out_dir / result.files[result.splits()[0]][0]
    batch = next(pq.ParquetFile(first_file).iter_batches(batch_size=PREVIEW_IDENTITIES))
    image = expression_grid(batch.to_pylist(), thumb=128)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # optimize=True took longer (0.7 s) than all the rest, for 2% fewer bytes
    return buffer.getvalue()


def _main_result(results: list[ConfigResult]) -> ConfigResult:
    """The config the card's snippets and statistics use: 512 when converted, else the one there is."""
    return next((r for r in results if r.config == DEFAULT_CONFIG), results[0])


def _python_str(text: str) -> str:
    return json.dumps(text)  # a double-quoted literal that Python reads back as `text`


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def snippet_values(results: list[ConfigResult], *, repo_id: str | None, folder: str) -> dict[str, str]:
    """What the card's Load section names: exactly the converted configs and splits, read from the
    Hub repo when there is one, else from the output folder as it was given to the converter."""
    main = _main_result(results)
    splits = main.splits()
    others = [r for r in results if r is not main]
    source = repo_id or folder
    files = f"hf://datasets/{repo_id}/{main.config}" if repo_id else f"{folder.rstrip('/')}/{main.config}"
    other_config_line = "".join(
        f'{r.splits()[-1]}_{r.config} = load_dataset({_python_str(source)}, "{r.config}", split="{r.splits()[-1]}")\n'
        for r in others
    )
    return {
        "source": _python_str(source),
        "source_note": (
            f"From the Hub repo `{repo_id}`:"
            if repo_id
            else f"From the folder `{folder}`, as `convert/push.py` wrote it (the path is the one it was given, "
            "so the snippets run where it ran); pushed to the Hub, a repo id takes its place:"
        ),
        "main_config": main.config,
        "split_list": " / ".join(splits),
        "first_split": splits[0],
        "other_config_line": other_config_line,
        "files_where": "the Hub" if repo_id else "the folder",
        "sql_files": _sql_str(f"{files}/*.parquet"),
        "polars_files": _python_str(f"{files}/{splits[0]}-*.parquet"),
        **croissant_snippet_values(main.config, repo_id=repo_id, folder=folder),
    }


def croissant_snippet_values(config: str, *, repo_id: str | None, folder: str) -> dict[str, str]:
    """The card's mlcroissant snippet: croissant.json where the converter ran, or a download of the repo's.

    mlcroissant reads the record sets from the folder that holds croissant.json, so from a repo
    it reads a download of croissant.json and the files of `config`.
    """
    if repo_id is None:
        return {"croissant_fetch": "", "croissant_jsonld": _python_str(f"{folder.rstrip('/')}/{CROISSANT_PATH}")}
    fetch = (
        "from huggingface_hub import snapshot_download\n\n"
        f"folder = snapshot_download({_python_str(repo_id)}, repo_type=\"dataset\","
        f" allow_patterns=[{_python_str(CROISSANT_PATH)}, {_python_str(config + '/*')}])"
    )
    return {"croissant_fetch": fetch, "croissant_jsonld": f'f"{{folder}}/{CROISSANT_PATH}"'}


def config_stats(result: ConfigResult) -> SplitStats:
    """A config's statistics, all splits together."""
    stats = SplitStats()
    for split in SPLITS:
        stats.merge(result.stats[split])
    return stats


def dataset_facts(results: list[ConfigResult]) -> dict:
    """`responsible_ai.yaml` with its ${...} filled in: counts of the converted data, the project's constants."""
    main = _main_result(results)
    stats = config_stats(main)
    values = {
        "release_tags": ", ".join(release_tag(int(result.config)) for result in results),
        "homepage": reghead._HOMEPAGE,
        "license": reghead._LICENSE,
        "stats_config": main.config,
        "split_counts": "; ".join(
            f"{result.config}: " + ", ".join(f"{result.stats[split].rows:,} {split}" for split in SPLITS)
            for result in results
        ),
        "style_counts": ", ".join(
            f"{style} {count:,} ({count / stats.rows:.0%})" for style, count in _by_count(stats.attributes["style"])
        ),
        "distinct_counts": ", ".join(
            f"{name} {len(set(counts) - {UNPARSED}):,}" for name, counts in stats.attributes.items()
        ),
    }
    return _filled(yaml.safe_load(FACTS.read_text()), values)


def _filled(value, values: dict[str, str]):
    if isinstance(value, dict):
        return {key: _filled(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, values) for item in value]
    return Template(value).substitute(values)


def _responsible_ai_section(rai: dict) -> str:
    """The `rai:` properties as a list, each titled by its name (`dataCollection` -> Data collection)."""
    lines = []
    for name, value in rai.items():
        title = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).capitalize()
        if isinstance(value, str):
            lines.append(f"- **{title}**: {value}")
        else:
            lines += [f"- **{title}**:", *(f"  - {item}" for item in value)]
    return "\n".join(lines)


def _holder(repo_id: str | None) -> str:
    return "This repository" if repo_id else "This folder"


def _holdings(results: list[ConfigResult], *, repo_id: str | None, quote: str) -> str:
    """`This folder holds N identities (M images) in 2 configs, 512 and 1024`, config names in `quote`s."""
    identities = max(sum(r.stats[s].rows for s in SPLITS) for r in results)
    configs = [f"{quote}{r.config}{quote}" for r in results]
    phrase = f"one config, {configs[0]}" if len(configs) == 1 else f"{len(configs)} configs, {' and '.join(configs)}"
    return f"{_holder(repo_id)} holds {identities:,} identities ({identities * len(EXPRESSIONS):,} images) in {phrase}"


def dataset_description(results: list[ConfigResult], *, repo_id: str | None) -> str:
    """The dataset's description (reghead's), then what this folder or repo holds: croissant.json's `description`."""
    return " ".join(reghead._DESCRIPTION.split()) + " " + _holdings(results, repo_id=repo_id, quote="") + "."


def render_card(results: list[ConfigResult], *, repo_id: str | None, folder: str, gated: bool = False) -> str:
    """The card's text for the converted configs: the Hub repo's card with a `repo_id`, else the folder's."""
    main = _main_result(results)
    card = Template(TEMPLATE.read_text()).substitute(
        front_matter=front_matter(results, gated=gated).strip(),
        preview_alt=f"{PREVIEW_IDENTITIES} identities x the 10 expressions",
        preview_path=PREVIEW_PATH,
        holdings=_holdings(results, repo_id=repo_id, quote="`"),
        split_table=_split_table(results),
        expression_table="\n".join(f"| `{e}` | {EXPRESSION_DESCRIPTIONS[e]} |" for e in EXPRESSIONS),
        stats_config=main.config,
        attribute_tables=_attribute_tables(config_stats(main)),
        responsible_ai=_responsible_ai_section(dataset_facts(results)["rai"]),
        holder_lower=_holder(repo_id).lower(),
        croissant_path=CROISSANT_PATH,
        **snippet_values(results, repo_id=repo_id, folder=folder),
        license_text=(
            f"{reghead._LICENSE}: the images and metadata may be used for non-commercial research only. "
            f"Read the full terms at {reghead._LICENSE_URL} before use."
        ),
        citation=reghead._CITATION.strip(),
    )
    DatasetCard(card)  # parses the front matter the way the Hub client does: fails here, not on the Hub
    return card


def write_card(
    results: list[ConfigResult], out_dir: Path, *, repo_id: str | None, revision: str | None = None, gated: bool = False
) -> Path:
    """Write the preview image and croissant.json, then the card (`CARD_FILES`), each in one rename.

    Without a `repo_id`, the card's snippets read `out_dir` by the path it was given and
    croissant.json names the files by their paths in it; with one, croissant.json gives their
    URLs on the Hub at `revision` (default: main).
    """
    preview = out_dir / PREVIEW_PATH
    preview.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(preview, preview_grid_png(_main_result(results), out_dir))
    croissant = croissant_metadata(
        results,
        description=dataset_description(results, repo_id=repo_id),
        facts=dataset_facts(results),
        repo_id=repo_id,
        revision=revision,
    )
    _write_atomically(out_dir / CROISSANT_PATH, croissant_bytes(croissant))
    path = out_dir / CARD_PATH
    card = render_card(results, repo_id=repo_id, folder=out_dir.as_posix(), gated=gated)
    _write_atomically(path, card.encode("utf-8"))
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)

