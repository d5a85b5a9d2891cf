"""Model family facet (being implemented)."""
