import pytest

from unfork.sdg.dedup import MinHashIndex, RougeIndex, lcs_length, make_index, rouge_l, tokens


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
