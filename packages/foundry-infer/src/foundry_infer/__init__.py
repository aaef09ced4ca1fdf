"""foundry-infer."""
