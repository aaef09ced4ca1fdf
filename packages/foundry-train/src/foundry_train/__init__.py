"""foundry-train."""
