"""Every verb refuses nonsense before anything runs, in one line, and shows every default."""

from __future__ import annotations

import argparse

import pytest
import torch
import yaml

from mlip.cli import build_parser, main


@pytest.fixture
def no_cuda(monkeypatch):
    """A torch build without CUDA, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.version, "cuda", None)


def _refused(argv: list[str], message: str, capsys) -> str:
    """``mlip ARGV`` exits with 2 and prints exactly ``mlip VERB: error: MESSAGE`` (returned)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"mlip {argv[0]}: error: {message}"]
    assert captured.out == ""
    return captured.err.strip()


@pytest.mark.parametrize("options, message", [
    (["--steps", "-5"], "--steps = -5: allowed an integer >= 0"),
    (["--steps", "many"], "--steps = 'many': allowed an integer >= 0"),
    (["--friction", "-1"], "--friction = -1: allowed a number >= 0"),
    (["--log-interval", "0"], "--log-interval = 0: allowed an integer >= 1"),
    (["--timestep", "nan"], "--timestep = nan: allowed a number > 0"),
    (["--ensemble", "nvx"], "--ensemble = 'nvx': allowed one of 'nve', 'nvt', 'npt'"),
    (["--pressure", "1", "--ensemble", "nvt"],
     "--pressure = 1: allowed only with --ensemble npt (got --ensemble = 'nvt')"),
    (["--ensemble", "npt", "--thermostat", "nhc"],
     "--thermostat = 'nhc': allowed only with --ensemble nvt (got --ensemble = 'npt')"),
    (["--ensemble", "nve", "--friction", "0.1"],
     "--friction = 0.1: allowed only with --ensemble nvt or npt (got --ensemble = 'nve')"),
    (["--max-atoms-per-call", "0"],
     "--max-atoms-per-call = 0: allowed an integer >= 1 or 'auto', 'all'"),
])
def test_md_refuses_nonsense_before_running(files, capsys, options, message):
    assert _refused(["md", str(files / "lj.pt"), str(files / "in.xyz"), "-o", str(files / "md.xyz"),
              *options], message, capsys)
    assert not (files / "md.xyz").exists()


def test_md_restart_refuses_what_it_cannot_change(files, capsys):
    base = ["md", str(files / "lj.pt"), str(files / "in.xyz"), "--restart", str(files / "x.ckpt")]
    assert _refused(base + ["--friction", "0.1"], "--friction = 0.1: allowed only on a fresh "
                    "run (a --restart keeps the checkpoint's)", capsys)
    assert _refused(base + ["--thermostat", "nhc"], "--thermostat = 'nhc': allowed on a "
                    "--restart only with --ensemble", capsys)


def test_md_restart_passes_only_the_options_given_again(files, monkeypatch):
    import mlip.md

    calls = []
    monkeypatch.setattr(mlip.md, "run_md", lambda *a, **k: calls.append(k) or _Done())
    base = ["md", str(files / "lj.pt"), str(files / "in.xyz"), "--restart", str(files / "x.ckpt")]
    assert main(base + ["--steps", "20"]) == 0
    assert main(base + ["--temperature", "900", "--ensemble", "nvt", "--thermostat", "nhc"]) == 0
    kept = [{k: call[k] for k in ("ensemble", "temperature", "timestep", "pressure") if k in call}
            for call in calls]
    assert kept == [{}, {"ensemble": "nvt_nhc", "temperature": 900.0}]
    assert calls[0]["restart"] == str(files / "x.ckpt") and calls[0]["steps"] == 20


class _Done:
    """What the CLI reads of an MD result."""

    failures: dict = {}

    def summary(self) -> str:
        return "done"


@pytest.mark.parametrize("options, message", [
    (["--fmax", "-1"], "--fmax = -1: allowed a number > 0"),
    (["--steps", "-5"], "--steps = -5: allowed an integer >= 0"),
    (["--pressure", "1"], "--pressure = 1: allowed only with --cell (got --cell = False)"),
])
def test_relax_refuses_nonsense(files, capsys, options, message):
    argv = ["relax", str(files / "lj.pt"), str(files / "in.xyz"), *options]
    assert _refused(argv, message, capsys)
    assert not (files / "in.relaxed.xyz").exists()


@pytest.mark.parametrize("options, message", [
    (["--max-frames", "0"], "--max-frames = 0: allowed an integer >= 1"),
    (["--batch-size", "0"], "--batch-size = 0: allowed an integer >= 1"),
    (["--split", "everything"], "--split = 'everything': allowed one of 'train', 'val', 'test'"),
])
def test_eval_refuses_nonsense(files, capsys, options, message):
    argv = ["eval", str(files / "lj.pt"), str(files / "in.xyz"), *options]
    assert _refused(argv, message, capsys)


@pytest.mark.parametrize("verb", ["md", "relax", "eval"])
def test_cuda_on_a_cpu_torch_is_one_line_for_every_verb(files, capsys, no_cuda, verb):
    assert _refused([verb, str(files / "lj.pt"), str(files / "in.xyz"), "--device", "cuda"],
             "--device = 'cuda': allowed auto or cpu (this torch build has no CUDA)", capsys)


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=fast", "optimizer.lr = 'fast': allowed a number > 0"),
    ("data.valid_fraction=1.5", "data.valid_fraction = 1.5: allowed a number in [0, 1)"),
    ("data.test_fraction=0.95", "data.valid_fraction + data.test_fraction = 1.05: allowed < 1"),
    ("device=cuda", "device = 'cuda': allowed auto or cpu (this torch build has no CUDA)"),
])
def test_train_refuses_nonsense_config_values(tmp_path, capsys, no_cuda, override, message):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"train": "bundled:3bpa_train_300K.xyz",
                                               "valid_fraction": 0.1}}))
    assert _refused(["train", str(config), "-o", str(tmp_path / "run"), "--set", override], message,
             capsys)
    assert not (tmp_path / "run").exists()


def test_invalid_yaml_is_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("data: [unclosed\n")
    assert _refused(["train", str(config)], f"{config}: invalid YAML at line 2, column 1: while "
             "parsing a flow sequence expected ',' or ']', but got '<stream end>'", capsys)


def test_data_verbs_refuse_nonsense(tmp_path, capsys):
    store = str(tmp_path / "s.h5")
    assert _refused(["data", "split", store, "--fractions", "0.9", "0.2"],
             "sum of --fractions = 1.1: allowed = 1", capsys)
    assert _refused(["data", "split", store, "--fractions", "0.5", "0.3", "0.1", "0.1"],
             "--fractions = [0.5, 0.3, 0.1, 0.1]: allowed a list of 2 to 3 numbers in [0, 1]",
             capsys)
    assert _refused(["data", "import", "a.xyz"], "--output is required: allowed text", capsys)
    assert _refused(["data", "import", "a.xyz", "-o", store, "--compression", "zip"],
             "--compression = 'zip': allowed one of 'zstd', 'lz4', 'gzip', 'lzf', 'none'", capsys)
    assert _refused(["data", "stats", store, "--cutoff", "-1"],
             "--cutoff = -1: allowed a number > 0", capsys)
    assert not (tmp_path / "s.h5").exists()


def test_usage_errors_are_one_line(capsys):
    for argv, message in ((["md", "m.pt", "in.xyz", "--stpes", "5"],
                           "mlip: error: unrecognized arguments: --stpes 5 (see mlip --help)"),
                          (["data", "split"], "mlip data split: error: the following arguments "
                           "are required: store (see mlip data split --help)")):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
        assert capsys.readouterr().err.splitlines() == [message]


def _verbs(parser: argparse.ArgumentParser, prefix: str = "mlip"):
    """(name, parser) of every verb, nested ones (``mlip data split``) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _verbs(sub, f"{prefix} {name}")
            return
    yield prefix, parser


def test_help_shows_every_default():
    verbs = dict(_verbs(build_parser()))
    assert {"mlip md", "mlip relax", "mlip train", "mlip eval", "mlip data split"} <= set(verbs)
    for name, parser in verbs.items():
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert "(default: " in (action.help or ""), f"{name} {action.option_strings}"
    args = verbs["mlip train"].parse_args(["--set", "a=1", "--set", "b=[1, 2]", "c.yaml"])
    assert args.set == ["a=1", "b=[1, 2]"] and args.config == "c.yaml"
    text = verbs["mlip md"].format_help()
    assert "--steps STEPS" in text and "(default: 1000)" in text and "[fs] (default: 1.0)" in text
