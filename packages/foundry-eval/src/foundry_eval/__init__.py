"""foundry-eval."""
