"""Evaluation: base against trained on the test split and on benchmarks (knowledge, skills, general, dk)."""
