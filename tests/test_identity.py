"""parse_identity, parse_sample_key and split_of: the pure functions of names."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reghead_release.sample import identity_name
from reghead_release.schema import SPLITS, STYLES, Identity, Vocabulary, parse_identity, parse_sample_key, split_of


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
