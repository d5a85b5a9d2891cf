"""benchmarks/cpu_speed.py's driver comparison: the torch-sim adapter returns mlip's own
energies, forces and stress (run in .venv-torchsim, skipped where it has not been built), and
the per-phase timer leaves the patched functions as they were."""

import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from cpu_speed import _PhaseTimer  # noqa: E402

TORCHSIM_PYTHON = ROOT / ".venv-torchsim/bin/python"

_ADAPTER_CHECK = textwrap.dedent("""
    import sys
    import ase.build, ase.io, torch, torch_sim as ts
    sys.path.insert(0, "benchmarks")
    from _torchsim_adapter import MlipModel
    from cpu_speed import SHIPPED, _check_adapter
    from mlip.graph import AtomicGraph
    from mlip.models import build, load_model

    frames = ase.io.read("data/bundled/3bpa_train_300K.xyz", index=":3")
    for dtype in (torch.float64, torch.float32):  # raises on a mismatch
        model = load_model(SHIPPED, dtype=dtype).eval()
        _check_adapter(model, MlipModel(model), frames, dtype)
    # periodic images (vesin's shifts) and the stress, on a rattled Cu cell
    cu = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    cu.rattle(0.05, seed=1)
    lj = build("lennard_jones", species=[29], cutoff=5.0, epsilon=0.02, sigma=2.3).double().eval()
    theirs = MlipModel(lj, compute_stress=True)(ts.io.atoms_to_state([cu], torch.device("cpu"),
                                                                      torch.float64))
    ours = lj(AtomicGraph.from_ase([cu], lj.cutoff), compute_stress=True)
    for key in ("energy", "forces", "stress"):
        mine = getattr(ours, key)
        diff = float((theirs[key] - mine).abs().max())
        assert diff <= 1e-12 * (1 + float(mine.abs().max())), (key, diff)
    print("adapter ok")
""")


@pytest.mark.skipif(not TORCHSIM_PYTHON.exists(),
                    reason=".venv-torchsim not built (python benchmarks/cpu_speed.py builds it)")
def test_torchsim_adapter_returns_mlips_energies_forces_and_stress() -> None:
    done = subprocess.run([str(TORCHSIM_PYTHON), "-c", _ADAPTER_CHECK], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "adapter ok" in done.stdout


class _Base:
    def inherited(self, x: int) -> int:
        return x + 1


class _Child(_Base):
    def own(self, x: int) -> int:
        return 2 * x


def test_phase_timer_times_each_call_and_restores_the_functions() -> None:
    own = _Child.own
    with _PhaseTimer({"a": (_Child, "inherited"), "b": (_Child, "own")}) as timer:
        child = _Child()
        assert child.inherited(1) == 2 and child.own(3) == 6 and child.own(4) == 8
    assert len(timer.seconds["a"]) == 1 and len(timer.seconds["b"]) == 2
    assert "inherited" not in vars(_Child)  # the inherited method is inherited again
    assert _Child.own is own
