"""float32 models hold no subnormal numbers: weights, activations and backward operands.

A subnormal operand slows a CPU matrix product 50–100× (the shipped Facet ran float32 E+F slower
than float64). These tests count subnormals in every tensor an aten operation produces during
energy + forces (forward and autograd backward), without timing anything.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mlip.graph import AtomicGraph
from mlip.models import build, load_model
from mlip.models.tdn import LearnableGaussianBasis
from mlip.nn.graph_attention import smooth_softmax
from mlip.nn.precision import flush_tiny, flush_tiny_, tiny_threshold
from mlip.nn.radial import GaussianBasis, SplineRadial
from mlip.train import train
from tests.conftest import bundled

TINY32 = torch.finfo(torch.float32).tiny
#: operations whose output is uninitialised memory
_UNINITIALISED = ("empty",)


def n_subnormal(tensor: object) -> int:
    """Entries of a float32 tensor with 0 < |x| < 1.18e-38 (0 for anything else)."""
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
        return 0
    magnitude = tensor.detach().abs()
    return int(((magnitude > 0) & (magnitude < TINY32)).sum())


class SubnormalCounter(TorchDispatchMode):
    """Counts subnormal entries in the outputs of every aten operation, per operation name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not any(word in str(func) for word in _UNINITIALISED):
            found = sum(n_subnormal(t) for t in tree_flatten(out)[0])
            if found:
                self.counts[str(func)] += found
        return out


def subnormals_in_energy_forces(model: torch.nn.Module, graph: AtomicGraph) -> dict[str, int]:
    """Subnormal counts in the weights and in every forward/backward tensor of E+F."""
    counts = {name: n_subnormal(p) for name, p in model.named_parameters() if n_subnormal(p)}
    with SubnormalCounter() as counter:
        out = model(graph)
    assert torch.isfinite(out.forces).all()
    return {**counts, **counter.counts}


@pytest.fixture(scope="module")
def bpa_graph(bpa_frames):
    return AtomicGraph.from_ase(bpa_frames[:4], 5.0)


def test_flush_tiny_zeroes_only_magnitudes_below_the_root_of_the_smallest_normal():
    assert tiny_threshold(torch.float32) == pytest.approx(1.0842e-19, rel=1e-4)
    x = torch.tensor([1e-40, -1e-30, 2e-19, -3.0, 0.0, 1e-20], dtype=torch.float32)
    expected = torch.tensor([0.0, 0.0, 2e-19, -3.0, 0.0, 0.0])
    assert torch.equal(flush_tiny(x), expected)
    y = x.clone()
    assert flush_tiny_([y, torch.arange(3), torch.empty(3, device="meta")]) == 3
    assert torch.equal(y, expected)
    # float64 keeps 1e-40 and 1e-30 (normal and far above its threshold, 1.5e-154)
    assert torch.equal(flush_tiny(x.double()), x.double())


def test_shipped_facet_float32_has_no_subnormals_and_float64_forces(bpa_graph):
    model = load_model(bundled("facet_3bpa.pt"), dtype=torch.float32)
    assert subnormals_in_energy_forces(model, bpa_graph) == {}
    reference = load_model(bundled("facet_3bpa.pt"))(bpa_graph).forces
    forces = model(bpa_graph).forces.double()
    scale = reference.abs().max()
    assert (forces - reference).abs().max() < 1e-5 * scale  # float32 precision (~1e-7 · terms)


TINY_MODELS = {
    "facet": {"hidden_irreps": "8x0e+4x1o", "num_layers": 2, "sh_lmax": 1, "embedding_dim": 8,
              "num_spline_basis": 8, "mixer_hidden": [8], "readout_hidden": [8]},
    "tdn": {"lmax": 1, "channels": 8, "num_blocks": 1, "num_heads": 2, "num_basis": 8,
            "radial_hidden": 16},
    "equiformer_v3": {"num_layers": 1, "channels": 8, "lmax": 1, "mmax": 1, "num_heads": 2,
                      "attn_hidden": 4, "attn_alpha_channels": 4, "attn_value_channels": 2,
                      "ffn_hidden": 8, "num_rbf": 8, "edge_channels": 8},
}


def decayed_model(name: str, species: list[int]) -> torch.nn.Module:
    """A float64 model whose matrices have a few weights decayed to 1e-40 and 1e-25.

    Weight decay drives weights that get no gradient geometrically to zero; in float64 they
    pass through values that are subnormal in float32 (1e-40) or make subnormal products there.
    """
    torch.manual_seed(0)
    model = build(name, species=species, cutoff=5.0, **TINY_MODELS[name]).double()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                flat = param.view(-1)
                flat[::7] = 1e-40
                flat[3::7] = -1e-25
    return model


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_cast_to_float32_leaves_no_subnormal_weight_or_activation(name, bpa_graph):
    species = sorted(set(bpa_graph.atomic_numbers.tolist()))
    model = decayed_model(name, species).float().eval()
    small = [p for p in model.parameters() if ((p != 0) & (p.abs() < 1e-19)).any()]
    assert small == []
    assert subnormals_in_energy_forces(model, bpa_graph) == {}


@pytest.mark.parametrize("name", ["tdn", "equiformer_v3"])
def test_loading_weights_into_a_float32_model_zeroes_subnormals(name, bpa_graph):
    species = sorted(set(bpa_graph.atomic_numbers.tolist()))
    state = {k: v.float() for k, v in decayed_model(name, species).state_dict().items()}
    assert sum(n_subnormal(v) for v in state.values()) > 0
    model = build(name, species=species, cutoff=5.0, **TINY_MODELS[name]).float().eval()
    model.load_state_dict(state)
    assert subnormals_in_energy_forces(model, bpa_graph) == {}


def test_gaussian_tails_are_exact_zeros_in_values_and_gradients():
    basis = GaussianBasis(cutoff=6.0, num_basis=64)  # centre spacing 0.095 Å: tails underflow
    r = torch.linspace(0.5, 6.0, 200, dtype=torch.float32, requires_grad=True)
    with SubnormalCounter() as counter:
        values = basis(r)
        torch.autograd.grad((values * torch.rand_like(values)).sum(), r)
    assert dict(counter.counts) == {}
    assert (values == 0).any()
    exact = GaussianBasis(cutoff=6.0, num_basis=64)(r.detach().double())
    # float32 centres and exponents: relative errors up to ~2e-5; values
    # within rounding of the threshold (1.1e-19) may be zeroed
    assert torch.allclose(values.double(), exact, rtol=1e-4, atol=1e-18)


def test_learnable_gaussian_tails_are_exact_zeros_in_values_and_gradients():
    basis = LearnableGaussianBasis(cutoff=5.0, num_basis=4).float()
    with torch.no_grad():
        basis.std.fill_(0.02)  # narrow: exp(-0.5 (u/0.02)²) underflows beyond u ≈ 0.19
    r = torch.linspace(0.5, 5.0, 50, requires_grad=True)
    with SubnormalCounter() as counter:
        values = basis(r)
        torch.autograd.grad(values.sum(), [r, *basis.parameters()])
    assert dict(counter.counts) == {}
    assert (values == 0).any() and (values > 0).any()


@pytest.mark.parametrize("with_envelope", [True, False])
def test_attention_weights_far_below_the_peak_are_exact_zeros(with_envelope):
    logits = torch.tensor([[0.0], [-30.0], [-100.0], [-200.0]], requires_grad=True)
    receivers = torch.zeros(4, dtype=torch.long)
    envelope = torch.full((4,), 0.5) if with_envelope else None
    with SubnormalCounter() as counter:
        weights = smooth_softmax(logits, envelope, receivers, n_nodes=1)
        torch.autograd.grad(weights[:, 0] @ torch.arange(4.0), logits)
    assert dict(counter.counts) == {}
    assert torch.equal(weights[2:], torch.zeros(2, 1))
    assert weights[1, 0] > 0


def test_spline_radial_drops_basis_values_that_make_subnormal_gradients():
    torch.manual_seed(0)
    radial = SplineRadial(cutoff=5.0, num_out=3, num_basis=8).float()  # knot spacing 1 Å
    # one ulp past a knot: t = 1.2e-7, so the basis value t³/6 = 2.8e-22; times an upstream
    # gradient of 1e-18 the weight gradient would be 3e-40, subnormal
    r = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float32)
    r = torch.nextafter(r, torch.full_like(r, 9.0)).requires_grad_()
    with SubnormalCounter() as counter:
        out = radial(r)
        torch.autograd.grad(out, [r, radial.control], torch.full_like(out, 1e-18))
    assert dict(counter.counts) == {}


def test_training_zeroes_weights_decaying_towards_subnormal(tiny_lj_config, tmp_path):
    """AdamW with lr · weight_decay = 0.99 multiplies every weight by 0.01 per step: after 20
    steps weights of 1e-3..10 sit at 1e-43..1e-39, subnormal in float32, unless flushed."""
    config = tiny_lj_config
    config["model"] = {"name": "facet", **TINY_MODELS["facet"]}
    config["dtype"] = "float32"
    config["optimizer"] = {"name": "adamw", "lr": 1e-3, "weight_decay": 990.0,
                           "clip_grad_norm": None}
    config["schedule"] = {"name": "plateau", "warmup_steps": 0}
    config["data"].update(max_frames=4, batch_size=3, valid_fraction=0.25)
    config["train"] = {"max_steps": 20, "progress": False}
    config["ema"] = {"decay": 0.9}
    train(config, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert state["progress"]["step"] == 20
    tensors = list(state["model"]["state_dict"].values()) + list(state["ema"]["shadow"])
    assert any(t.dtype == torch.float32 for t in tensors)
    assert sum(n_subnormal(t) for t in tensors) == 0
