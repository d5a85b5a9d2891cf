"""MACE side of benchmarks/accuracy.py; runs inside .venv-mace (mace-torch 0.3.16, e3nn 0.4.4).

Reads one JSON case from argv[1] and trains a ScaleShiftMACE from scratch with the recipe the
mlip runs get: E0 = isolated-atom energies when the case names a file, else the case's ``e0``
({symbol: eV}, the least-squares values benchmarks/accuracy.py gives every code); scale = force
RMS, shift = mean interaction energy per atom; loss w_E·MSE(E/N) + w_F·MSE(F) + w_S·MSE(σ) (9
components; stress only where labelled); Adam+AMSGrad, grad clip 10, EMA with the same warm-up
as mlip's; best EMA weights by validation loss. Schedules as mlip's ``schedule`` section:
``constant``, ``plateau`` (torch's ReduceLROnPlateau, MACE's default, on the validation loss of
every epoch) or ``cosine`` sized to the time budget from the mean step rate after the first
epoch or 200 steps and again after every epoch (mlip's ``schedule.fit_to_time``). The EMA
weights are saved at the case's ``snapshot_s`` times and evaluated on the test split after the
budget is spent (evaluation does not use the budget). With ``stage_two`` ({start_fraction,
energy_weight, lr}) the last part of the budget uses that energy weight and a constant lr, and
the best model is chosen on that stage's validation loss (mlip's ``stage_two`` section).
Prints one JSON line. It must not import mlip.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list
from mace import data, tools
from mace.data.utils import KeySpecification
from mace.tools import torch_geometric

sys.path.append(str(Path(__file__).resolve().parent))  # not first: lammps.py here
from _mace_worker import build_mace  # noqa: E402

#: Steps after which the cosine is sized to the budget (as mlip.train.loop._FIT_PROBE_STEPS).
FIT_PROBE_STEPS = 200


def read_labelled(path: str) -> list:
    """Frames with their labels copied to REF_ keys (stress as a 3x3 where present)."""
    frames = ase.io.read(path, index=":")
    for atoms in frames:
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        if atoms.pbc.all():
            try:
                atoms.info["REF_stress"] = atoms.get_stress(voigt=False)
            except Exception:  # no stress label on this frame (ASE raises its own types)
                pass
    return frames


def loader(frames: list, z_table, cutoff: float, batch_size: int, shuffle: bool, seed: int):
    """A MACE DataLoader over ``frames`` (molecules get a large box: matscipy needs a cell)."""
    keys = KeySpecification(info_keys={"energy": "REF_energy", "stress": "REF_stress"},
                            arrays_keys={"forces": "REF_forces"})
    items = []
    for atoms in frames:
        atoms = atoms.copy()
        if not atoms.pbc.any():
            atoms.set_cell(np.eye(3) * (np.ptp(atoms.positions, axis=0).max() + 4 * cutoff))
            atoms.center()
        items.append(data.AtomicData.from_config(
            data.config_from_atoms(atoms, key_specification=keys), z_table=z_table,
            cutoff=cutoff))
    generator = torch.Generator().manual_seed(seed)
    return torch_geometric.dataloader.DataLoader(items, batch_size=batch_size, shuffle=shuffle,
                                                 generator=generator)


def e0_values(case: dict) -> dict[int, float]:
    """{Z: E0 (eV)}: the isolated-atom energies, else the case's ``e0`` {symbol: eV}."""
    if case.get("isolated_atoms"):
        return {int(a.numbers[0]): a.get_potential_energy()
                for a in ase.io.read(case["isolated_atoms"], index=":")}
    return {atomic_numbers[symbol]: float(e) for symbol, e in case["e0"].items()}


def batch_loss(out: dict, batch, case: dict, stress: bool) -> tuple[torch.Tensor, dict]:
    """The weighted loss and the (squared-error sum, count) of each term."""
    n = (batch.ptr[1:] - batch.ptr[:-1]).to(out["energy"].dtype)
    terms = {"energy": (((out["energy"] - batch.energy) / n) ** 2, None),
             "forces": ((out["forces"] - batch.forces) ** 2, None)}
    if stress:
        labelled = batch.stress.flatten(1).abs().sum(1) > 0  # unlabelled frames hold zeros
        terms["stress"] = ((out["stress"] - batch.stress)[labelled] ** 2, None)
    sums = {t: (float(v.sum()), v.numel()) for t, (v, _) in terms.items()}
    loss = sum(case[f"{t}_weight"] * v.mean() for t, (v, _) in terms.items() if v.numel())
    return loss, sums


def errors(model, batches, case: dict, stress: bool) -> dict:
    """Test/valid RMSE (meV/atom, meV/Å, meV/Å³) and the weighted loss."""
    total: dict[str, list[float]] = {}
    for batch in batches:
        out = model(batch.to_dict(), training=False, compute_force=True, compute_stress=stress)
        _, sums = batch_loss(out, batch, case, stress)
        for term, (sq, n) in sums.items():
            acc = total.setdefault(term, [0.0, 0])
            acc[0], acc[1] = acc[0] + sq, acc[1] + n
    mse = {t: (sq / n if n else math.nan) for t, (sq, n) in total.items()}
    out = {f"{t}_rmse": 1000 * math.sqrt(v) for t, v in mse.items()}
    out["loss"] = sum(case[f"{t}_weight"] * v for t, v in mse.items() if math.isfinite(v))
    return out


def averaged(model, ema: list[torch.Tensor]) -> dict:
    """The state dict of ``model`` with the EMA weights."""
    live = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for param, average in zip(model.parameters(), ema):
            param.copy_(average)
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for param, value in zip(model.parameters(), live):
            param.copy_(value)
    return state


def lr_at(case: dict, step: int, total: int, plateau: float) -> float:
    """mlip's LRSchedule formula: constant, plateau factor, or cosine to min_lr_ratio."""
    lr = case["lr"] * plateau
    if case["schedule"] == "cosine":
        r = case["min_lr_ratio"]
        lr *= r + (1 - r) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))
    return lr


def main() -> None:
    case = json.loads(sys.argv[1])
    torch.set_num_threads(case["threads"])
    torch.manual_seed(case["seed"])
    torch.set_default_dtype(getattr(torch, case["dtype"]))
    run_dir = Path(case["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    train_frames = read_labelled(case["train"])
    stress = case["stress_weight"] > 0 and any("REF_stress" in a.info for a in train_frames)
    zs = sorted({int(z) for a in train_frames for z in a.numbers})
    z_table = tools.AtomicNumberTable(zs)
    iso = e0_values(case)
    cutoff = case["cutoff"]
    train = loader(train_frames, z_table, cutoff, case["batch_size"], True, case["seed"])
    valid = loader(read_labelled(case["valid"]), z_table, cutoff, 16, False, 0)
    test = loader(read_labelled(case["test"]), z_table, cutoff, 16, False, 0)
    forces = np.concatenate([a.arrays["REF_forces"].ravel() for a in train_frames])
    inter = [(a.info["REF_energy"] - sum(iso[z] for z in a.numbers)) / len(a)
             for a in train_frames]
    neighbours = sum(len(neighbor_list("i", a, cutoff)) for a in train_frames)
    model = build_mace(dict(case, avg_num_neighbors=neighbours / len(forces) * 3), zs)
    model.atomic_energies_fn.atomic_energies.copy_(torch.tensor([iso[z] for z in zs]))
    model.scale_shift.scale.fill_(float(np.sqrt(np.mean(forces**2))))
    model.scale_shift.shift.fill_(float(np.mean(inter)))
    optimizer = torch.optim.Adam(model.parameters(), lr=case["lr"], amsgrad=True,
                                 weight_decay=case["weight_decay"])
    plateau_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=case["plateau_factor"], patience=case["plateau_patience"])
    ema = [p.detach().clone() for p in model.parameters()]
    best, best_loss, updates, epochs, stage_two = None, float("inf"), 0, 0, False
    planned_steps = total_steps = case["max_epochs"] * len(train)
    fitted = case["schedule"] != "cosine"
    snapshots, pending = [], sorted(case["snapshot_s"])
    start = time.perf_counter()

    def fit_cosine() -> None:
        nonlocal total_steps, fitted
        elapsed = time.perf_counter() - start
        total_steps = max(updates + 1,
                          min(planned_steps, int(updates * case["budget_s"] / elapsed)))
        fitted = True

    while time.perf_counter() - start < case["budget_s"]:
        for batch in train:
            two = case.get("stage_two")
            if two and not stage_two and time.perf_counter() - start >= (
                    two["start_fraction"] * case["budget_s"]):
                # mlip's stage_two: new loss weights and lr, EMA goes on, best restarts
                stage_two, best_loss = True, float("inf")
                case.update(energy_weight=two["energy_weight"])
            if stage_two:
                for group in optimizer.param_groups:
                    group["lr"] = two["lr"]
            elif case["schedule"] != "plateau":
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(case, updates, total_steps, 1.0)
            out = model(batch.to_dict(), training=True, compute_force=True,
                        compute_stress=stress)
            loss, _ = batch_loss(out, batch, case, stress)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            updates += 1
            decay = min(case["ema_decay"], (1 + updates) / (10 + updates))
            with torch.no_grad():
                for average, param in zip(ema, model.parameters()):
                    average.lerp_(param, 1 - decay)
            now = time.perf_counter() - start
            if pending and now >= pending[0]:
                path = run_dir / f"snapshot_{len(snapshots):02d}.pt"
                torch.save(averaged(model, ema), path)
                snapshots.append({"time_s": now, "step": updates, "path": str(path)})
                while pending and now >= pending[0]:
                    pending.pop(0)
            if not fitted and updates == FIT_PROBE_STEPS:
                fit_cosine()
            if now >= case["budget_s"]:
                break
        else:
            epochs += 1
        if case["schedule"] == "cosine":
            fit_cosine()  # every epoch, as mlip's fit_to_time
        state = averaged(model, ema)
        live = copy.deepcopy(model.state_dict())
        model.load_state_dict(state)
        valid_loss = errors(model, valid, case, stress)["loss"]
        model.load_state_dict(live)
        if case["schedule"] == "plateau":
            if not stage_two:
                plateau_sched.step(valid_loss)
        if valid_loss < best_loss:
            best_loss, best = valid_loss, state
    elapsed = time.perf_counter() - start
    final = averaged(model, ema)
    curve = []
    for snap in snapshots + [{"time_s": elapsed, "step": updates, "state": final}]:
        model.load_state_dict(snap.get("state") or torch.load(snap["path"]))
        curve.append({"time_s": snap["time_s"], "step": snap["step"],
                      **{f"test_{k}": v for k, v in errors(model, test, case, stress).items()}})
    model.load_state_dict(best)
    result = {f"test_{k}": v for k, v in errors(model, test, case, stress).items()}
    for name, path in case.get("extra_tests", {}).items():
        batches = loader(read_labelled(path), z_table, cutoff, 16, False, 0)
        result.update({f"extra_{name}_{k}": v
                       for k, v in errors(model, batches, case, stress).items()})
    print(json.dumps({
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": updates / len(train), "full_epochs": epochs, "steps": updates,
        "train_s": elapsed, **result, "curve": curve,
        "e0": {str(z): e for z, e in iso.items()},
        "final_lr": optimizer.param_groups[0]["lr"], "stage_two": stage_two,
    }))


if __name__ == "__main__":
    main()
