"""Reading and writing the upstream RegHead release (WebDataset shards plus metadata assets).

`reghead.py` (the `datasets` builder) and `convert/` (the Hub converter) both read releases
through this package only: `release` finds the shards, `tar` reads their members, `reader` turns
them into records and rows, `schema` holds the vocabulary, `sample` writes small releases for
tests, the demo and the benchmarks.
"""

from .errors import Problems, ReleaseError
from .reader import Record, read_shard_records, read_shard_rows, record_to_row
from .release import Shard, base_url_for, locate_local_release
from .schema import EXPRESSIONS, FEATURES, SPLITS, Identity, Vocabulary, parse_identity, parse_identity_with_doubt, split_of

__all__ = [
    "EXPRESSIONS",
    "FEATURES",
    "SPLITS",
    "Identity",
    "Problems",
    "Record",
    "ReleaseError",
    "Shard",
    "Vocabulary",
    "base_url_for",
    "locate_local_release",
    "parse_identity",
    "parse_identity_with_doubt",
    "read_shard_records",
    "read_shard_rows",
    "record_to_row",
    "split_of",
]
