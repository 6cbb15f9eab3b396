"""Provider adapters behind one protocol, and the registry that resolves model names."""
