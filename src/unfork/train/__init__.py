"""Fine-tuning the student: data preparation, LoRA, the recipe, checkpoints, data parallelism.

Everything here imports torch; the CLI imports it only when ``unfork model train`` runs.
"""
