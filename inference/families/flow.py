"""Command-line family `flow` (being written)."""
