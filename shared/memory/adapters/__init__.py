"""The memory context's adapters (imported only by the composition root)."""
