"""Training data: the streaming loaders, the shard hash and token-id checks, and the tokenizer loader."""
