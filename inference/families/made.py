"""Command-line family `made` (being written)."""
