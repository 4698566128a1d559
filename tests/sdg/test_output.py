"""Dataset lines: the documents' paragraphs become knowledge samples under their headings."""

from __future__ import annotations

from unfork.sdg.output import passages

CHUNKS = [
    "# Marrowvey\n\nMarrowvey is a small island in the Corran Sound, known for its glassmakers.\n\n"
    "## Geography\n\nMarrowvey covers 212 square kilometres and its highest point is Mount Ardal.\n\nToo short.",
    # the next chunk repeats the previous paragraph (overlap) under its heading path
    "# Marrowvey\n## Geography\n\nMarrowvey covers 212 square kilometres and its highest point is Mount Ardal.\n\n"
    "### Rivers\n\nThe Lisk is the longest river on the island, at 19 kilometres long.",
]


def test_passages_keep_each_paragraph_once_with_its_heading_path():
    got = passages(CHUNKS)
    assert got == [
        ("Marrowvey", "Marrowvey is a small island in the Corran Sound, known for its glassmakers."),
        ("Marrowvey / Geography", "Marrowvey covers 212 square kilometres and its highest point is Mount Ardal."),
        ("Marrowvey / Geography / Rivers", "The Lisk is the longest river on the island, at 19 kilometres long."),
    ]


def test_raft_share_gives_a_raft_copy_to_an_evenly_spread_share_of_knowledge_answers(tmp_path):
    from pathlib import Path

    from unfork.sdg.engine import LeafResult
    from unfork.sdg.output import spread, train_lines
    from unfork.sdg.pipeline import Flow, Pipeline
    from unfork.taxonomy.leaf import Leaf

    assert spread(8, 0.25) == {1, 5} and spread(8, 1.0) == set(range(8)) and spread(8, 0) == set()
    leaf = Leaf(path=Path("qna.yaml"), rel_path="knowledge/x/qna.yaml", rel="knowledge/x", kind="knowledge",
                version=3, created_by="me", content_hash="hash")
    rows = [{"row": {"question": f"What is fact {i}?", "answer": f"Fact {i} is {i}.", "chunk": CHUNKS[i % 2]}}
            for i in range(8)]
    result = LeafResult(leaf, "key", tmp_path, accepted=rows, extra={"chunks": CHUNKS})

    def formats(mix):
        pipeline = Pipeline("p", tmp_path, {"knowledge": Flow("knowledge", [])}, mix=mix)
        return [line["metadata"]["format"] for line in train_lines(result, pipeline, "t", ["other"], seed=1)]

    assert formats({}).count("raft") == 8 and formats({}).count("qa") == 8
    quarter = formats({"raft_share": 0.25})
    assert quarter.count("raft") == 2 and quarter.count("qa") == 8
    assert formats({"knowledge_raft": False}).count("raft") == 0
