"""Model family tdn (being implemented)."""
