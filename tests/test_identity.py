"""parse_identity, parse_sample_key and split_of: the pure functions of names."""

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reghead_release import sample
from reghead_release.sample import identity_name
from reghead_release.schema import (
    SPLITS,
    STYLES,
    Identity,
    Vocabulary,
    parse_identity,
    parse_identity_with_doubt,
    parse_sample_key,
    split_of,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "id000_Doberman_Dog_Photorealistic_round_eyes_a_wreath_a_pirate_hat",
            Identity(0, "Doberman Dog", "Photorealistic", "round eyes", ["a wreath", "a pirate hat"]),
        ),
        (
            "id017_Polar_Bear_Plastic_Toy_Render_fluffy_cheeks_an_eyepatch",
            Identity(17, "Polar Bear", "Plastic Toy Render", "fluffy cheeks", ["an eyepatch"]),
        ),
        (
            "id1234_Black-footed_Cat_Computer_Animated_Film-Style_3D_arched_eyebrows_a_bunny-ear_headband_an_owl's_feather",
            Identity(1234, "Black-footed Cat", "Computer Animated Film-Style 3D", "arched eyebrows", ["a bunny-ear headband", "an owl's feather"]),
        ),
        (
            "id33723_Przewalski's_Horse_Video_Game_NPC_Style_curved_horns_a_space_helmet",
            Identity(33723, "Przewalski's Horse", "Video Game NPC Style", "curved horns", ["a space helmet"]),
        ),
        (  # a feature that itself starts with "a": nothing stands between the style and it
            "id5_Owl_Photorealistic_a_single_horn_a_party_hat_a_laurel_crown",
            Identity(5, "Owl", "Photorealistic", "a single horn", ["a party hat", "a laurel crown"]),
        ),
    ],
)
def test_parse_identity_tricky_names(name, expected):
    assert parse_identity(name) == expected


@pytest.mark.parametrize(
    "name, index, problem",
    [
        ("Doberman_Dog_Photorealistic_round_eyes_a_wreath", None, "does not start with 'id<digits>_'"),
        ("id12_Doberman_Dog_Watercolour_round_eyes_a_wreath", 12, "no known style"),
        ("id12_Photorealistic_round_eyes_a_wreath", 12, "no known style"),
        ("id12_Owl_Photorealistic_round_eyes", 12, "no accessory"),
        ("id12_Owl_Photorealistic", 12, "no facial feature"),
        ("id12_Owl_Photorealistic_big_eyes_a_b_a_c_an_d", 12, "3 accessories"),
    ],
)
def test_parse_identity_reports_what_it_cannot_split(name, index, problem):
    parts = parse_identity(name)
    assert parts.index == index
    assert problem in parts.problem
    # Nothing undetermined is returned as an empty string.
    assert "" not in (parts.animal, parts.style, parts.feature)


def test_parse_identity_unparsed_fields_are_none():
    parts = parse_identity("id12_Doberman_Dog_Watercolour_round_eyes_a_wreath")
    assert parts == Identity(12, None, None, None, [], parts.problem)


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-'", min_size=1, max_size=10)
_plain_word = _word.filter(lambda w: w not in ("a", "an") and all(w not in s.split() for s in STYLES))


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=10**7),
    animal=st.lists(_plain_word, min_size=1, max_size=4),
    style=st.sampled_from(STYLES),
    feature=st.lists(_plain_word, min_size=1, max_size=4),
    accessories=st.lists(
        st.tuples(st.sampled_from(["a", "an"]), st.lists(_plain_word, min_size=1, max_size=4)), min_size=1, max_size=2
    ),
)
def test_parse_identity_round_trips_generated_names(index, animal, style, feature, accessories):
    accessory_words = [[article, *words] for article, words in accessories]
    name = "_".join([f"id{index:03d}", *animal, style.replace(" ", "_"), *feature, *(w for a in accessory_words for w in a)])
    assert parse_identity(name) == Identity(
        index, " ".join(animal), style, " ".join(feature), [" ".join(a) for a in accessory_words]
    )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_parse_identity_never_raises(name):
    parts = parse_identity(name)
    assert (parts.problem is None) == (parts.style is not None and parts.feature is not None and 1 <= len(parts.accessories) <= 2)


def test_parse_sample_key():
    key = parse_sample_key("00000042_id042_Owl_Photorealistic_round_eyes_a_wreath_0badf00d")
    assert key == (42, "id042_Owl_Photorealistic_round_eyes_a_wreath", "0badf00d")
    assert parse_sample_key("42_id042_Owl_0badf00d") is None
    assert parse_sample_key("00000042_id042_Owl_Photorealistic_XYZ") is None


def test_split_of_is_the_documented_hash():
    for key in ["00000000_id000_x_00000000", "00001234_id1234_Polar_Bear_Photorealistic_a_b_12345678", "ü"]:
        bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:16], 16) % 10_000
        expected = "train" if bucket < 9000 else "validation" if bucket < 9500 else "test"
        assert split_of(key) == expected


def test_split_of_proportions():
    counts = {split: 0 for split in SPLITS}
    for i in range(20_000):
        counts[split_of(f"{i:08d}_id{i:03d}_Owl_Photorealistic_eyes_a_hat_deadbeef")] += 1
    assert 0.88 < counts["train"] / 20_000 < 0.92
    assert 0.04 < counts["validation"] / 20_000 < 0.06
    assert 0.04 < counts["test"] / 20_000 < 0.06


# --- the release's own vocabulary --------------------------------------------------------------

_CLEAN = [
    "id000_Owl_Photorealistic_round_eyes_a_wreath",
    "id001_Mole_Photorealistic_fluffy_cheeks_a_party_hat",
    "id002_Koala_Photorealistic_a_single_horn_an_eyepatch",
]


@pytest.mark.parametrize(
    "evidence, name, expected",
    [
        (  # alone: the only accessory of its name, after a known feature
            [],
            "id010_Owl_Photorealistic_round_eyes_gold_hoop_earrings",
            Identity(10, "Owl", "Photorealistic", "round eyes", ["gold hoop earrings"]),
        ),
        (  # before an a_ accessory, seen after two different features
            ["id011_Mole_Plastic_Toy_Render_round_eyes_sunglasses_a_monocle"],
            "id012_Owl_Photorealistic_fluffy_cheeks_sunglasses_a_party_hat",
            Identity(12, "Owl", "Photorealistic", "fluffy cheeks", ["sunglasses", "a party hat"]),
        ),
        (  # before an a_ accessory, seen alone elsewhere
            ["id013_Mole_Photorealistic_round_eyes_sunglasses"],
            "id014_Owl_Photorealistic_fluffy_cheeks_sunglasses_a_party_hat",
            Identity(14, "Owl", "Photorealistic", "fluffy cheeks", ["sunglasses", "a party hat"]),
        ),
        (  # a feature that starts with "a"
            [],
            "id015_Owl_Photorealistic_a_single_horn_headphones",
            Identity(15, "Owl", "Photorealistic", "a single horn", ["headphones"]),
        ),
        (  # two article-less accessories, each known
            ["id016_Mole_Photorealistic_round_eyes_sunglasses", "id017_Mole_Photorealistic_round_eyes_headphones"],
            "id018_Owl_Photorealistic_fluffy_cheeks_sunglasses_headphones",
            Identity(18, "Owl", "Photorealistic", "fluffy cheeks", ["sunglasses", "headphones"]),
        ),
        (  # the only evidence of its feature: split as without a vocabulary
            [],
            "id019_Owl_Photorealistic_spotted_fur_sunglasses",
            parse_identity("id019_Owl_Photorealistic_spotted_fur_sunglasses"),
        ),
        (  # once after one feature only: could be a longer feature, so left as it is
            ["id020_Mole_Photorealistic_round_eyes_with_rings_a_hat"],
            "id021_Owl_Photorealistic_round_eyes_with_rings_a_wreath",
            Identity(21, "Owl", "Photorealistic", "round eyes with rings", ["a wreath"]),
        ),
    ],
)
def test_parse_identity_with_the_release_vocabulary(evidence, name, expected):
    vocabulary = Vocabulary.from_identities([*_CLEAN, *evidence, name])
    assert parse_identity(name, vocabulary) == expected


def test_article_less_accessories_without_a_vocabulary_keep_todays_split():
    assert parse_identity("id010_Owl_Photorealistic_round_eyes_gold_hoop_earrings") == Identity(
        10, "Owl", "Photorealistic", "round eyes gold hoop earrings", [],
        "no accessory (starting with 'a_' or 'an_') after the feature in 'id010_Owl_Photorealistic_round_eyes_gold_hoop_earrings'",
    )
    assert parse_identity("id012_Owl_Photorealistic_fluffy_cheeks_sunglasses_a_party_hat").feature == "fluffy cheeks sunglasses"


def test_vocabulary_changes_nothing_in_names_that_split_cleanly():
    names = [identity_name(i) for i in range(2_000)]
    vocabulary = Vocabulary.from_identities(names)
    assert [parse_identity(name, vocabulary) for name in names] == [parse_identity(name) for name in names]
    assert vocabulary.bare_accessories == frozenset()


def test_vocabulary_ignores_names_it_cannot_split():
    vocabulary = Vocabulary.from_identities(["", "Not-An-Identity", "id1_Owl_Watercolour_x_a_y", "id2_Owl_Photorealistic"])
    assert vocabulary == Vocabulary()
    assert parse_identity("id2_Owl_Photorealistic", vocabulary) == parse_identity("id2_Owl_Photorealistic")


# --- article-less accessories next to an `a`/`an` accessory -------------------------------------

# What the release knows: `gold hoop earrings` and `sunglasses` alone, `a monocle` alone, and
# `a pair of sunglasses` before another accessory (so whole, though it ends with `sunglasses`).
_ACCESSORIES = [
    *_CLEAN,
    "id030_Owl_Photorealistic_round_eyes_gold_hoop_earrings",
    "id031_Mole_Photorealistic_fluffy_cheeks_sunglasses",
    "id032_Koala_Photorealistic_curved_horns_a_monocle",
    "id033_Owl_Photorealistic_round_eyes_a_pair_of_sunglasses_a_wreath",
]
_NO_ACCESSORY = "no accessory (starting with 'a_' or 'an_') after the feature in {name!r}"


@pytest.mark.parametrize(
    "rest, without, with_vocabulary",
    [
        (  # an a_ accessory, then an article-less one
            "curved_horns_a_monocle_gold_hoop_earrings",
            ("curved horns", ["a monocle gold hoop earrings"]),
            ("curved horns", ["a monocle", "gold hoop earrings"]),
        ),
        (  # the same when the a_ accessory is not otherwise known: the known one ends it
            "curved_horns_a_top_hat_sunglasses",
            ("curved horns", ["a top hat sunglasses"]),
            ("curved horns", ["a top hat", "sunglasses"]),
        ),
        (  # an article-less accessory, then an a_ one
            "curved_horns_gold_hoop_earrings_a_monocle",
            ("curved horns gold hoop earrings", ["a monocle"]),
            ("curved horns", ["gold hoop earrings", "a monocle"]),
        ),
        (  # two article-less accessories, in both orders
            "curved_horns_sunglasses_gold_hoop_earrings",
            ("curved horns sunglasses gold hoop earrings", []),
            ("curved horns", ["sunglasses", "gold hoop earrings"]),
        ),
        (
            "curved_horns_gold_hoop_earrings_sunglasses",
            ("curved horns gold hoop earrings sunglasses", []),
            ("curved horns", ["gold hoop earrings", "sunglasses"]),
        ),
        (  # an a_ accessory whose words end with a known article-less one: the article needs a word
            "curved_horns_a_gold_hoop_earrings",
            ("curved horns", ["a gold hoop earrings"]),
            ("curved horns", ["a gold hoop earrings"]),
        ),
        (
            "curved_horns_a_gold_hoop_earrings_sunglasses",
            ("curved horns", ["a gold hoop earrings sunglasses"]),
            ("curved horns", ["a gold hoop earrings", "sunglasses"]),
        ),
        (
            "curved_horns_sunglasses_a_gold_hoop_earrings",
            ("curved horns sunglasses", ["a gold hoop earrings"]),
            ("curved horns", ["sunglasses", "a gold hoop earrings"]),
        ),
        (
            "curved_horns_gold_hoop_earrings_a_gold_hoop_earrings",
            ("curved horns gold hoop earrings", ["a gold hoop earrings"]),
            ("curved horns", ["gold hoop earrings", "a gold hoop earrings"]),
        ),
        (  # a known a_ accessory that ends with a known article-less one stays whole
            "curved_horns_a_pair_of_sunglasses",
            ("curved horns", ["a pair of sunglasses"]),
            ("curved horns", ["a pair of sunglasses"]),
        ),
        (
            "curved_horns_a_pair_of_sunglasses_gold_hoop_earrings",
            ("curved horns", ["a pair of sunglasses gold hoop earrings"]),
            ("curved horns", ["a pair of sunglasses", "gold hoop earrings"]),
        ),
        (  # after a feature that starts with "a"
            "a_single_horn_a_monocle_sunglasses",
            ("a single horn", ["a monocle sunglasses"]),
            ("a single horn", ["a monocle", "sunglasses"]),
        ),
    ],
)
def test_article_less_accessory_next_to_an_article_one(rest, without, with_vocabulary):
    name = f"id066_Capuchin_Monkey_Plastic_Toy_Render_{rest}"
    vocabulary = Vocabulary.from_identities([*_ACCESSORIES, name])
    problem = None if without[1] else _NO_ACCESSORY.format(name=name)
    assert parse_identity(name) == Identity(66, "Capuchin Monkey", "Plastic Toy Render", *without, problem)
    assert parse_identity_with_doubt(name, vocabulary) == (
        Identity(66, "Capuchin Monkey", "Plastic Toy Render", *with_vocabulary),
        None,
    )


@pytest.mark.parametrize(
    "evidence, learned",
    [
        # alone, first (after two features) and second (after a known feature and a known a_
        # accessory, counted with the features it follows)
        (["id040_Mole_Photorealistic_round_eyes_earmuffs"], True),
        (["id040_Mole_Photorealistic_round_eyes_earmuffs_a_monocle", "id041_Mole_Photorealistic_curved_horns_earmuffs_a_wreath"], True),
        (["id040_Mole_Photorealistic_round_eyes_a_monocle_earmuffs", "id041_Mole_Photorealistic_curved_horns_a_wreath_earmuffs"], True),
        (["id040_Mole_Photorealistic_round_eyes_a_monocle_earmuffs", "id041_Mole_Photorealistic_curved_horns_earmuffs_a_wreath"], True),
        # once after one a_ accessory: `a monocle earmuffs` could be one accessory
        (["id040_Mole_Photorealistic_round_eyes_a_monocle_earmuffs"], False),
        # after an a_ accessory that is never seen on its own: nothing is known of it
        (["id040_Mole_Photorealistic_round_eyes_a_top_hat_earmuffs", "id041_Mole_Photorealistic_curved_horns_a_wreath_earmuffs"], False),
        # in a name that already has two accessories: a third would be one too many
        (["id040_Mole_Photorealistic_round_eyes_a_wreath_a_monocle_earmuffs", "id041_Mole_Photorealistic_curved_horns_a_wreath_earmuffs"], False),
    ],
)
def test_article_less_accessory_is_learned_from_every_position(evidence, learned):
    vocabulary = Vocabulary.from_identities([*_ACCESSORIES, *evidence])
    assert (("earmuffs",) in vocabulary.bare_accessories) is learned
    expected = ["a party hat", "earmuffs"] if learned else ["a party hat earmuffs"]
    assert parse_identity("id042_Owl_Photorealistic_fluffy_cheeks_a_party_hat_earmuffs", vocabulary).accessories == expected


def test_article_accessories_known_whole():
    vocabulary = Vocabulary.from_identities([*_ACCESSORIES, "id050_Owl_Photorealistic_round_eyes_a_monocle_sunglasses"])
    assert vocabulary.article_accessories == {
        ("a", "wreath"), ("a", "party", "hat"), ("an", "eyepatch"), ("a", "monocle"), ("a", "pair", "of", "sunglasses"),
    }
    assert vocabulary.bare_accessories == {("gold", "hoop", "earrings"), ("sunglasses",)}


@pytest.mark.parametrize(
    "evidence, rest, expected, doubt",
    [
        (  # a feature seen only before a known article-less accessory
            [],
            "spotted_fur_sunglasses_a_wreath",
            ("spotted fur sunglasses", ["a wreath"]),
            "feature 'spotted fur sunglasses' is kept whole; it could also end with the accessory 'sunglasses'",
        ),
        (  # two cuts, neither leaving a known a_ accessory
            ["id060_Owl_Photorealistic_round_eyes_earrings"],
            "round_eyes_a_pair_of_gold_hoop_earrings",
            ("round eyes", ["a pair of gold hoop earrings"]),
            "'a pair of gold hoop earrings' is kept as one accessory; it could also be 'a pair of' + 'gold hoop earrings' or 'a pair of gold hoop' + 'earrings'",
        ),
        (  # known whole (before another accessory), and `a monocle` + `sunglasses` too
            ["id060_Owl_Photorealistic_round_eyes_a_monocle_sunglasses_a_wreath"],
            "round_eyes_a_monocle_sunglasses",
            ("round eyes", ["a monocle sunglasses"]),
            "'a monocle sunglasses' is kept as one accessory; it could also be 'a monocle' + 'sunglasses'",
        ),
        (  # whole, or a third accessory: the name is its own evidence that the piece is whole
            [],
            "round_eyes_sunglasses_a_monocle_gold_hoop_earrings",
            ("round eyes", ["sunglasses", "a monocle gold hoop earrings"]),
            "'a monocle gold hoop earrings' is kept as one accessory; it could also be 'a monocle' + 'gold hoop earrings'",
        ),
        (
            [],
            "round_eyes_a_wreath_a_monocle_gold_hoop_earrings",
            ("round eyes", ["a wreath", "a monocle gold hoop earrings"]),
            "'a monocle gold hoop earrings' is kept as one accessory; it could also be 'a monocle' + 'gold hoop earrings'",
        ),
    ],
)
def test_what_the_vocabulary_cannot_settle_keeps_rules_1_to_3_and_says_why(evidence, rest, expected, doubt):
    name = f"id061_Owl_Photorealistic_{rest}"
    vocabulary = Vocabulary.from_identities([*_ACCESSORIES, *evidence, name])
    parts, why = parse_identity_with_doubt(name, vocabulary)
    assert parts == parse_identity(name, vocabulary) == Identity(61, "Owl", "Photorealistic", *expected)
    assert why == f"{doubt} in {name!r}"


def test_a_name_the_vocabulary_has_not_seen_is_not_cut_into_three_accessories():
    vocabulary = Vocabulary.from_identities(_ACCESSORIES)
    for rest, accessories in [
        ("sunglasses_a_top_hat_gold_hoop_earrings", "['sunglasses', 'a top hat', 'gold hoop earrings']"),
        ("a_wreath_a_top_hat_gold_hoop_earrings", "['a wreath', 'a top hat', 'gold hoop earrings']"),
    ]:
        name = f"id062_Owl_Photorealistic_round_eyes_{rest}"
        parts, why = parse_identity_with_doubt(name, vocabulary)
        assert parts.accessories[-1] == "a top hat gold hoop earrings" and len(parts.accessories) == 2
        assert why == f"cut before its known article-less accessories, the name would have 3 accessories {accessories} in {name!r}"


def test_names_the_vocabulary_settles_have_no_doubt():
    names = [*_ACCESSORIES, "id070_Owl_Photorealistic_curved_horns_a_monocle_gold_hoop_earrings"]
    vocabulary = Vocabulary.from_identities(names)
    assert [parse_identity_with_doubt(name, vocabulary)[1] for name in names] == [None] * len(names)
    assert parse_identity_with_doubt(names[-1]) == (parse_identity(names[-1]), None)


_hostile_name = st.lists(
    st.one_of(st.sampled_from(["a", "an", "id1", "Photorealistic", "Plastic", "Toy", "Render", "sunglasses", "", "_"]), st.text(max_size=6)),
    max_size=12,
).map("_".join)


@settings(max_examples=200, deadline=None)
@given(names=st.lists(_hostile_name, max_size=8), name=_hostile_name)
def test_parse_identity_with_any_vocabulary_never_raises(names, name):
    vocabulary = Vocabulary.from_identities([*names, name])
    parts, doubt = parse_identity_with_doubt(name, vocabulary)
    assert parts == parse_identity(name, vocabulary) and (doubt is None or name in doubt or repr(name) in doubt)
    assert "" not in (parts.animal, parts.style, parts.feature) and "" not in parts.accessories


# --- a release of the real size, with article-less accessories in every position ------------------

# The sample release's pools, grown to the real release's sizes.
_NAME_FIRST_WORDS = ("Red", "Snow", "Giant", "Black-footed", "Przewalski's", "St.", "Arctic", "Bald", "Fennec", "Three-toed", "Golden", "Grey", "Pygmy", "Spotted", "Striped")
_NAME_LAST_WORDS = ("Fox", "Leopard", "Cat", "Horse", "Bernard", "Owl", "Eagle", "Sloth", "Bear", "Mole", "Koala", "Otter", "Hare", "Lynx", "Tapir", "Wolf", "Seal", "Yak")
_ANIMALS = list(dict.fromkeys([*sample.ANIMALS, *(f"{a} {b}" for a in _NAME_FIRST_WORDS for b in _NAME_LAST_WORDS)]))[:270]
_FEATURES = [
    *sample.FEATURES, "spotted fur", "striped fur", "big nose", "tiny ears", "long lashes", "sharp fangs", "floppy ears",
    "pointed ears", "wide grin", "rosy cheeks", "thick mane", "short snout", "long snout", "curly fur", "shaggy fur",
    "bright eyes", "sleepy eyes", "heavy brows", "split lip", "button nose", "crooked teeth", "buck teeth",
    "whiskered chin", "bearded chin", "scarred cheek", "glowing eyes", "tufted ears", "patterned fur",
]
_BARE = ["sunglasses", "gold hoop earrings", "headphones", "round glasses", "earmuffs", "suspenders", "reading glasses"]
_WITH_ARTICLE = [
    *sample.ACCESSORIES, "a bow tie", "a top hat", "a cowboy hat", "a beanie", "a bandana", "a tiara", "a crown", "a halo",
    "a nose ring", "a pearl necklace", "a gold chain", "a feather boa", "a chef's hat", "a sailor hat", "a witch hat",
    "a wizard hat", "a baseball cap", "a beret", "a fez", "a sombrero", "a turban", "a headband", "a hair bow", "a scarf",
    "a collar", "a bell collar", "a lei", "an earring", "an ear cuff", "a visor", "a hood", "a helmet", "a mask",
    "a pair of sunglasses", "a pair of round glasses", "a bib", "a cape", "a gold hoop earrings",
]


def realistic_identities(count: int = 33_724, seed: int = 0) -> list[tuple[str, Identity]]:
    """(name, parts) in the shape of the real release: 270 animals, 38 features, 57 accessories of
    which 7 without an article, 1 or 2 per identity in any order; `a pair of sunglasses` and
    `a gold hoop earrings` end with the words of accessories written without one."""
    rng = random.Random(seed)
    identities = []
    for index in range(count):
        animal, style, feature = rng.choice(_ANIMALS), rng.choice(STYLES), rng.choice(_FEATURES)
        accessories = rng.sample(_BARE + _WITH_ARTICLE, 1 if rng.random() < 0.3 else 2)
        name = "_".join([f"id{index:03d}", animal, style, feature, *accessories]).replace(" ", "_")
        identities.append((name, Identity(index, animal, style, feature, accessories)))
    return identities


def test_vocabulary_of_a_full_size_release_settles_every_name():
    assert (len(set(_ANIMALS)), len(set(_FEATURES)), len(set(_BARE + _WITH_ARTICLE))) == (270, 38, 57)
    identities = realistic_identities()
    vocabulary = Vocabulary.from_identities(name for name, _ in identities)
    assert {" ".join(words) for words in vocabulary.features} == set(_FEATURES)
    assert {parse_identity_with_doubt(name, vocabulary) == (parts, None) for name, parts in identities} == {True}
