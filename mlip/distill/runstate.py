"""The state file of a distillation run, ``RUN_DIR/distill.json``: which stages are complete.

A stage is recorded as complete (with its own small summary) only after all its outputs are
written; the file is replaced atomically. A rerun skips every complete stage whose outputs are
still there; the first stage that is not complete (or whose outputs went missing) and every
stage after it are run again from scratch (their folders are emptied first).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

from mlip.data.manifest import atomic_write_bytes
from mlip.errors import ConfigError

__all__ = ["RunState", "STATE_NAME"]

STATE_NAME = "distill.json"
FORMAT = "mlip-distill"
VERSION = 1

log = logging.getLogger("mlip.distill")


class RunState:
    """Completed stages of ``run_dir`` (in the order they completed) and their summaries.

    Args:
        run_dir: the run directory (created).
        fingerprint: the run's settings; a rerun with different settings is refused.
        inputs: what the run was started from (teacher, structures); must match too.

    Raises:
        ConfigError: ``run_dir`` holds a run with other settings or inputs (naming them), or a
            state file that is not one of ``mlip distill``.
    """

    def __init__(self, run_dir: Path, fingerprint: dict, inputs: dict) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / STATE_NAME
        self._invalid = False
        if self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{self.path} is not a readable distill state ({exc})") from None
            if saved.get("format") != FORMAT:
                raise ConfigError(f"{self.path} is not a state file of mlip distill")
            for what, now in (("settings", fingerprint), ("inputs", inputs)):
                old = saved.get(what, {})
                changed = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
                if changed:
                    diffs = ", ".join(f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in changed)
                    raise ConfigError(
                        f"{self.run_dir} holds a distillation with other {what} ({diffs}); "
                        "rerun it with the same ones or choose another RUN_DIR")
            self.data = saved
        else:
            self.data = {"format": FORMAT, "version": VERSION, "settings": fingerprint,
                         "inputs": inputs, "stages": {}}
            self._write()

    def done(self, stage: str, outputs: Sequence[Path]) -> dict[str, Any] | None:
        """The summary of ``stage`` if it is complete and its outputs exist, else None.

        Once a stage is found missing, every later call answers None too (later stages built
        on it are redone); the record of every stage from there on is dropped.
        """
        stages = self.data["stages"]
        if self._invalid or stage not in stages:
            self._invalidate_from(stage)
            return None
        missing = [p for p in outputs if not Path(p).exists()]
        if missing:
            log.info("stage %s: %s is missing, redoing it and the stages after it", stage,
                     missing[0])
            self._invalidate_from(stage)
            return None
        log.info("stage %s: complete, skipped", stage)
        return stages[stage]

    def _invalidate_from(self, stage: str) -> None:
        stages = self.data["stages"]
        if stage in stages:
            names = list(stages)
            for name in names[names.index(stage):]:
                del stages[name]
            self._write()
        self._invalid = True

    def complete(self, stage: str, summary: dict[str, Any]) -> dict[str, Any]:
        """Record ``stage`` as complete with ``summary`` (JSON-serialisable); returns it."""
        self.data["stages"][stage] = summary
        self._write()
        return summary

    def fresh_dir(self, name: str) -> Path:
        """``run_dir/name``, emptied (a stage that runs again starts from nothing)."""
        path = self.run_dir / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def _write(self) -> None:
        atomic_write_bytes(self.path, json.dumps(self.data, indent=1).encode())
