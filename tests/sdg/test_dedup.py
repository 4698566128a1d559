import pytest

from unfork.sdg.dedup import MinHashIndex, RougeIndex, lcs_length, make_index, rouge_l, shared_words, tokens


def test_lcs_and_rouge_l():
    assert lcs_length(list("abcde"), list("ace")) == 3
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("", "anything") == 0.0
    # 5 of 6 tokens in common, in order: P = R = 5/6
    assert rouge_l("write a haiku about the sea", "write a haiku about the moon") == pytest.approx(5 / 6)


def test_rouge_index_finds_near_duplicates_not_paraphrase_free_text():
    idx = RougeIndex(threshold=0.7)
    idx.add("Write a haiku about a lighthouse in the fog.")
    score, match = idx.find("Write a haiku about the lighthouse in fog")
    assert score >= 0.7 and match.startswith("Write a haiku")
    score, _ = idx.find("Explain how tides work to a ten-year-old.")
    assert score < 0.3


def test_rouge_index_bound_skips_do_not_change_the_answer():
    texts = [" ".join(tokens(f"item {i} " + "alpha beta gamma " * (i % 3))) for i in range(30)]
    idx = RougeIndex(threshold=0.5)
    for t in texts:
        idx.add(t)
    query = "item 7 alpha beta gamma alpha beta gamma"
    best = max(rouge_l(query, t) for t in texts)
    assert idx.find(query)[0] == pytest.approx(best)


def test_minhash_index_similar_and_different():
    idx = MinHashIndex(threshold=0.5)
    base = "the glasslight festival lasts nine nights and begins on the first friday of october every year"
    idx.add(base)
    score, match = idx.find(base.replace("every year", "each year"))
    assert match == base and score > 0.5
    score, match = idx.find("a completely unrelated sentence about rivers lakes and granite mountains in the north")
    assert score < 0.2


def test_make_index_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown near-duplicate method"):
        make_index("embeddings", 0.5)


HAIKU_SEEDS = ["Write a haiku about a lighthouse in the fog.", "Write a haiku about autumn leaves.",
               "Write a haiku about a cup of morning coffee.", "Write a haiku about a city at night."]


def test_shared_words_are_the_template_of_the_seed_requests():
    assert shared_words(HAIKU_SEEDS, 0.8) == {"write", "a", "haiku", "about"}
    assert shared_words(HAIKU_SEEDS, 0.0) == frozenset()
    assert shared_words(HAIKU_SEEDS[:2], 0.8) == frozenset()  # two texts show no template


def test_ignoring_template_words_compares_requests_by_their_subject():
    plain, templated = RougeIndex(0.7), RougeIndex(0.7, ignore=shared_words(HAIKU_SEEDS, 0.8))
    for idx in (plain, templated):
        idx.add("Write a haiku about a sunset.")
    assert plain.find("Write a haiku about a river.")[0] == pytest.approx(5 / 6)  # rejected without the option
    assert templated.find("Write a haiku about a river.")[0] == 0.0
    assert templated.find("write a haiku about sunset!")[0] == 1.0  # the same subject is still a duplicate
    assert templated.find("Write a haiku about a sunset over water.")[0] < 0.7  # a new one is not
    # a text made only of template words is compared whole, so its exact copy is still caught
    templated.add("Write a haiku.")
    assert templated.find("write a HAIKU")[0] == 1.0


def test_minhash_ignores_template_words_too():
    idx = MinHashIndex(threshold=0.5, k=1, ignore=shared_words(HAIKU_SEEDS, 0.8))
    idx.add("Write a haiku about a sunset.")
    assert idx.find("Write a haiku about a river.")[1] is None
