"""The identity attribute vocabulary of a RegHead dataset as found in the data, as Markdown tables.

Every animal, style, feature and accessory, with the number of identities that have it. It streams
the four attribute columns only (`columns=[...]`), so on the Hub it downloads no image.

    python examples/vocabulary.py reghead-parquet                    # the converted demo folder
    python examples/vocabulary.py snap-research/RegHead --top 0      # a Hub repo, every value
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from datasets import load_dataset

ATTRIBUTES = ("animal", "style", "feature", "accessories")
UNPARSED = "(unparsed)"  # an identity name the parser could not split (see reghead.parse_identity)


def attribute_counts(source: str, config: str = "512") -> dict[str, Counter]:
    """{attribute: Counter(value -> identities)} over every split of `config`."""
    counts = {name: Counter() for name in ATTRIBUTES}
    splits = load_dataset(source, config, streaming=True, columns=list(ATTRIBUTES))
    for split in splits.values():
        for row in split:
            for name in ("animal", "style", "feature"):
                counts[name][row[name] if row[name] is not None else UNPARSED] += 1
            counts["accessories"].update(row["accessories"])
    return counts


def markdown(counts: dict[str, Counter], top: int) -> str:
    identities = sum(counts["style"].values())
    parts = []
    for name, values in counts.items():
        ranked = sorted(values.items(), key=lambda item: (-item[1], item[0]))
        shown = ranked[:top] if top else ranked
        lines = [f"## {name} ({len(values)} distinct values in {identities} identities)", ""]
        lines += [f"| {name} | identities |", "| --- | ---: |"]
        lines += [f"| {value} | {count:,} |" for value, count in shown]
        if len(shown) < len(ranked):
            lines.append(f"| ... {len(ranked) - len(shown)} more | |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the identity attribute vocabulary of a RegHead dataset.")
    parser.add_argument("source", help="a converted folder (e.g. reghead-parquet) or a Hub dataset repo id")
    parser.add_argument("--config", default="512", help="512 or 1024 (the same identities; default: 512)")
    parser.add_argument("--top", type=int, default=20, help="values shown per attribute, most frequent first (0: all)")
    args = parser.parse_args(argv)
    print(markdown(attribute_counts(args.source, args.config), args.top), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
