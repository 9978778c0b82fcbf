"""The RegHead data model: expressions, identity names, sample keys, splits and the Arrow features.

Everything here is a pure function of names; nothing reads files. The builder (`reghead.py`), the
reader and the converter all take their vocabulary from this module.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import datasets

# The 10 expressions, as the upstream field names, in the upstream order.
EXPRESSIONS = (
    "open_m_open_e",
    "halfo_m_o_e",
    "close_m_o_e",
    "close_m_halfo_e",
    "close_m_0_25o_e",
    "close_m_0_75o_e",
    "close_m_close_e",
    "close_m_smile",
    "raise_eyebrows",
    "frown",
)
NEUTRAL_EXPRESSION = "open_m_open_e"
EXPRESSION_DESCRIPTIONS = {
    "open_m_open_e": "open mouth, open eyes (the neutral reference)",
    "halfo_m_o_e": "half-open mouth, open eyes",
    "close_m_o_e": "closed mouth, open eyes",
    "close_m_halfo_e": "closed mouth, eyes 50% open",
    "close_m_0_25o_e": "closed mouth, eyes 25% open",
    "close_m_0_75o_e": "closed mouth, eyes 75% open",
    "close_m_close_e": "closed mouth, closed eyes",
    "close_m_smile": "closed-mouth smile",
    "raise_eyebrows": "raised eyebrows",
    "frown": "frown",
}
IMAGE_EXTENSION = "jpg"
JSON_FIELD = "json"
SAMPLE_FIELDS = frozenset([f"{e}.{IMAGE_EXTENSION}" for e in EXPRESSIONS] + [JSON_FIELD])

# The 4 render styles, as they are written in identity names (spaces become underscores).
STYLES = (
    "Photorealistic",
    "Plastic Toy Render",
    "Computer Animated Film-Style 3D",
    "Video Game NPC Style",
)
ACCESSORY_ARTICLES = ("a", "an")

RESOLUTIONS = (512, 1024)
SPLITS = ("train", "validation", "test")
# Split buckets out of 10,000: train 90%, validation 5%, test 5%.
SPLIT_BUCKETS = 10_000
SPLIT_BOUNDS = (("train", 9_000), ("validation", 9_500), ("test", 10_000))

# `<8-digit global index>_<identity>_<8 hex chars>`
SAMPLE_KEY_PATTERN = re.compile(r"^(?P<position>\d{8})_(?P<identity>.+)_(?P<suffix>[0-9a-f]{8})$")
IDENTITY_PATTERN = re.compile(r"^id(?P<index>\d+)_(?P<rest>.+)$")

FEATURES = datasets.Features(
    {
        "sample_key": datasets.Value("string"),
        "identity": datasets.Value("string"),
        "identity_index": datasets.Value("int32"),
        "animal": datasets.Value("string"),
        "style": datasets.Value("string"),
        "feature": datasets.Value("string"),
        "accessories": datasets.List(datasets.Value("string")),
        **{expression: datasets.Image() for expression in EXPRESSIONS},
        "sample_json": datasets.Value("string"),
    }
)
ATTRIBUTE_COLUMNS = ("animal", "style", "feature", "accessories")


class Identity(NamedTuple):
    """The parts of an identity name, as returned by `parse_identity`.

    `problem` is None when the name was split cleanly. Otherwise it says what could not be
    parsed, and the fields that could not be determined are None (never an empty string), so a
    failed parse is never mistaken for an empty attribute; the raw name is always kept by the
    caller in the `identity` column.
    """

    index: int | None
    animal: str | None
    style: str | None
    feature: str | None
    accessories: list[str]
    problem: str | None = None


_STYLE_TOKENS = [(style, style.split(" ")) for style in STYLES]
Words = tuple[str, ...]  # the words of a name part, as written between underscores


def _words(tokens) -> str:
    return " ".join(tokens)


def _find_style(tokens: list[str]) -> tuple[int, str, int] | None:
    """The earliest known style in `tokens` that leaves at least one token before it for the animal."""
    for start in range(1, len(tokens)):
        for style, style_tokens in _STYLE_TOKENS:
            if tokens[start : start + len(style_tokens)] == style_tokens:
                return start, style, len(style_tokens)
    return None


def _split_at_articles(tokens: list[str]) -> tuple[list[str], list[list[str]]]:
    """Tokens before the first `a`/`an`, then one list of tokens per `a`/`an` that starts a piece."""
    starts = [i for i, token in enumerate(tokens) if token in ACCESSORY_ARTICLES]
    if not starts:
        return tokens, []
    head = tokens[: starts[0]]
    pieces = [tokens[start:end] for start, end in zip(starts, starts[1:] + [len(tokens)])]
    return head, pieces


class _Split(NamedTuple):
    """A name split by rules 1-3 of `parse_identity`, the feature and accessories still as words."""

    index: int
    animal: str
    style: str
    feature: Words  # empty when nothing stands after the style
    accessories: tuple[Words, ...]


def _split_name(name: str) -> _Split | Identity:
    """Rules 1-3 of `parse_identity`; an `Identity` with a `problem` when rule 1 or 2 fails."""
    match = IDENTITY_PATTERN.match(name)
    if match is None:
        return Identity(None, None, None, None, [], f"{name!r} does not start with 'id<digits>_'")
    index = int(match["index"])
    tokens = match["rest"].split("_")
    found = _find_style(tokens)
    if found is None:
        return Identity(index, None, None, None, [], f"no known style {list(STYLES)} after the animal in {name!r}")
    start, style, length = found
    head, pieces = _split_at_articles(tokens[start + length :])
    if not head and pieces:
        head = pieces.pop(0)
    return _Split(index, _words(tokens[:start]), style, tuple(head), tuple(tuple(piece) for piece in pieces))


# An article-less accessory needs this many different features or accessories before it as
# evidence, when no name shows it as the only accessory: one could be a longer feature or
# accessory that starts alike (`round_eyes_with_rings`, `a_monocle_on_a_chain`).
BARE_ACCESSORY_EVIDENCE = 2
MAX_ACCESSORIES = 2  # an identity has 1 or 2 accessories


class _Names(NamedTuple):
    """What `Vocabulary.from_identities` keeps of a release's names, each fact once."""

    with_article: set[Words]  # the features (rule 3) of names with an `a`/`an` accessory
    without: set[Words]  # the features (rule 3) of names without one
    alone: set[tuple[Words, Words]]  # (feature, accessory) of names with one `a`/`an` accessory
    paired: set[Words]  # the `a`/`an` accessories of names with two or more


@dataclass(frozen=True)
class Vocabulary:
    """What a release's own identity names say about where a facial feature and an accessory end.

    `features` are the facial features (as words), `bare_accessories` the accessories written
    without `a`/`an` (`sunglasses`, `gold hoop earrings`), and `article_accessories` the
    accessories written with one that are known whole (`a monocle`, `a pair of sunglasses`).
    Built from every identity name of a release by `from_identities`;
    `parse_identity(name, vocabulary)` uses it. See `parse_identity` for the rule.
    """

    features: frozenset[Words] = frozenset()
    bare_accessories: frozenset[Words] = frozenset()
    article_accessories: frozenset[Words] = frozenset()

    @classmethod
    def from_identities(cls, names: Iterable[str]) -> "Vocabulary":
        """The vocabulary of a release from all its identity names (rule 4 of `parse_identity`)."""
        seen = _Names(set(), set(), set(), set())
        for name in names:
            split = _split_name(name)
            if not (isinstance(split, _Split) and split.feature):
                continue
            (seen.with_article if split.accessories else seen.without).add(split.feature)
            if len(split.accessories) == 1:
                seen.alone.add((split.feature, split.accessories[0]))
            else:
                seen.paired.update(split.accessories)
        with_article = seen.with_article
        shortest = {words for words in with_article if not any(words[:i] in with_article for i in range(1, len(words)))}
        followed: dict[Words, set[Words]] = {}  # words -> the known features and accessories they follow
        bare_accessories = set()
        for words in with_article | seen.without:
            for i in range(1, len(words)):
                if words[:i] in shortest:  # at most one: no element of `shortest` starts another
                    followed.setdefault(words[i:], set()).add(words[:i])
                    if words in seen.without:
                        bare_accessories.add(words[i:])
        first_pass = cls._settle(seen, bare_accessories | _evident(followed))
        # An accessory second, after a known `a`/`an` accessory that follows a known feature.
        for feature, piece in seen.alone:
            if feature in first_pass.features:
                for i in range(2, len(piece)):
                    if piece[:i] in first_pass.article_accessories:
                        followed.setdefault(piece[i:], set()).add(piece[:i])
        return cls._settle(seen, bare_accessories | _evident(followed))

    @classmethod
    def _settle(cls, seen: _Names, bare_accessories: set[Words]) -> "Vocabulary":
        """The vocabulary these article-less accessories give: the features they leave, and the
        `a`/`an` accessories known whole (nothing to cut, or a third accessory would be one too many)."""
        accessories_only = cls(frozenset(), frozenset(bare_accessories))  # to cut candidates with
        features = {words for words in seen.with_article if accessories_only._bare_pieces(words, seen.with_article) is None}
        whole = set(seen.paired)
        for feature, piece in seen.alone:
            cut_feature = feature not in features and accessories_only._bare_pieces(feature, features) is not None
            if cut_feature or not accessories_only._cuts(piece):
                whole.add(piece)
        return cls(frozenset(features), frozenset(bare_accessories), frozenset(whole))

    @cached_property
    def _bare_endings(self) -> dict[str, tuple[int, ...]]:
        """The word counts of the article-less accessories that end with each word, fewest first."""
        endings: dict[str, set[int]] = {}
        for words in filter(None, self.bare_accessories):
            endings.setdefault(words[-1], set()).add(len(words))
        return {word: tuple(sorted(counts)) for word, counts in endings.items()}

    def _tile(self, words: Words) -> list[Words] | None:
        """`words` as two known article-less accessories, else as one, else None."""
        lengths = self._bare_endings.get(words[-1], ()) if words else ()
        for n in reversed(lengths):  # the second one longest first: the first one as short as can be
            i = len(words) - n
            if i >= 1 and words[:i] in self.bare_accessories and words[i:] in self.bare_accessories:
                return [words[:i], words[i:]]
        return [words] if words in self.bare_accessories else None

    def _tile_starts(self, words: Words, first: int) -> list[int]:
        """The positions, from `first` on, after which `words` are known article-less
        accessories (`_tile`); found from the accessories' last words and lengths, so that
        a name that ends with none costs one look-up, and a long name little more."""
        endings = self._bare_endings
        if not words or words[-1] not in endings:
            return []
        ends = [len(words) - n for n in endings[words[-1]] if len(words) - n >= first and words[len(words) - n :] in self.bare_accessories]
        starts = set(ends) | {end - n for end in ends for n in endings.get(words[end - 1], ()) if end - n >= first}
        return [i for i in sorted(starts) if self._tile(words[i:]) is not None]

    def _bare_pieces(self, words: Words, features) -> tuple[Words, list[Words]] | None:
        """(feature, article-less accessories) for the longest feature that `words` start with
        and whose remaining words are known article-less accessories; None when there is none."""
        for i in range(len(words) - 1, 0, -1):
            if words[:i] in features and (pieces := self._tile(words[i:])) is not None:
                return words[:i], pieces
        return None

    def _cuts(self, piece: Words) -> list[tuple[Words, list[Words]]]:
        """Each way an `a`/`an` piece ends with known article-less accessories: (the accessory
        with the article, at least one word after it; those accessories)."""
        return [(piece[:i], self._tile(piece[i:])) for i in self._tile_starts(piece, 2)]

    def _cut_feature(self, feature: Words, has_article_accessory: bool) -> tuple[Words, list[Words]]:
        """The feature, and the article-less accessories that its words by rule 3 end with."""
        if feature in self.features:
            return feature, []
        found = self._bare_pieces(feature, self.features)
        if found is None and not has_article_accessory:
            # An identity always has an accessory: whatever follows a known feature is one.
            start = next((i for i in range(len(feature) - 1, 0, -1) if feature[:i] in self.features), None)
            if start is not None:
                found = feature[:start], self._tile(feature[start:]) or [feature[start:]]
        return found if found is not None else (feature, [])

    def _read_piece(self, piece: Words) -> tuple[list[Words], str | None]:
        """An `a`/`an` piece as its accessories, cut before the known article-less accessory it
        ends with; kept whole, with why, when the vocabulary cannot tell which cut it is."""
        cuts = self._cuts(piece)
        if not cuts:
            return [piece], None
        known = [cut for cut in cuts if cut[0] in self.article_accessories]
        whole = piece in self.article_accessories
        if not whole and (len(known) == 1 or (not known and len(cuts) == 1)):
            accessory, rest = (known or cuts)[0]
            return [accessory, *rest], None
        if whole and not known:
            return [piece], None
        ways = " or ".join(" + ".join(repr(_words(words)) for words in [accessory, *rest]) for accessory, rest in cuts)
        return [piece], f"{_words(piece)!r} is kept as one accessory; it could also be {ways}"

    def resolve(self, feature: Words, accessories: tuple[Words, ...]) -> tuple[Words, list[Words], str | None]:
        """The feature and accessories of a name split by rules 1-3, corrected by this vocabulary,
        and why the vocabulary could not settle the split (None when it could)."""
        if not feature:
            return feature, list(accessories), None
        feature, leading = self._cut_feature(feature, bool(accessories))
        if not self.bare_accessories:
            return feature, [*leading, *accessories], None
        doubt = None
        if not leading and (starts := self._tile_starts(feature, 1)):
            ending = next(feature[i:] for i in starts if len(self._tile(feature[i:])) == 1)  # the longest one
            doubt = f"feature {_words(feature)!r} is kept whole; it could also end with the accessory {_words(ending)!r}"
        readings = [self._read_piece(piece) for piece in accessories]
        cut = [*leading, *(words for pieces, _ in readings for words in pieces)]
        if len(cut) > len(leading) + len(accessories) and len(cut) > MAX_ACCESSORIES:
            texts = [_words(words) for words in cut]
            return feature, [*leading, *accessories], f"cut before its known article-less accessories, the name would have {len(cut)} accessories {texts}"
        return feature, cut, doubt or next((why for _, why in readings if why), None)


def _evident(followed: dict[Words, set[Words]]) -> set[Words]:
    """The words that follow enough different known features or accessories to be an accessory."""
    return {words for words, before in followed.items() if len(before) >= BARE_ACCESSORY_EVIDENCE}


def parse_identity(name: str, vocabulary: Vocabulary | None = None) -> Identity:
    """Split an identity name such as `id000_Polar_Bear_Photorealistic_round_eyes_a_wreath_an_owl_mask`.

    Rules, in order:
      1. The name is `id<digits>_<rest>`; the digits (any number of them) are `index`.
      2. The style is the anchor: the first of the 4 known styles (`STYLES`, spaces written as
         `_`) that appears in `<rest>` after at least one word. Words before it are the `animal`.
      3. After the style, the `feature` runs up to the first word `a` or `an`; each `a`/`an`
         word starts one accessory. An identity always has one feature, so when nothing stands
         between the style and the first `a`/`an`, the first piece is the feature.
      4. With a `vocabulary` (`Vocabulary.from_identities` over every identity name of the
         release), accessories written without an article are told from the feature and from
         the accessory before them:
         - the known features are the features (by rule 3) of the names that have an
           `a`/`an` accessory after them;
         - the known `a`/`an` accessories are the `a`/`an` pieces (by rule 3) that do not end
           with a known article-less accessory, and those of a name that has two of them or has
           one after an article-less accessory (a third accessory would be one too many);
         - the article-less accessories are the words that follow the shortest known feature a
           name's feature starts with, when that name has no `a`/`an` accessory
           (`round_eyes` + `gold_hoop_earrings`), or when the same words follow at least two
           different known features or known `a`/`an` accessories (`round_eyes` + `sunglasses`,
           `fluffy_cheeks` + `sunglasses`, `a_monocle` + `sunglasses`), an `a`/`an` accessory
           counting when it is the only one of a name whose feature is known
           (`round_eyes_a_monocle_sunglasses`);
         - a known feature that is another known feature followed by one or two article-less
           accessories is not a feature (`round_eyes_sunglasses` before `a_party_hat`);
         - a feature that is not a known feature is cut after the longest known feature it
           starts with, when the words after it are one or two article-less accessories, or,
           in a name with no `a`/`an` accessory, whatever they are (an identity always has an
           accessory). Those words become the first accessories, without an article: two
           when they are two known article-less accessories, else one;
         - an `a`/`an` piece is cut before the known article-less accessory it ends with,
           leaving at least one word after its article (`a_monocle_gold_hoop_earrings` is
           `a monocle` + `gold hoop earrings`; `a_gold_hoop_earrings` is one accessory): at the
           one cut that leaves a known `a`/`an` accessory, else at the only cut there is. A
           piece that is itself a known `a`/`an` accessory stays whole when no cut leaves one
           (`a_pair_of_sunglasses`, seen before another accessory, with `sunglasses` known).
         What the vocabulary does not settle keeps its split by rules 1-3, as without a
         vocabulary, and `parse_identity_with_doubt` says why: a feature that is not cut but
         ends with a known article-less accessory (`spotted_fur_sunglasses` before `a_hat`,
         with no `spotted_fur_a_...` anywhere); a piece with several cuts, not exactly one
         of them leaving a known `a`/`an` accessory; a piece known whole with a cut that
         leaves a known `a`/`an` accessory (`a_monocle_sunglasses` after `a_wreath`); cuts
         that would make more than 2 accessories (then no piece is cut).
      5. Underscores become spaces; hyphens, apostrophes and other punctuation stay.

    It never raises. When a rule cannot be applied, `problem` says which, and the fields it
    could not determine are None: no `id<digits>_` prefix gives all fields None; no known style
    gives `index` only; no feature or no accessory after the style leaves that field None or
    the list empty. More than 2 accessories is returned as split, with a `problem` noting it,
    since an `a`/`an` inside an accessory name cannot be told apart from the start of another.
    """
    return parse_identity_with_doubt(name, vocabulary)[0]


def parse_identity_with_doubt(name: str, vocabulary: Vocabulary | None = None) -> tuple[Identity, str | None]:
    """`parse_identity`, and why its `vocabulary` left part of the name split by rules 1-3
    (None when it settled the name, or without a vocabulary). The reader counts such names."""
    split = _split_name(name)
    if isinstance(split, Identity):
        return split, None
    feature, accessories, doubt = split.feature, list(split.accessories), None
    if vocabulary is not None:
        feature, accessories, doubt = vocabulary.resolve(feature, split.accessories)
    feature_text = _words(feature) or None
    accessory_texts = [_words(words) for words in accessories]
    problem = None
    if feature_text is None:
        problem = f"no facial feature after the style in {name!r}"
    elif not accessory_texts:
        problem = f"no accessory (starting with 'a_' or 'an_') after the feature in {name!r}"
    elif len(accessory_texts) > MAX_ACCESSORIES:
        problem = f"{len(accessory_texts)} accessories found in {name!r}, expected 1 or 2"
    parts = Identity(split.index, split.animal, split.style, feature_text, accessory_texts, problem)
    return parts, (f"{doubt} in {name!r}" if doubt else None)


class SampleKey(NamedTuple):
    """The parts of a sample key `<8-digit position>_<identity>_<8 hex chars>`."""

    position: int
    identity: str
    suffix: str


def parse_sample_key(key: str) -> SampleKey | None:
    """The parts of a WebDataset sample key, or None when it does not follow the upstream pattern."""
    match = SAMPLE_KEY_PATTERN.match(key)
    if match is None:
        return None
    return SampleKey(int(match["position"]), match["identity"], match["suffix"])


def split_of(sample_key: str) -> str:
    """The split of a sample: `train`, `validation` or `test`, about 90/5/5.

    The first 8 bytes of SHA-256(`sample_key` as UTF-8), read as a big-endian integer, modulo
    10,000, give a bucket: below 9,000 is train, below 9,500 validation, the rest test. It
    depends on the key alone, so an identity lands in the same split at both resolutions, in
    every release size (a smaller release is a prefix of a larger one), on every machine.
    """
    digest = hashlib.sha256(sample_key.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % SPLIT_BUCKETS
    for split, bound in SPLIT_BOUNDS:
        if bucket < bound:
            return split
    raise AssertionError("unreachable: the last bound is SPLIT_BUCKETS")


def release_tag(resolution: int) -> str:
    """The GitHub release tag of a resolution, e.g. `reghead-webdataset-v1-512`."""
    return f"reghead-webdataset-v1-{resolution}"


def shard_name(resolution: int, index: int) -> str:
    """The file name upstream gives shard `index`, e.g. `reghead-v1-512-000000.tar`."""
    return f"reghead-v1-{resolution}-{index:06d}.tar"
