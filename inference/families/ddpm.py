"""Command-line family `ddpm` (being written)."""
