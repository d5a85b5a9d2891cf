"""What a run says: resume of a finished run, the progress bar, the log of DDP ranks."""

import io
import logging

import pytest

from mlip.errors import ConfigError
from mlip.train import train
from mlip.train.distributed import init_distributed


def test_resume_after_the_budget_is_spent_says_which_limit(tiny_config, tmp_path):
    tiny_config["train"]["max_steps"] = 2
    train(tiny_config, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"nothing to resume in .*run: the run already reached "
                       r"train.max_steps = 2 \(step 2; e.g. --set train.max_steps=4\)"):
        train(None, tmp_path / "run", resume=True)
    train(None, tmp_path / "run", overrides=["train.max_steps=3"], resume=True)  # raised: trains


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream, drawn", [(io.StringIO, False), (_Terminal, True)])
def test_progress_bar_only_on_a_terminal(tiny_config, tmp_path, monkeypatch, stream, drawn):
    tiny_config["train"].update(progress=True, max_steps=2)
    err = stream()
    monkeypatch.setattr("sys.stderr", err)
    train(tiny_config, tmp_path / "run")
    assert ("epoch 0" in err.getvalue()) == drawn


def test_ranks_other_than_zero_log_errors_only(monkeypatch):
    logger = logging.getLogger("mlip")
    level = logger.level
    monkeypatch.setenv("RANK", "1")
    try:
        init_distributed("cpu")
        assert not logging.getLogger("mlip.train").isEnabledFor(logging.WARNING)
        assert logging.getLogger("mlip.train").isEnabledFor(logging.ERROR)
    finally:
        logger.setLevel(level)


def test_a_binary_config_file_is_a_one_line_error(tmp_path):
    from mlip.cli import main

    (tmp_path / "garbage.yaml").write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(ConfigError, match=r"garbage.yaml: not a YAML config \(not UTF-8 text"):
        train(tmp_path / "garbage.yaml", tmp_path / "run")
    assert main(["train", str(tmp_path / "garbage.yaml"), "-o", str(tmp_path / "run")]) == 2
