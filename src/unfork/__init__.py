"""unfork: teach a language model new skills and knowledge from a few examples (the LAB method)."""

__version__ = "0.1.0"
