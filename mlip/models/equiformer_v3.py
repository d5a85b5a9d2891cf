"""Model family equiformer_v3 (being implemented)."""
