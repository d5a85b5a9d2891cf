"""Importers from extxyz, ASE databases/trajectories, OC20 (S2EF extxyz, S2EF/IS2RE LMDB),
fairchem ASE-LMDB, VASP and PubChemQCR."""

from mlip.data.importers.atoms import LabelKeys
from mlip.data.importers.pipeline import FORMATS, ImportReport, detect_format, import_files

__all__ = ["LabelKeys", "import_files", "ImportReport", "detect_format", "FORMATS"]
