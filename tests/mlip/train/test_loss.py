import math

import pytest
import torch

from mlip.models import PotentialOutput
from mlip.targets import LabelledBatch
from mlip.train.loss import LossConfig, combine_terms, loss_terms
from mlip.train.metrics import MetricAccumulator


@pytest.fixture
def batch(bpa_frames):
    return LabelledBatch.from_ase(bpa_frames[:3], cutoff=3.0)


def _output(graph, energy, forces):
    """A model output with these energies and forces (node energies are not read)."""
    node_energy = torch.zeros(graph.positions.shape[0], dtype=torch.float64)
    return PotentialOutput(energy=energy, node_energy=node_energy, forces=forces)


def _prediction(batch, shift_e=0.1, shift_f=0.02):
    return _output(batch.graph, batch.targets.energy + shift_e * batch.graph.n_atoms.double(),
                   batch.targets.forces + shift_f)


def test_mse_terms_are_per_atom_energy_and_force_components(batch):
    config = LossConfig(energy_weight=2.0, forces_weight=10.0, stress_weight=0.0)
    terms = loss_terms(_prediction(batch), batch, config)
    sums = {k: v[0] for k, v in terms.items()}
    counts = {k: v[1] for k, v in terms.items()}
    assert float(counts["energy"]) == 3 and float(counts["forces"]) == 3 * 81
    loss = combine_terms(sums, counts, config)
    assert float(loss) == pytest.approx(2.0 * 0.1**2 + 10.0 * 0.02**2, rel=1e-12)


def test_missing_labels_are_masked_and_frame_weights_apply(batch):
    energy = batch.targets.energy.clone()
    energy[1] = math.nan
    forces = batch.targets.forces.clone()
    forces[:27] = math.nan
    weight = torch.tensor([1.0, 1.0, 3.0], dtype=torch.float64)
    targets = type(batch.targets)(energy, forces, batch.targets.stress, weight)
    graph = LabelledBatch(batch.graph, targets)
    n_atoms = graph.graph.n_atoms.double()
    pred = _output(graph.graph, graph.targets.energy.nan_to_num() + 0.1 * n_atoms,
                   batch.targets.forces + 0.02)
    terms = loss_terms(pred, graph, LossConfig())
    assert float(terms["energy"][1]) == 2  # frame 1 has no energy
    assert float(terms["energy"][0]) == pytest.approx((1 + 3) * 0.01, rel=1e-12)
    assert float(terms["forces"][1]) == 2 * 81  # frame 0 has no forces
    assert float(terms["forces"][0]) == pytest.approx((81 + 3 * 81) * 0.02**2, rel=1e-12)


def test_huber_is_quadratic_below_delta_and_linear_above(batch):
    config = LossConfig(kind="huber", huber_delta=0.01, forces_weight=0.0)
    small = loss_terms(_prediction(batch, shift_e=0.005), batch, config)["energy"][0] / 3
    large = loss_terms(_prediction(batch, shift_e=0.5), batch, config)["energy"][0] / 3
    assert float(small) == pytest.approx(0.5 * 0.005**2, rel=1e-9)
    assert float(large) == pytest.approx(0.01 * (0.5 - 0.005), rel=1e-9)


def test_metrics_rmse_mae_in_mev(batch):
    metrics = MetricAccumulator(LossConfig())
    graphs = batch.split()
    for g in graphs:  # streaming over batches equals one pass
        metrics.update(_prediction(g, shift_e=0.1, shift_f=-0.02), g)
    summary = metrics.summary("valid_")
    assert summary["valid_energy_rmse"] == pytest.approx(100.0, rel=1e-9)
    assert summary["valid_forces_mae"] == pytest.approx(20.0, rel=1e-9)
    assert math.isnan(summary["valid_stress_rmse"])
    assert summary["valid_loss"] == pytest.approx(0.01 + 100 * 0.02**2, rel=1e-9)
