"""Reading and writing the upstream RegHead release (WebDataset shards plus metadata assets).

`reghead.py` (the `datasets` builder) and `convert/` (the Hub converter) both read releases
through this package only: `release` finds the shards, `reader` turns them into rows, `schema`
holds the vocabulary, `sample` writes small releases for tests, the demo and the benchmarks.
"""

from .errors import Problems, ReleaseError
from .reader import read_shard_rows
from .release import Shard, base_url_for, locate_local_release
from .schema import EXPRESSIONS, FEATURES, SPLITS, Identity, parse_identity, split_of

__all__ = [
    "EXPRESSIONS",
    "FEATURES",
    "SPLITS",
    "Identity",
    "Problems",
    "ReleaseError",
    "Shard",
    "base_url_for",
    "locate_local_release",
    "parse_identity",
    "read_shard_rows",
    "split_of",
]
