"""coreml."""
