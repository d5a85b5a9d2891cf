"""The accuracy benchmark's extra held-out sets: training frames are removed, bad specs refused."""

from pathlib import Path

import numpy as np
import pytest
from accuracy import parse_extra_tests, unseen_frames  # noqa: E402
from ase import Atoms


def _molecule(shift: float) -> Atoms:
    return Atoms("H2O", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, shift]])


def test_unseen_frames_drops_exact_and_keeps_moved_frames() -> None:
    seen = [_molecule(0.0), _molecule(0.5)]
    candidates = [_molecule(0.0), _molecule(0.1), _molecule(0.5), Atoms("H", [[0, 0, 0]])]
    kept = unseen_frames(candidates, seen)
    assert [round(float(a.positions[2, 2]), 3) for a in kept if len(a) == 3] == [0.1]
    assert len(kept) == 2  # the moved water and the single H (no frame of that size seen)
    nearly = _molecule(0.0)
    nearly.positions[0, 0] += 1e-9  # a rounding-level copy still counts as seen
    assert unseen_frames([nearly], seen) == []
    assert np.allclose(kept[0].positions, _molecule(0.1).positions)


def test_parse_extra_tests(tmp_path: Path) -> None:
    frames = tmp_path / "hot.xyz"
    frames.write_text("")
    assert parse_extra_tests([f"3bpa=hot={frames}"]) == {"3bpa": {"hot": frames}}
    for bad in (f"nosuch=hot={frames}", "3bpa=hot=/no/such/file.xyz", "3bpa"):
        with pytest.raises(SystemExit, match="--extra-test"):
            parse_extra_tests([bad])
