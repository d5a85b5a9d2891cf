"""Importers from extxyz, ASE databases/trajectories, OC20, PubChemQCR and VASP."""
