"""Training checkpoints: the pickle allow-list and scanner, completeness and autoresume, object-store checkpoints, and export-hf."""
