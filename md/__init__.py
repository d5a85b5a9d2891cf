"""Batched torch molecular dynamics and relaxation."""
