"""float32 vs float64 energy + forces on the CPU, for every family with trained weights.

Each potential file is loaded twice (float32 and float64, :func:`mlip.models.load_model`) and
timed on a batch of bundled 3BPA molecules; the cases run interleaved (one call of each per
round), so the ratios come from the same machine state. Also recorded: how many weights of the
file would be subnormal in float32 (what :mod:`mlip.nn.precision` zeroes), the largest force
difference float32 − float64, the CPU model, how much this CPU slows a matrix product with
subnormal operands (AMD Zen barely does, Intel cores do, 50–100×) and the load average.

    python benchmarks/cpu_speed.py [--model facet=data/bundled/facet_3bpa.pt]
        [--model tdn=RUN/best.pt ...] [--threads 2] [--repeats 7] [--molecules 16]

Without ``--model`` only the shipped Facet runs. TDN and EquiformerV3 weights come from their
shipped configs, e.g. ``mlip train tdn -o /tmp/tdn --set train.max_time_s=120``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import ase.io
import torch

from mlip.graph import AtomicGraph
from mlip.models import load_model
from mlip.models.checkpoint import read_payload

ROOT = Path(__file__).resolve().parents[1]
DTYPES = (torch.float32, torch.float64)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def subnormal_weights_in_file(path: Path) -> int:
    """Weights of the file that are subnormal once cast to float32 (before mlip zeroes them)."""
    tiny = torch.finfo(torch.float32).tiny
    count = 0
    for value in read_payload(path)["state_dict"].values():
        if value.is_floating_point():
            magnitude = value.to(torch.float32).abs()
            count += int(((magnitude > 0) & (magnitude < tiny)).sum())
    return count


def subnormal_matmul_slowdown(repeats: int) -> float:
    """How much slower this CPU multiplies with 1.4 % subnormal operands: the shipped Facet's
    slow backward product before the fix, ``[7236, 592] @ [592, 12]`` (median time ratio)."""
    torch.manual_seed(0)
    a, b = torch.randn(7236, 592), torch.randn(592, 12)
    tiny = b.clone()
    tiny[:8] = 1e-39  # 96 of 7104 entries, as in the shipped file's control values
    times: dict[str, list[float]] = {"normal": [], "subnormal": []}
    for _ in range(repeats):
        for name, operand in (("normal", b), ("subnormal", tiny)):
            start = time.perf_counter()
            a @ operand
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["subnormal"]) / statistics.median(times["normal"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, metavar="LABEL=PATH")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--molecules", type=int, default=16)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/cpu_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    specs = args.model or [f"facet={ROOT / 'data/bundled/facet_3bpa.pt'}"]
    files = {label: Path(path).resolve() for label, path in (spec.split("=", 1) for spec in specs)}

    frames = ase.io.read(ROOT / "data/bundled/3bpa_train_300K.xyz", index=f":{args.molecules}")
    models = {(label, dtype): load_model(path, dtype=dtype)
              for label, path in files.items() for dtype in DTYPES}
    graphs = {label: AtomicGraph.from_ase(frames, models[label, torch.float64].cutoff)
              for label in files}
    forces = {key: model(graphs[key[0]])["forces"].double() for key, model in models.items()}
    load_before = os.getloadavg()
    times: dict[tuple, list[float]] = {key: [] for key in models}
    for _ in range(args.repeats):
        for key, model in models.items():
            start = time.perf_counter()
            model(graphs[key[0]])
            times[key].append(time.perf_counter() - start)
    load_after = os.getloadavg()
    slowdown = subnormal_matmul_slowdown(args.repeats)

    results = []
    for label, path in files.items():
        ms = {dtype: statistics.median(times[label, dtype]) * 1e3 for dtype in DTYPES}
        reference = forces[label, torch.float64]
        results.append({
            "model": label,
            "file": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
            "family": models[label, torch.float64].registry_name,
            "subnormal_float32_weights_in_file": subnormal_weights_in_file(path),
            "float32_ms": round(ms[torch.float32], 2),
            "float64_ms": round(ms[torch.float64], 2),
            "float32_speedup": round(ms[torch.float64] / ms[torch.float32], 2),
            "float32_ms_all": [round(t * 1e3, 2) for t in times[label, torch.float32]],
            "float64_ms_all": [round(t * 1e3, 2) for t in times[label, torch.float64]],
            "max_force_diff_eV_per_A": float((forces[label, torch.float32] - reference)
                                             .abs().max()),
            "max_force_eV_per_A": float(reference.abs().max()),
        })
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "threads": args.threads,
        "repeats": args.repeats,
        "system": f"{len(frames)} 3BPA molecules ({sum(len(a) for a in frames)} atoms)",
        "torch": torch.__version__,
        "subnormal_matmul_slowdown": round(slowdown, 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'model':<16}{'float32 ms':>12}{'float64 ms':>12}{'f64/f32':>9}{'max|ΔF|':>10}")
    for row in results:
        print(f"{row['model']:<16}{row['float32_ms']:>12.1f}{row['float64_ms']:>12.1f}"
              f"{row['float32_speedup']:>9.2f}{row['max_force_diff_eV_per_A']:>10.1e}")


if __name__ == "__main__":
    main()
