"""The dataset card: `dataset_card/README.md` rendered with numbers computed from the converted data.

The YAML front matter (configs with data files per split, `dataset_info` with features and split
sizes, license, optional gating) is produced with `datasets`' and `huggingface_hub`'s own card
classes, so it is what the Hub and `load_dataset` expect. The preview grid is drawn from the
first rows of the converted parquet and stored beside the card.
"""

from __future__ import annotations

import io
import json
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
from reghead_release.schema import EXPRESSION_DESCRIPTIONS, EXPRESSIONS, FEATURES, SPLITS

from .conversion import ConfigResult, SplitStats

CARD_DIR = Path(__file__).resolve().parent.parent / "dataset_card"
TEMPLATE = CARD_DIR / "README.md"
GATED = CARD_DIR / "gated.yaml"
PREVIEW_PATH = "images/preview.png"
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


def _attribute_tables(stats: SplitStats) -> str:
    tables = []
    for name, counts in stats.attributes.items():
        top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_VALUES]
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
    }


def render_card(results: list[ConfigResult], *, repo_id: str | None, folder: str, gated: bool = False) -> str:
    """The card's text for the converted configs: the Hub repo's card with a `repo_id`, else the folder's."""
    main = _main_result(results)
    stats = SplitStats()
    for split in SPLITS:
        stats.merge(main.stats[split])
    identities = max(sum(r.stats[s].rows for s in SPLITS) for r in results)
    configs = [f"`{r.config}`" for r in results]
    card = Template(TEMPLATE.read_text()).substitute(
        front_matter=front_matter(results, gated=gated).strip(),
        preview_alt=f"{PREVIEW_IDENTITIES} identities x the 10 expressions",
        preview_path=PREVIEW_PATH,
        holder="This repository" if repo_id else "This folder",
        total_identities=f"{identities:,}",
        total_images=f"{identities * len(EXPRESSIONS):,}",
        configs_phrase=f"one config, {configs[0]}" if len(configs) == 1 else f"{len(configs)} configs, {' and '.join(configs)}",
        split_table=_split_table(results),
        expression_table="\n".join(f"| `{e}` | {EXPRESSION_DESCRIPTIONS[e]} |" for e in EXPRESSIONS),
        stats_config=main.config,
        attribute_tables=_attribute_tables(stats),
        **snippet_values(results, repo_id=repo_id, folder=folder),
        license_text=(
            f"{reghead._LICENSE}: the images and metadata may be used for non-commercial research only. "
            f"Read the full terms at {reghead._LICENSE_URL} before use."
        ),
        citation=reghead._CITATION.strip(),
    )
    DatasetCard(card)  # parses the front matter the way the Hub client does: fails here, not on the Hub
    return card


def write_card(results: list[ConfigResult], out_dir: Path, *, repo_id: str | None, gated: bool = False) -> Path:
    """Write the preview image, then the card (last: its presence means the folder is complete).

    Without a `repo_id`, the card's snippets read `out_dir` by the path it was given.
    """
    preview = out_dir / PREVIEW_PATH
    preview.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(preview, preview_grid_png(_main_result(results), out_dir))
    path = out_dir / "README.md"
    card = render_card(results, repo_id=repo_id, folder=out_dir.as_posix(), gated=gated)
    _write_atomically(path, card.encode("utf-8"))
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)

