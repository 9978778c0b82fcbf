"""`croissant.json`: the converted dataset in MLCommons Croissant 1.1, with the Responsible-AI 1.0 fields.

`card.write_card` writes it beside the card, from the same numbers. It holds:

- every parquet file as a `FileObject`: its SHA-256 (the converter's record has it) and where it
  is: its path relative to `croissant.json` in a folder, the Hub's resolve URL in a repo;
- per config, a `FileSet` naming the config's files exactly (as the card does: a file beside
  them that the card does not name is never read), and a `RecordSet` reading it, with one field
  per column of a row (the images read from the `bytes` of their struct) and the split;
- the Responsible-AI (`rai:`) fields the card's section states (`dataset_card/responsible_ai.yaml`).

Why the record sets read FileSets: mlcroissant (1.1) reads a record set's rows from one
FileObject, or from a FileSet of the folder that holds the JSON (or of a git repository it
clones); a FileSet contained in several FileObjects gives their paths, not their rows. The
FileSets therefore resolve beside `croissant.json`: the converted folder, or a download of the
repo (`huggingface_hub.snapshot_download`). mlcroissant checks a FileObject's SHA-256 when a
record set reads that FileObject.

The JSON is built here by hand, in a fixed order with sorted keys: the converter does not need
mlcroissant (the tests validate and read the file with it).
"""

from __future__ import annotations

import json
import re

import datasets
from huggingface_hub import constants as hub_constants, hf_hub_url

import reghead
from reghead_release.schema import EXPRESSION_DESCRIPTIONS, FEATURES, SPLITS

from .conversion import ConfigResult

CROISSANT_PATH = "croissant.json"
# The first valid Croissant version is the one mlcroissant validates against; RAI is the extension.
CONFORMS_TO = ["http://mlcommons.org/croissant/1.1", "http://mlcommons.org/croissant/RAI/1.0"]
# The @context mlcroissant writes for Croissant 1.1 (mlcroissant._src.core.rdf.make_context):
# it warns about any other ("The JSON-LD `@context` is not standard").
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileObject": "cr:fileObject",
    "fileProperty": "cr:fileProperty",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
PARQUET = "application/x-parquet"
# Croissant data types of the row's scalar columns, by their Arrow type.
DATA_TYPES = {"string": "sc:Text", "int32": "cr:Int32"}
IMAGE_BYTES = "bytes"  # datasets.Image stores struct<bytes, path>: the JPEG is `bytes`
DIGIT, HEX_DIGIT = "[0-9]", "[0-9a-f]"


def file_set_id(config: str) -> str:
    return f"parquet-files-{config}"


def content_url(path: str, *, repo_id: str | None, revision: str | None) -> str:
    """Where a file is: relative to croissant.json in a folder; its resolve URL on the Hub branch in a repo.

    A pull request (`--create-pr`) resolves on the branch it is opened against, once merged.
    """
    if repo_id is None:
        return path
    return hf_hub_url(repo_id, path, repo_type="dataset", revision=revision)


def file_objects(result: ConfigResult, *, repo_id: str | None, revision: str | None) -> list[dict]:
    return [
        {
            "@type": "cr:FileObject",
            "@id": path,
            "name": path,
            "contentUrl": content_url(path, repo_id=repo_id, revision=revision),
            "encodingFormat": PARQUET,
            "sha256": result.sha256[path],
        }
        for path in result.all_files()
    ]


def file_set(result: ConfigResult) -> dict:
    return {
        "@type": "cr:FileSet",
        "@id": file_set_id(result.config),
        "name": file_set_id(result.config),
        "description": f"The parquet files of the {result.config} config (all splits), beside croissant.json.",
        "encodingFormat": PARQUET,
        "includes": result.all_files(),  # exact names, never a glob
    }


def _field(config: str, name: str, data_type: str, source: dict, **extra) -> dict:
    return {"@type": "cr:Field", "@id": f"{config}/{name}", "name": name, "dataType": data_type, "source": source, **extra}


def column_field(config: str, name: str, feature) -> dict:
    """The field of a parquet column, typed by its `datasets` feature."""
    source = {"fileSet": {"@id": file_set_id(config)}, "extract": {"column": name}}
    if isinstance(feature, datasets.Image):
        source["transform"] = {"jsonPath": IMAGE_BYTES}
        return _field(config, name, "sc:ImageObject", source, description=EXPRESSION_DESCRIPTIONS[name])
    if isinstance(feature, datasets.List):
        return _field(config, name, DATA_TYPES[feature.feature.dtype], source, isArray=True)
    return _field(config, name, DATA_TYPES[feature.dtype], source)


def split_field(config: str) -> dict:
    """The split, from the file's name. A plain text field, not a reference to a `cr:Split` record
    set: with a join, mlcroissant reads the whole config before it yields a record.

    The regex matches the converter's names, `<config>/<split>-NNNNN-of-NNNNN[-<tag>].parquet`,
    with character classes and no quantifiers: mlcroissant turns it into globs of these names
    when `records(config, filters={"<config>/split": "train"})` reads one split's files only.
    """
    name = f"^{re.escape(config)}/({'|'.join(SPLITS)})-{DIGIT * 5}-of-{DIGIT * 5}(?:-{HEX_DIGIT * 8})?\\.parquet$"
    source = {
        "fileSet": {"@id": file_set_id(config)},
        "extract": {"fileProperty": "fullpath"},
        "transform": {"regex": name},
    }
    return _field(config, "split", "sc:Text", source, description=" / ".join(SPLITS))


def record_set(result: ConfigResult) -> dict:
    """One record per row of the config: its columns in the parquet order, then the split."""
    config = result.config
    return {
        "@type": "cr:RecordSet",
        "@id": config,
        "name": config,
        "description": f"One record per identity of the {config} config ({config}x{config} images), all splits.",
        "key": {"@id": f"{config}/sample_key"},
        "field": [*(column_field(config, name, feature) for name, feature in FEATURES.items()), split_field(config)],
    }


def croissant_metadata(
    results: list[ConfigResult], *, description: str, facts: dict, repo_id: str | None, revision: str | None
) -> dict:
    """The Croissant JSON-LD of the converted configs, in a folder or (with `repo_id`) on a Hub branch.

    `facts` is `dataset_card/responsible_ai.yaml` with the counts filled in (`card.dataset_facts`).
    """
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": "RegHead",
        "description": description,
        "license": {"@type": "sc:CreativeWork", "name": reghead._LICENSE, "url": reghead._LICENSE_URL},
        "citeAs": reghead._CITATION.strip(),
        "creator": {"@type": "sc:Organization", "name": facts["creator"]},
        "datePublished": facts["datePublished"],
        "url": f"{hub_constants.ENDPOINT}/datasets/{repo_id}" if repo_id else reghead._HOMEPAGE,
        **({"sameAs": [reghead._HOMEPAGE]} if repo_id else {}),
        "version": str(reghead._VERSION),
        **{f"rai:{name}": value for name, value in facts["rai"].items()},
        "distribution": [
            entry
            for result in results
            for entry in [*file_objects(result, repo_id=repo_id, revision=revision), file_set(result)]
        ],
        "recordSet": [record_set(result) for result in results],
    }


def croissant_bytes(metadata: dict) -> bytes:
    """The file's bytes: sorted keys and no timestamp, so the same data gives the same bytes."""
    return (json.dumps(metadata, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
