"""foundry-data."""
