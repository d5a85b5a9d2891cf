"""`mlip data` verbs end to end on bundled data."""

from __future__ import annotations

import json

import ase.io
import numpy as np

from mlip.cli import main


def test_import_info_split_stats_export(tmp_path, bundled_file, capsys):
    store = str(tmp_path / "store.h5")
    src = [bundled_file("hfo2_scan_vasp.xyz"), bundled_file("random1000156.traj")]
    assert main(["data", "import", *src, "-o", store, "--level-of-theory", "mixed"]) == 0
    assert "imported 46 frames" in capsys.readouterr().out
    assert main(["data", "info", store, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    frames = [a for f in src for a in ase.io.read(f, index=":")]
    symbols = [s for a in frames for s in a.get_chemical_symbols()]
    assert info["frames"] == 46 and info["elements"] == {
        s: symbols.count(s) for s in sorted(set(symbols))
    }
    assert info["coverage"] == {"energy": 1.0, "forces": 1.0, "stress": round(10 / 46, 6)}
    assert info["metadata"]["level_of_theory"] == "mixed"
    assert (
        main(
            [
                "data",
                "split",
                store,
                "--by",
                "trajectory",
                "--fractions",
                "0.5",
                "0.25",
                "0.25",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("split by trajectory (") and " train=" in out
    assert main(["data", "stats", store, "--cutoff", "3.0"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_frames"] == 46 and stats["avg_num_neighbors"] > 0
    out = tmp_path / "back.xyz"
    assert main(["data", "export", store, "-o", str(out)]) == 0
    back = ase.io.read(out, index=":")
    assert len(back) == 46
    assert np.array_equal(back[3].get_stress(), ase.io.read(src[0], index=3).get_stress())


def test_errors_are_one_line(tmp_path, bundled_file, capsys):
    assert main(["data", "info", bundled_file("3bpa_iso_atoms.xyz")]) == 2
    assert "is a file, not an mlip store" in capsys.readouterr().err
    assert (
        main(["data", "import", bundled_file("PROVENANCE.md"), "-o", str(tmp_path / "s.h5")]) == 2
    )
    assert "cannot tell the format" in capsys.readouterr().err
