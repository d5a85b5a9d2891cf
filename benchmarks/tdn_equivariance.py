"""Equivariance error of the TDN model against the CP rank R (float64).

The same randomly initialised TDN (identical weights for every rank: the CP factors are fixed
buffers fitted by ALS, not parameters) is evaluated on a bundled 3BPA molecule and on rotated
copies. Reported per rank: the CP fit error ‖M − M_R‖/‖M‖, the operator-norm bound ε of one
product, and the max over rotations of the relative energy error |E(Rx) − E(x)|/|E| and force
error max|F(Rx) − R F(x)| / max|F|. The exact e3nn CG product is the reference row (zero up to
round-off), and the errors should fall as R grows to full rank (L+1)⁴.

    python benchmarks/tdn_equivariance.py [--lmax 2] [--ranks 7 14 28 35 81] [--rotations 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
import torch

from mlip.graph import AtomicGraph
from mlip.models import build
from mlip.nn.precision import float64_construction
from mlip.testing import equivariance_errors, random_rotation

RESULTS = Path(__file__).resolve().parent / "results" / "tdn_equivariance.json"
ROOT = Path(__file__).resolve().parents[1]


def model_for(lmax: int, tensor_product: str, rank: int | None, cutoff: float):
    """The benchmark TDN (small CPU preset), float64, same weights for every rank."""
    with float64_construction():
        torch.manual_seed(0)
        return build("tdn", species=[1, 6, 7, 8], cutoff=cutoff, lmax=lmax, channels=16,
                     tensor_product=tensor_product, rank=rank).double().eval()


def measure(model, graph: AtomicGraph, n_rotations: int) -> dict:
    """Max relative energy and force errors over ``n_rotations`` random proper rotations."""
    errors = [equivariance_errors(model, graph, random_rotation(seed))
              for seed in range(n_rotations)]
    return {"energy": max(e["energy"] for e in errors), "forces": max(e["forces"] for e in errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, default=2)
    parser.add_argument("--ranks", type=int, nargs="+", default=[7, 14, 21, 28, 35, 42, 48, 81])
    parser.add_argument("--rotations", type=int, default=5)
    parser.add_argument("--cutoff", type=float, default=4.5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    atoms = ase.io.read(ROOT / "data" / "bundled" / "3bpa_train_300K.xyz", index=0)
    graph = AtomicGraph.from_ase(atoms, args.cutoff).to(dtype=torch.float64)
    rows = []
    print(f"{'product':>8} {'R':>4} {'fit err':>9} {'eps':>9} {'energy err':>11} {'force err':>10}")
    for rank in [None, *args.ranks]:
        model = model_for(args.lmax, "cg" if rank is None else "cp", rank, args.cutoff)
        tp = model.blocks[0].attention.tp_message
        row = {"product": "cg" if rank is None else "cp", "rank": rank,
               "fit_error": getattr(tp, "fit_error", 0.0),
               "epsilon": getattr(tp, "operator_error", 0.0)}
        row.update(measure(model, graph, args.rotations))
        rows.append(row)
        print(f"{row['product']:>8} {str(rank or '-'):>4} {row['fit_error']:>9.2e} "
              f"{row['epsilon']:>9.2e} {row['energy']:>11.2e} {row['forces']:>10.2e}", flush=True)
    cp_rows = [r for r in rows if r["product"] == "cp"]
    falling = all(a["energy"] >= b["energy"] for a, b in zip(cp_rows, cp_rows[1:]))
    print(f"energy error falls monotonically with R: {falling}; "
          f"default rank 7L² = {7 * args.lmax**2}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"args": vars(args), "n_atoms": len(atoms), "n_edges": graph.n_edges, "rows": rows,
               "energy_error_monotone": falling}
    RESULTS.write_text(json.dumps(payload, indent=1))
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
