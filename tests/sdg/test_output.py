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
