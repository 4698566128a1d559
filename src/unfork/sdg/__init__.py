"""Synthetic data generation: knowledge documents and teacher-model steps."""
