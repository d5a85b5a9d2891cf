"""MACE side of benchmarks/models.py; runs inside .venv-mace (mace-torch pins e3nn 0.4.4).

Reads one JSON case from argv[1], builds MACE from scratch (no downloaded weights), times
energy+forces calls and prints one JSON line. It must not import mlip.
"""

from __future__ import annotations

import json
import sys

import ase.io
import numpy as np
import torch
from _worker_timing import time_and_report
from e3nn import o3
from mace import data, modules, tools
from mace.tools import torch_geometric


def build_mace(case: dict, zs: list[int]) -> torch.nn.Module:
    """ScaleShiftMACE with the mace_run_train --model MACE defaults (see docs peers.md)."""
    return modules.ScaleShiftMACE(
        r_max=case["cutoff"], num_bessel=8, num_polynomial_cutoff=5, max_ell=case["max_ell"],
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=case["num_interactions"], num_elements=len(zs),
        hidden_irreps=o3.Irreps(case["hidden_irreps"]), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(zs)), avg_num_neighbors=case["avg_num_neighbors"],
        atomic_numbers=zs, correlation=case["correlation"], gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0, atomic_inter_shift=0.0, radial_MLP=[64, 64, 64])


def main() -> None:
    case = json.loads(sys.argv[1])
    torch.set_num_threads(case["threads"])
    torch.set_default_dtype(getattr(torch, case["dtype"]))
    frames = ase.io.read(case["structure_file"], index=":")
    zs = sorted({int(z) for atoms in frames for z in atoms.numbers})
    z_table = tools.AtomicNumberTable(zs)
    for atoms in frames:
        if not atoms.pbc.any():  # matscipy needs a non-singular cell for molecules
            atoms.set_cell(np.eye(3) * (np.ptp(atoms.positions, axis=0).max() + 4 * case["cutoff"]))
            atoms.center()
    configs = [data.config_from_atoms(atoms) for atoms in frames]
    loader = torch_geometric.dataloader.DataLoader(
        [data.AtomicData.from_config(c, z_table=z_table, cutoff=case["cutoff"]) for c in configs],
        batch_size=len(configs), shuffle=False)
    batch = next(iter(loader)).to_dict()
    model = build_mace(case, zs).eval()
    n_atoms = sum(len(atoms) for atoms in frames)
    time_and_report(lambda: model(batch, compute_force=True, training=False), case["repeats"],
                    sum(p.numel() for p in model.parameters()), n_atoms)

if __name__ == "__main__":
    main()
