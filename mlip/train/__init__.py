"""Training potentials on a snapshot store."""
