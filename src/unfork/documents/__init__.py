"""Knowledge documents: fetch them from git, read them as text, cut them into chunks.

``fetch`` reads a leaf's ``document: {repo, commit, patterns}`` from git,
``convert`` turns a file's bytes into a ``Document`` and ``chunk`` cuts its
text into pieces that fit a token budget; sdg and eval both use them.
"""
