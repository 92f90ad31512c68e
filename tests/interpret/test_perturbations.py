"""Perturbations: reproducible under a seed, and each keeps what its doc says it keeps."""

import pytest

from tfsft.interpret.perturbations import (
    PERTURBATIONS,
    perturb_text,
    perturb_words,
    recase,
    rng_for,
    strip_punctuation,
    typo,
)

TEXT = ("It's a gripping, beautifully acted film -- though the second half drags; "
        "still, Ms. O'Neill carries it with ease and wit!")
WORDS = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", ".", "U.S.", "--", "Peter"]


def perturbed(name, seed=0, rate=0.5, text=TEXT):
    return perturb_text(name, text, rng_for(seed, name, 0), rate)


@pytest.mark.parametrize("name", PERTURBATIONS)
def test_the_same_seed_gives_the_same_perturbation_and_another_seed_another(name):
    assert perturbed(name, seed=3) == perturbed(name, seed=3)
    assert perturb_words(name, WORDS, rng_for(3, name, 7), 0.5) == perturb_words(name, WORDS, rng_for(3, name, 7), 0.5)
    if name != "punctuation":  # the one without randomness
        assert len({perturbed(name, seed=s) for s in range(6)}) > 1
        assert perturbed(name, seed=3) != TEXT


def test_example_streams_depend_only_on_seed_perturbation_and_position():
    a = [perturb_text("typos", TEXT, rng_for(0, "typos", i), 0.5) for i in range(4)]
    b = [perturb_text("typos", TEXT, rng_for(0, "typos", i), 0.5) for i in (3, 2, 1, 0)][::-1]  # another order
    assert a == b and len(set(a)) > 1


def test_casing_keeps_the_lowercased_text():
    for seed in range(5):
        assert perturbed("casing", seed).lower() == TEXT.lower()
    assert all(recase(w, rng_for(0, "casing", 0)) != w for w in ("film", "Film", "FILM", "fiLm"))
    every = perturb_text("casing", "the film is good", rng_for(0, "casing", 0), rate=1.0)
    assert all(new != old for new, old in zip(every.split(), "the film is good".split()))


def one_swap_or_deletion(before: str, after: str) -> bool:
    if len(after) == len(before) - 1:
        return any(before[:j] + before[j + 1:] == after for j in range(1, len(before)))
    return len(after) == len(before) and any(
        before[:j] + before[j + 1] + before[j] + before[j + 2:] == after for j in range(1, len(before) - 1))


def test_typos_change_words_of_four_letters_or_more_by_one_swap_or_deletion_past_the_first_letter():
    for seed in range(5):
        new = perturbed("typos", seed).split(" ")
        old = TEXT.split(" ")
        assert len(new) == len(old)
        for a, b in zip(old, new):
            if a != b:
                letters = "".join(c for c in a if c.isalpha())
                assert len(letters) >= 4 and a[0] == b[0]
    for word in ("film", "gripping", "beautifully"):
        for seed in range(10):
            assert one_swap_or_deletion(word, typo(word, rng_for(seed, "typos", 0)))
    words, kept = perturb_words("typos", WORDS, rng_for(0, "typos", 0), 1.0)
    assert kept == list(range(len(WORDS)))
    assert [w for w, o in zip(words, WORDS) if w != o] and all(
        w == o for w, o in zip(words, WORDS) if len(o) < 4 or not o.isalpha())


def test_punctuation_removal_keeps_every_other_character_and_drops_emptied_words():
    assert perturbed("punctuation") == strip_punctuation(TEXT)
    assert perturbed("punctuation") == "Its a gripping beautifully acted film  though the second half drags " \
                                       "still Ms ONeill carries it with ease and wit"
    words, kept = perturb_words("punctuation", WORDS, rng_for(0, "punctuation", 0), 0.1)
    assert words == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "US", "Peter"]
    assert kept == [0, 1, 2, 3, 4, 5, 6, 7, 9, 11]


def test_whitespace_noise_keeps_the_words():
    for seed in range(5):
        assert perturbed("whitespace", seed).split() == TEXT.split()
    words, kept = perturb_words("whitespace", WORDS, rng_for(0, "whitespace", 0), 0.5)
    assert [w.strip() for w in words] == WORDS and kept == list(range(len(WORDS)))
    assert words != WORDS


def test_an_unknown_perturbation_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="casing, typos, punctuation, whitespace. Received: 'emoji'"):
        perturb_text("emoji", TEXT, rng_for(0, "casing", 0), 0.1)
