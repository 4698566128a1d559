"""``unfork model chat``: the conversation, the engine that talks to the model, the terminal REPL.

``session`` and ``engine`` import no UI library, so ``chat -qq`` stays fast;
``repl`` brings in prompt_toolkit and rich for the interactive terminal.
"""
