"""MACE side of benchmarks/train_vs_mace.py; runs inside .venv-mace (mace-torch pins e3nn 0.4.4).

Reads one JSON case from argv[1]: trains a ScaleShiftMACE from scratch with the same recipe as
the mlip run (E0 = isolated atoms, scale = force RMS, shift = mean interaction energy per atom;
loss w_E·MSE(E/N) + w_F·MSE(F); Adam+AMSGrad, grad clip 10, EMA; best EMA weights by validation
loss) until the wall-clock budget is spent, then prints one JSON line with test RMSEs.
It must not import mlip.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from mace import data, tools
from mace.data.utils import KeySpecification
from mace.tools import torch_geometric

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mace_worker import build_mace  # noqa: E402


def loader(path: str, z_table, cutoff: float, batch_size: int, shuffle: bool, seed: int):
    """A MACE DataLoader over an extxyz file (labels copied to REF_ keys)."""
    frames = ase.io.read(path, index=":")
    keys = KeySpecification(
        info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"}
    )
    items = []
    for atoms in frames:
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        if not atoms.pbc.any():
            atoms.set_cell(np.eye(3) * (np.ptp(atoms.positions, axis=0).max() + 4 * cutoff))
            atoms.center()
        items.append(
            data.AtomicData.from_config(
                data.config_from_atoms(atoms, key_specification=keys),
                z_table=z_table,
                cutoff=cutoff,
            )
        )
    generator = torch.Generator().manual_seed(seed)
    return frames, torch_geometric.dataloader.DataLoader(
        items, batch_size=batch_size, shuffle=shuffle, generator=generator
    )


def errors(model, batches) -> tuple[float, float, float]:
    """(loss-weighted sum pieces) energy MSE per atom, force MSE, and counts -> RMSE in meV."""
    se_e = se_f = n_e = n_f = 0.0
    for batch in batches:
        out = model(batch.to_dict(), training=False, compute_force=True)
        n = (batch.ptr[1:] - batch.ptr[:-1]).to(out["energy"].dtype)
        se_e += float((((out["energy"] - batch.energy) / n) ** 2).sum())
        se_f += float(((out["forces"] - batch.forces) ** 2).sum())
        n_e += len(n)
        n_f += batch.forces.numel()
    return se_e / n_e, se_f / n_f


def main() -> None:
    case = json.loads(sys.argv[1])
    torch.set_num_threads(case["threads"])
    torch.manual_seed(case["seed"])
    torch.set_default_dtype(getattr(torch, case["dtype"]))
    iso = {
        int(a.numbers[0]): a.get_potential_energy()
        for a in ase.io.read(case["isolated_atoms"], index=":")
    }
    zs = sorted(iso)
    z_table = tools.AtomicNumberTable(zs)
    train_frames, train = loader(
        case["train"], z_table, case["cutoff"], case["batch_size"], True, case["seed"]
    )
    _, valid = loader(case["valid"], z_table, case["cutoff"], 16, False, 0)
    _, test = loader(case["test"], z_table, case["cutoff"], 16, False, 0)
    forces = np.concatenate([a.arrays["REF_forces"].ravel() for a in train_frames])
    inter = [(a.info["REF_energy"] - sum(iso[z] for z in a.numbers)) / len(a) for a in train_frames]
    model = build_mace(dict(case, avg_num_neighbors=case["avg_num_neighbors"]), zs)
    model.atomic_energies_fn.atomic_energies.copy_(torch.tensor([iso[z] for z in zs]))
    model.scale_shift.scale.fill_(float(np.sqrt(np.mean(forces**2))))
    model.scale_shift.shift.fill_(float(np.mean(inter)))
    optimizer = torch.optim.Adam(model.parameters(), lr=case["lr"], amsgrad=True)
    ema = [p.detach().clone() for p in model.parameters()]
    best, best_loss, updates = None, float("inf"), 0
    start = time.perf_counter()
    while time.perf_counter() - start < case["budget_s"]:
        for batch in train:
            out = model(batch.to_dict(), training=True, compute_force=True)
            n = (batch.ptr[1:] - batch.ptr[:-1]).to(out["energy"].dtype)
            loss = (
                case["energy_weight"] * (((out["energy"] - batch.energy) / n) ** 2).mean()
                + case["forces_weight"] * ((out["forces"] - batch.forces) ** 2).mean()
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            updates += 1
            decay = min(case["ema_decay"], (1 + updates) / (10 + updates))
            with torch.no_grad():
                for average, param in zip(ema, model.parameters()):
                    average.lerp_(param, 1 - decay)
            if time.perf_counter() - start >= case["budget_s"]:
                break
        live = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for param, average in zip(model.parameters(), ema):
                param.copy_(average)
        mse_e, mse_f = errors(model, valid)
        valid_loss = case["energy_weight"] * mse_e + case["forces_weight"] * mse_f
        if valid_loss < best_loss:
            best_loss, best = valid_loss, copy.deepcopy(model.state_dict())
        with torch.no_grad():
            for param, value in zip(model.parameters(), live):
                param.copy_(value)
    elapsed = time.perf_counter() - start
    model.load_state_dict(best)
    mse_e, mse_f = errors(model, test)
    print(
        json.dumps(
            {
                "params": sum(p.numel() for p in model.parameters()),
                "epochs": updates / len(train),
                "steps": updates,
                "train_s": elapsed,
                "s_per_epoch": elapsed / (updates / len(train)),
                "test_energy_rmse": 1000 * mse_e**0.5,
                "test_forces_rmse": 1000 * mse_f**0.5,
            }
        )
    )


if __name__ == "__main__":
    main()
