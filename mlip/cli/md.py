"""``mlip md MODEL IN``: molecular dynamics of every structure in IN, as one batch."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlip.cli._simulation import POTENTIAL_SETTINGS, load_potential
from mlip.settings import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Group, OnlyWith, Setting

#: What a --restart keeps from its checkpoint unless given again.
_KEPT_ON_RESTART = ("--ensemble", "--thermostat", "--temperature", "--timestep", "--pressure")

SETTINGS = Group("mlip md MODEL IN", (
    Setting("--ensemble", (str,), "nvt", "statistical ensemble", choices=("nve", "nvt", "npt")),
    Setting("--thermostat", (str,), "langevin", "NVT thermostat: Langevin (BAOAB) or a "
            "Nosé-Hoover chain; NPT always thermostats with Langevin",
            choices=("langevin", "nhc")),
    Setting("--temperature", (float,), 300.0, "target temperature (initial for NVE)", unit="K",
            range=POSITIVE),
    Setting("--pressure", (float,), 0.0, "NPT target pressure", unit="GPa"),
    Setting("--timestep", (float,), 1.0, "time step", unit="fs", range=POSITIVE),
    Setting("--steps", (int,), 1000, "total number of steps (a restart continues up to it)",
            range=NON_NEGATIVE),
    Setting("--friction", (float,), 0.01, "Langevin friction", unit="1/fs", range=NON_NEGATIVE),
    Setting("--anisotropic", (bool,), False, "NPT: scale the cell axes independently"),
    Setting("--trajectory", (str,), "md.xyz", "trajectory file: .xyz, .extxyz, .traj or .h5 "
            "(store)", flags=("-o",)),
    Setting("--log", (str,), "thermo.csv", "thermo log, .csv or .jsonl"),
    Setting("--restart", (str,), None, "continue from this MD checkpoint (IN is ignored); "
            "ensemble, thermostat, temperature, time step and pressure are the checkpoint's "
            "unless given again", nullable=True, metavar="CKPT"),
    Setting("--checkpoint", (str,), None, "checkpoint path", nullable=True,
            default_text="TRAJECTORY_STEM.ckpt"),
    Setting("--checkpoint-interval", (int,), 1000, "steps between checkpoints",
            range=AT_LEAST_ONE),
    Setting("--traj-interval", (int,), 10, "steps between trajectory frames",
            range=AT_LEAST_ONE),
    Setting("--log-interval", (int,), 10, "steps between thermo log rows", range=AT_LEAST_ONE),
    Setting("--seed", (int,), 0, "seed of the initial momenta and of the noise",
            range=NON_NEGATIVE),
    Setting("--max-edges-per-block", (int,), None, "facet models: evaluate the convolutions on "
            "blocks of N edges (bounds the memory of large systems, e.g. 65536 on a GPU)",
            range=AT_LEAST_ONE, nullable=True, metavar="N"),
    Setting("--max-atoms-per-call", (int, str), "auto", "evaluate the model on groups of whole "
            "structures of at most N atoms; all: the whole batch at once; auto: on a CPU the "
            "faster of both, timed at the first step", choices=("auto", "all"),
            range=AT_LEAST_ONE, metavar="N"),
    Setting("--deterministic", (bool,), False, "deterministic torch kernels: a float32 run "
            "repeats bit for bit on the same machine and thread count (auto group size then "
            "means all)"),
    *POTENTIAL_SETTINGS,
), rules=(
    OnlyWith("--thermostat", "--ensemble", ("nvt",), values=("nhc",)),
    OnlyWith("--thermostat", "--ensemble", ("nvt", "npt")),
    OnlyWith("--friction", "--ensemble", ("nvt", "npt")),
    OnlyWith("--friction", "--thermostat", ("langevin",)),
    OnlyWith("--pressure", "--ensemble", ("npt",)),
    OnlyWith("--anisotropic", "--ensemble", ("npt",)),
))

GROUPS = (SETTINGS,)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``md`` verb."""
    p = subparsers.add_parser(
        "md", help="run molecular dynamics (NVE, NVT, NPT)",
        description="Run MD on every structure of IN in one batch. NVT uses Langevin (BAOAB) or "
        "a Nosé-Hoover chain (--thermostat nhc); NPT uses stochastic cell rescaling.")
    p.add_argument("model", help="potential file written by mlip train / save_model, or a "
                   "pretrained model: sevennet:7net-0, chgnet:0.3.0 (pip install mlip[foundation])")
    p.add_argument("input", help="structure file (all frames run together; ignored on --restart)")
    SETTINGS.add_arguments(p)
    p.set_defaults(func=SETTINGS.bind(
        run, keep_unset=lambda args: _KEPT_ON_RESTART if args.restart else ()))


def run(args: argparse.Namespace) -> int:
    """Run MD, print a summary and where the outputs are."""
    import ase.io

    from mlip.errors import ConfigError, SimulationBlowUpError
    from mlip.md import MDOutputs, make_integrator, run_md
    from mlip.md.ensembles import ensemble_for

    if args.restart:
        kept = _restart_settings(args)
    model = load_potential(args)
    if args.max_edges_per_block is not None:
        if not hasattr(model, "set_max_edges_per_block"):
            raise ConfigError(f"--max-edges-per-block applies to facet models; {args.model} "
                              f"holds a {type(model).__name__}")
        model.set_max_edges_per_block(args.max_edges_per_block)

    checkpoint = args.checkpoint or str(Path(args.trajectory).with_suffix(".ckpt"))
    outputs = MDOutputs(trajectory=args.trajectory, log=args.log, checkpoint=checkpoint,
                        trajectory_interval=args.traj_interval, log_interval=args.log_interval,
                        checkpoint_interval=args.checkpoint_interval)
    group_size = None if args.max_atoms_per_call == "all" else args.max_atoms_per_call
    common = dict(steps=args.steps, outputs=outputs, seed=args.seed, skin=args.skin,
                  device=args.device, progress=True, max_atoms_per_call=group_size,
                  deterministic=args.deterministic)
    if args.restart:
        result = run_md(model, restart=args.restart, **kept, **common)
    else:
        integrator = make_integrator(
            ensemble_for(args.ensemble, args.thermostat), timestep_fs=args.timestep,
            temperature_K=args.temperature, pressure_GPa=args.pressure,
            friction_per_fs=args.friction, anisotropic=args.anisotropic, seed=args.seed)
        structures = ase.io.read(args.input, index=":")
        result = run_md(model, structures, integrator, initial_temperature_K=args.temperature,
                        **common)
    print(result.summary())
    print(f"trajectory: {args.trajectory}\nthermo log: {args.log}\ncheckpoint: {checkpoint}")
    if result.failures:
        first = min(result.failures)
        raise SimulationBlowUpError("; ".join(result.failures.values()), system=first)
    return 0


def _restart_settings(args: argparse.Namespace) -> dict[str, object]:
    """The options given again on ``--restart``, as :func:`mlip.md.run_md` takes them.

    Raises:
        ConfigError: an option a restart cannot change (the checkpoint keeps it), or
            ``--thermostat`` without ``--ensemble``.
    """
    from mlip.errors import ConfigError
    from mlip.md.ensembles import ensemble_for

    fixed = [s for s in SETTINGS.settings if s.dest in args.given
             and s.name in ("--friction", "--anisotropic")]
    if fixed:
        value = getattr(args, fixed[0].dest)
        raise ConfigError(f"{fixed[0].name} = {value!r}: allowed only on a fresh run (a "
                          "--restart keeps the checkpoint's)")
    if "thermostat" in args.given and "ensemble" not in args.given:
        raise ConfigError(f"--thermostat = {args.thermostat!r}: allowed on a --restart only "
                          "with --ensemble")
    kept: dict[str, object] = {name: getattr(args, name)
                               for name in ("temperature", "timestep", "pressure")
                               if name in args.given}
    if "ensemble" in args.given:
        kept["ensemble"] = ensemble_for(args.ensemble, args.thermostat)
    return kept
