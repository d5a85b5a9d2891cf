import logging

import ase.io
import numpy as np
import pytest
import torch
import yaml

from mlip.data.stats import composition
from mlip.errors import ConfigError
from mlip.models import build, load_model, save_model
from mlip.train import train
from mlip.train.config import TrainingConfig
from mlip.train.setup import prepare_data


def test_finetune_on_new_elements_keeps_weights_and_refits_e0(
    tiny_config, tmp_path, hfo2_frames, caplog
):
    tiny_config["train"]["max_steps"] = 3
    base_path = train(tiny_config, tmp_path / "base")
    base = load_model(base_path)
    ase.io.write(tmp_path / "hfo2.xyz", hfo2_frames)
    tiny_config["data"] = {
        "train": str(tmp_path / "hfo2.xyz"),
        "valid_fraction": 0.2,
        "batch_size": 2,
        "cutoff": 4.0,
    }
    tiny_config["model"] = {}
    tiny_config["finetune"] = {"from": str(base_path)}
    tiny_config["train"]["max_steps"] = 1
    tiny_config["optimizer"]["lr"] = 1e-300  # one step that leaves the weights as they are
    with caplog.at_level(logging.WARNING, logger="mlip.train"):
        tuned = load_model(train(tiny_config, tmp_path / "tuned").parent / "final.pt")
    # Hf:O is 1:2 in every frame: the new Hf cannot be separated from O (kept closest to its E0)
    assert "do not separate the E0 of new element(s) Hf from the others" in caplog.text
    assert tuned.species == sorted(set(base.species) | {8, 72})
    assert torch.equal(tuned.sigma.detach(), base.sigma.detach())
    assert torch.equal(tuned.epsilon.detach(), base.epsilon.detach())
    for z in (1, 6, 7):  # elements absent from the new data keep their E0
        assert float(tuned.reference_energies[tuned.species.index(z)]) == float(
            base.reference_energies[base.species.index(z)]
        )
    config = yaml.safe_load((tmp_path / "tuned" / "config.yaml").read_text())
    assert config["finetune"]["from"] == str(base_path)
    # the refitted E0 of Hf and O satisfy the least-squares normal equations Aᵀ(E_ref − E_pred) = 0
    train_frames = prepare_data(TrainingConfig.load(tiny_config).data).train
    ((graph, targets),) = train_frames.eval_graphs(len(train_frames))
    residual = (
        (targets.energy - tuned(graph, compute_forces=False).energy).detach().numpy()
    )
    counts = composition(graph.n_atoms.numpy(), graph.atomic_numbers.numpy(), [8, 72])
    np.testing.assert_allclose(counts.T @ residual, 0.0, atol=1e-6)


def test_finetune_rejects_architecture_keys_and_another_cutoff(tiny_config, tmp_path):
    save_model(build("lennard_jones", species=[1, 6, 7, 8], cutoff=4.0), tmp_path / "base.pt")
    tiny_config["finetune"] = {"from": str(tmp_path / "base.pt")}
    with pytest.raises(ConfigError, match=r"fine-tuning takes the architecture from .*base.pt; "
                       r"remove model keys \['epsilon', 'sigma'\]"):
        train(tiny_config, tmp_path / "a")
    tiny_config["model"] = {}
    tiny_config["data"]["cutoff"] = 5.0
    with pytest.raises(ConfigError, match=r"data.cutoff = 5.0 Å differs from the cutoff 4.0 Å of"):
        train(tiny_config, tmp_path / "b")


def test_finetune_refit_on_one_molecule_keeps_e0_near_the_model(tiny_config, tmp_path):
    tiny_config["train"]["max_steps"] = 2
    base = load_model(train(tiny_config, tmp_path / "base"))
    tiny_config["model"] = {}
    tiny_config["finetune"] = {"from": str(tmp_path / "base" / "best.pt")}
    tiny_config["data"].pop("isolated_atoms")
    tuned = load_model(train(tiny_config, tmp_path / "tuned"))
    # one composition: only Σ_z n_z E0_z is determined; each E0 moves by < 1 eV, not hundreds
    for z in (1, 6, 7, 8):
        old = float(base.reference_energies[base.species.index(z)])
        assert abs(float(tuned.reference_energies[tuned.species.index(z)]) - old) < 1.0
