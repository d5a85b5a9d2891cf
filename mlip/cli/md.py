"""``mlip md MODEL IN``: molecular dynamics of every structure in IN, as one batch."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlip.cli._simulation import add_potential_arguments, load_potential

#: (--ensemble, --thermostat) → mlip.md ensemble; NPT always thermostats with Langevin.
_ENSEMBLES = {("nve", "langevin"): "nve", ("nve", "nhc"): "nve",
              ("nvt", "langevin"): "nvt_langevin", ("nvt", "nhc"): "nvt_nhc",
              ("npt", "langevin"): "npt_crescale", ("npt", "nhc"): "npt_crescale"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``md`` verb."""
    p = subparsers.add_parser(
        "md", help="run molecular dynamics (NVE, NVT, NPT)",
        description="Run MD on every structure of IN in one batch. NVT uses Langevin (BAOAB) or "
        "a Nosé-Hoover chain (--thermostat nhc); NPT uses stochastic cell rescaling.")
    p.add_argument("model", help="potential file written by mlip train / save_model")
    p.add_argument("input", help="structure file (all frames run together; ignored on --restart)")
    p.add_argument("--ensemble", choices=["nve", "nvt", "npt"], default="nvt")
    p.add_argument("--thermostat", choices=["langevin", "nhc"], default="langevin")
    p.add_argument("--temperature", type=float, default=300.0, help="K (initial for NVE)")
    p.add_argument("--pressure", type=float, default=0.0, help="NPT target pressure, GPa")
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--steps", type=int, default=1000, help="total number of steps")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    p.add_argument("--anisotropic", action="store_true", help="NPT: scale the axes independently")
    p.add_argument("-o", "--trajectory", default="md.xyz", help=".xyz, .traj or .h5 (store)")
    p.add_argument("--log", default="thermo.csv", help="thermo log, .csv or .jsonl")
    p.add_argument("--restart", metavar="CKPT", help="continue from an MD checkpoint")
    p.add_argument("--checkpoint", help="checkpoint path (default: TRAJECTORY_STEM.ckpt)")
    p.add_argument("--checkpoint-interval", type=int, default=1000)
    p.add_argument("--traj-interval", type=int, default=10)
    p.add_argument("--log-interval", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-edges-per-block", type=int, metavar="N",
                   help="facet models: evaluate the convolutions on blocks of N edges (bounds "
                        "the memory of large systems, e.g. 65536 on a GPU)")
    p.add_argument("--max-atoms-per-call", type=_group_size, default="auto", metavar="N",
                   help="evaluate the model on groups of whole structures of at most N atoms; "
                        "'all': the whole batch at once; 'auto' (default): on a CPU the faster "
                        "of both, timed at the first step")
    add_potential_arguments(p)
    p.set_defaults(func=run)


def _group_size(text: str) -> int | str | None:
    """``--max-atoms-per-call``: a positive integer, 'auto' or 'all' (None)."""
    if text in ("auto", "all"):
        return None if text == "all" else text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a positive integer, 'auto' or 'all', got {text!r}")


def run(args: argparse.Namespace) -> int:
    """Run MD, print a summary and where the outputs are."""
    import ase.io

    from mlip.errors import ConfigError, SimulationBlowUpError
    from mlip.md import MDOutputs, make_integrator, run_md

    model = load_potential(args)
    if args.max_edges_per_block is not None:
        if not hasattr(model, "set_max_edges_per_block"):
            raise ConfigError(f"--max-edges-per-block applies to facet models; {args.model} "
                              f"holds a {type(model).__name__}")
        model.set_max_edges_per_block(args.max_edges_per_block)

    integrator = make_integrator(
        _ENSEMBLES[args.ensemble, args.thermostat], timestep_fs=args.timestep,
        temperature_K=args.temperature, pressure_GPa=args.pressure,
        friction_per_fs=args.friction, anisotropic=args.anisotropic, seed=args.seed)
    checkpoint = args.checkpoint or str(Path(args.trajectory).with_suffix(".ckpt"))
    outputs = MDOutputs(trajectory=args.trajectory, log=args.log, checkpoint=checkpoint,
                        trajectory_interval=args.traj_interval, log_interval=args.log_interval,
                        checkpoint_interval=args.checkpoint_interval)
    structures = None if args.restart else ase.io.read(args.input, index=":")
    result = run_md(model, structures, integrator, steps=args.steps, outputs=outputs,
                    restart=args.restart, initial_temperature_K=args.temperature, seed=args.seed,
                    skin=args.skin, device=args.device, progress=True,
                    max_atoms_per_call=args.max_atoms_per_call)
    print(result.summary())
    print(f"trajectory: {args.trajectory}\nthermo log: {args.log}\ncheckpoint: {checkpoint}")
    if result.failures:
        first = min(result.failures)
        raise SimulationBlowUpError("; ".join(result.failures.values()), system=first)
    return 0
