"""foundry-models."""
