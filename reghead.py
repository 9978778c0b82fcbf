"""RegHead as a Hugging Face dataset: 33,724 animal-head identities x 10 facial expressions.

Read the upstream WebDataset release (a downloaded folder, or the GitHub release URLs) into
typed, identity-level rows:

    >>> from reghead import RegHead
    >>> builder = RegHead(config_name="512", data_dir="reghead_download")
    >>> builder.download_and_prepare()
    >>> row = builder.as_dataset()["train"][0]
    >>> row["close_m_smile"], row["animal"], row["accessories"]

or stream them, without preparing anything: `RegHead(config_name="1024").as_streaming_dataset()`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import datasets
from datasets.builder import Key
from datasets.download.streaming_download_manager import StreamingDownloadManager
from datasets.utils import tqdm as hf_tqdm
from datasets.utils.info_utils import VerificationMode

from reghead_release.decode import ImageDecodeError
from reghead_release.decoded import collate, with_decoded_images, with_expression_pairs
from reghead_release.errors import Problems, ReleaseError
from reghead_release.grid import expression_grid, expression_pairs, expression_pairs_batch
from reghead_release.reader import read_shard_rows
from reghead_release.http import download
from reghead_release.release import (
    base_url_for,
    open_shard,
    read_local_release,
    read_remote_release,
)
from reghead_release.schema import (
    EXPRESSION_DESCRIPTIONS,
    EXPRESSIONS,
    FEATURES,
    NEUTRAL_EXPRESSION,
    RESOLUTIONS,
    SPLITS,
    STYLES,
    Identity,
    Vocabulary,
    parse_identity,
    parse_identity_with_doubt,
    release_tag,
    split_of,
)

__all__ = [
    "EXPRESSIONS",
    "EXPRESSION_DESCRIPTIONS",
    "FEATURES",
    "NEUTRAL_EXPRESSION",
    "SPLITS",
    "STYLES",
    "Identity",
    "ImageDecodeError",
    "RegHead",
    "RegHeadConfig",
    "ReleaseError",
    "Vocabulary",
    "collate",
    "expression_grid",
    "expression_pairs",
    "expression_pairs_batch",
    "parse_identity",
    "parse_identity_with_doubt",
    "split_of",
    "with_decoded_images",
    "with_expression_pairs",
]

_DESCRIPTION = """\
RegHead is a synthetic dataset of 33,724 non-humanoid (animal) head identities, each rendered in
the same 10 facial expressions (337,240 JPEG images), released at 512x512 and 1024x1024. Each
identity combines an animal (~270 species), one of 4 render styles (Photorealistic, Plastic Toy
Render, Computer Animated Film-Style 3D, Video Game NPC Style), one facial feature and 1 or 2
accessories. One row is one identity: its parsed attributes, one image per expression and the
release's per-sample JSON. Images are model-generated.
"""

_CITATION = """\
@inproceedings{reghead2026,
  title     = {RegHead: Non-Humanoid Head Blendshapes via Feed-Forward Registration},
  author    = {{Snap Research}},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2026}
}
"""

_HOMEPAGE = "https://github.com/snap-research/RegHead"

_LICENSE = "Snap Inc. Non-Commercial License (research purposes only)"
_LICENSE_URL = "https://github.com/snap-research/RegHead/blob/main/LICENSE"

_VERSION = datasets.Version("1.0.0")


@dataclass
class RegHeadConfig(datasets.BuilderConfig):
    """One resolution of the release.

    Args:
        resolution: 512 or 1024.
        base_url: where release assets are downloaded from when no `data_dir` is given, as
            `<base_url>/<release tag>/<asset>`; defaults to `$REGHEAD_BASE_URL`, then GitHub.
        verify_checksums: check every shard's SHA-256 against the release's `SHA256SUMS` while
            the train split reads it. `download_and_prepare(verification_mode="no_checks")`
            also switches it off.
        strict: raise `ReleaseError` on a bad sample (the default), or skip it with a warning.
    """

    resolution: int = 512
    base_url: str | None = None
    verify_checksums: bool = True
    strict: bool = True


class RegHead(datasets.GeneratorBasedBuilder):
    """RegHead: animal-head identities in 10 expressions, one row per identity."""

    VERSION = _VERSION
    BUILDER_CONFIG_CLASS = RegHeadConfig
    BUILDER_CONFIGS = [
        RegHeadConfig(name=str(resolution), resolution=resolution, version=_VERSION, description=f"{resolution}x{resolution} images")
        for resolution in RESOLUTIONS
    ]
    DEFAULT_CONFIG_NAME = "512"
    # Rows hold 10 images (~0.6 MB at 512, ~2 MB at 1024): keep Arrow record batches small.
    DEFAULT_WRITER_BATCH_SIZE = 50

    def _info(self):
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=FEATURES,
            homepage=_HOMEPAGE,
            license=_LICENSE,
            citation=_CITATION,
        )

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        self._verification_mode = verification_mode
        try:
            super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        except datasets.exceptions.DatasetGenerationError as error:
            # A bad release is the user's to fix: show our error, not the generic wrapper.
            if isinstance(error.__cause__, ReleaseError):
                raise error.__cause__ from None
            raise

    def _split_generators(self, dl_manager):
        # The train split reads every shard whole; it notes where the other splits' samples are
        # (shard -> split -> byte spans), so their splits read only those. A split prepared in
        # another process (num_proc) has no notes and reads its shards whole.
        self._sample_spans: dict[str, dict[str, list[tuple[int, int]]]] = {}
        verify = self.config.verify_checksums and getattr(self, "_verification_mode", None) != VerificationMode.NO_CHECKS
        shards, vocabulary, downloaded = self._locate_shards(dl_manager, verify=verify)
        return [
            datasets.SplitGenerator(
                name=split,
                gen_kwargs={
                    "shards": shards,
                    "split": split,
                    # The train split reads every byte of every shard anyway, so it verifies them
                    # (unless `download` just did); the other splits then read only their samples.
                    "verify": verify and split == "train" and not downloaded,
                    # the release's own feature and accessory names, from its list of identities
                    "vocabulary": vocabulary,
                },
            )
            for split in SPLITS
        ]

    def _locate_shards(self, dl_manager, *, verify: bool):
        """The release's shards, its vocabulary (`ReleaseIndex.vocabulary`), and whether they were downloaded.

        A download is verified against SHA256SUMS as it is written (with `verify`), so the shards
        need no second hash when they are read.
        """
        resolution = self.config.resolution
        if self.config.data_dir:
            index, shards = read_local_release(self.config.data_dir, resolution)
            return shards, index.vocabulary(), False
        index, shards = read_remote_release(base_url_for(resolution, self.config.base_url), resolution)
        if isinstance(dl_manager, StreamingDownloadManager):
            return shards, index.vocabulary(), False
        # Downloaded once into the builder's downloads folder, resumed and retried by HttpFile,
        # verified against SHA256SUMS before it takes its final name (see `download`).
        folder = Path(dl_manager.download_config.cache_dir) / "reghead" / release_tag(resolution)
        total = sum(shard.size or 0 for shard in shards) or None
        with hf_tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {release_tag(resolution)}") as bar:
            shards = [
                replace(shard, location=str(download(
                    shard.location, folder / shard.name, what=shard.name, sha256=shard.sha256 if verify else None,
                    size=shard.size, progress=bar.update,
                )))
                for shard in shards
            ]
        return shards, index.vocabulary(), True

    def _as_dataset(self, split=datasets.Split.TRAIN, in_memory=False):
        # A small release can leave a split without identities; datasets has no file to read
        # for it, so it gets an empty table with the full schema instead of an error.
        info = self.info.splits.get(str(split)) if self.info.splits else None
        if info is not None and info.num_examples == 0:
            empty = {name: [] for name in self.info.features}
            return datasets.Dataset.from_dict(empty, features=self.info.features, info=self.info.copy(), split=str(split))
        return super()._as_dataset(split=split, in_memory=in_memory)

    def _generate_shards(self, shards, split, verify, vocabulary):
        yield from (shard.location for shard in shards)

    def _generate_examples(self, shards, split, verify, vocabulary):
        problems = Problems(strict=self.config.strict)
        seen: dict[str, str] = {}

        def in_split(key: str) -> bool:
            return split_of(key) == split

        for shard in shards:
            # A split read after another one read the whole shard goes straight to its samples.
            spans = self._sample_spans.get(shard.location, {}).get(split)
            if spans == []:
                continue  # the shard has none of this split's samples
            declined = {name: [] for name in SPLITS if name != split}
            with open_shard(shard.location, what=shard.name, size=shard.size) as raw:
                rows = read_shard_rows(
                    raw,
                    file=shard.name,
                    expected_sha256=shard.sha256 if verify and spans is None else None,
                    keep=in_split,
                    seen=seen,
                    problems=problems,
                    resolution=self.config.resolution,
                    vocabulary=vocabulary,
                    on_declined=lambda key, start, end: declined[split_of(key)].append((start, end)),
                    spans=spans,
                )
                for position, row in enumerate(rows):
                    yield Key(shard.index, position), row
            if spans is None:
                self._sample_spans[shard.location] = declined  # only once the whole shard was read
        # Once per split, at the end; silenced with datasets.logging.set_verbosity_error().
        if datasets.logging.get_verbosity() <= logging.WARNING:
            problems.log_summary(f"RegHead {self.config.name} {split} split")
