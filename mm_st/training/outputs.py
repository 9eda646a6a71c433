"""A run's output folder: what the run wrote there, and nothing else, is what it may remove.

Every output a stage creates in its ``--output-dir`` (``checkpoints/``, ``model/``, the embedded
default's ``data/`` and ``base-model/``, ``mining-cache/``, ...) is recorded in
``<output_dir>/.mm_st_run.json`` before it is written. So:

- ``--resume never`` removes only recorded outputs, and refuses (naming the path and its flag) when
  one of them is, or holds, an input of the new run (``--model runs/x/model --output-dir runs/x``);
- an existing path the run would write into but did not record (a user's own ``data/`` in
  ``--output-dir .``) is refused, never overwritten or removed;
- a run that fails before its first optimizer step removes what it created and leaves the folder as
  it was (:meth:`RunFolder.rollback`);
- a finished run is marked with its config, so re-running the same command does nothing (except finish a
  ``--push-to-hub`` that did not complete: a completed push is recorded too).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = RunFolder(Path(tempfile.mkdtemp()))
    >>> folder.claim("checkpoints").mkdir()
    >>> folder.recorded
    ['checkpoints']
    >>> (folder.root / "notes.txt").write_text("mine")
    4
    >>> folder.claim("notes.txt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: ...notes.txt' exists and was not written by an mm_st run...
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

MANIFEST = ".mm_st_run.json"


class RunFolder:
    """The output folder of one run and the record of what runs wrote there (see module doc)."""

    def __init__(self, root: Path, writer: bool = True) -> None:
        self.root = Path(root)
        self.writer = writer  # one process per node writes; the others only read
        self._state = self._read()
        manifest = self.root / MANIFEST
        self._before = (manifest.read_text(encoding="utf-8") if manifest.is_file() else None, self.root.is_dir(),
                        _paths(self.root))

    # -- the record ------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if path.is_file():
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{str(path)!r} is not valid JSON ({exc}); it records what runs wrote in "
                                 f"{str(self.root)!r}. Use another --output-dir.") from exc
            if isinstance(state, dict) and isinstance(state.get("outputs"), list):
                return state
            raise ValueError(f"{str(path)!r} is not an mm_st run record. Use another --output-dir.")
        return {"outputs": [], "finished": None}

    def _write(self) -> None:
        if not self.writer:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self._state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.root / MANIFEST)

    @property
    def recorded(self) -> list[str]:
        return list(self._state["outputs"])

    def claim(self, name: str) -> Path:
        """``root / name``, recorded as this run's output before anything is written there.

        A path that exists but was never recorded (not written by an mm_st run) is refused.
        """
        path = self.root / name
        if not self.writer:
            return path  # the writing process of this node records and checks
        if name not in self._state["outputs"]:
            self.check_claimable(name)
            self._state["outputs"].append(name)
            self._write()
        return path

    def check_claimable(self, name: str) -> None:
        """Refuse (before anything is written) a path of the run's that exists but no mm_st run wrote."""
        path = self.root / name
        if name not in self._state["outputs"] and (path.exists() or path.is_symlink()):
            raise FileExistsError(f"{str(path)!r} exists and was not written by an mm_st run in "
                                  f"{str(self.root)!r}; mm_st does not write into or remove it. Use another "
                                  "--output-dir (or move it away).")

    # -- finished runs ---------------------------------------------------------------------------

    def finished(self) -> dict[str, Any] | None:
        """What the last finished run recorded (``{"config", "steps", "model_dir"}``), or None."""
        return self._state.get("finished")

    def mark_finished(self, config: dict[str, Any], steps: int, model_dir: Path) -> None:
        self._state["finished"] = {"config": config, "steps": steps, "model_dir": str(model_dir)}
        self._write()

    def mark_unfinished(self) -> None:
        if self._state.get("finished") is not None or self._state.get("pushed") is not None:
            self._state["finished"] = self._state["pushed"] = None
            self._write()

    def pushed(self) -> dict[str, Any] | None:
        """The Hub push of the finished run's model that completed (``{"target", "commit"}``), or None."""
        return self._state.get("pushed")

    def mark_pushed(self, target: dict[str, Any], commit: str) -> None:
        self._state["pushed"] = {"target": target, "commit": commit}
        self._write()

    # -- removing ----------------------------------------------------------------------------------

    def start_over(self, inputs: dict[str, str]) -> None:
        """Remove every recorded output (``--resume never``); refuse, removing nothing, when one of them is,
        or holds, an input of the run (``inputs``: flag -> path)."""
        for name in self.recorded:
            target = (self.root / name).resolve()
            for flag, value in inputs.items():
                source = Path(value).expanduser()
                if not source.exists():
                    continue  # a Hub id, or not there: nothing of it can be removed
                source = source.resolve()
                if source == target or target in source.parents:
                    raise ValueError(f"--resume never would remove {str(self.root / name)!r}, which this run reads "
                                     f"({flag} {value}). Nothing was removed; use another --output-dir.")
        unknown = [p.name for p in ("checkpoints", "model") if (self.root / p).exists() and p not in self.recorded]
        if unknown:
            raise FileExistsError(f"{str(self.root)!r} holds {unknown} not recorded by an mm_st run (an older mm_st or "
                                  "another tool wrote them); nothing was removed. Remove them yourself or use another "
                                  "--output-dir.")
        if not self.writer:
            return
        for name in self.recorded:
            _remove(self.root / name)
        self._state = {"outputs": [], "finished": None}
        self._write()

    def rollback(self) -> None:
        """Remove every file and folder created in the output folder since this object was made, and restore
        the record: the folder is left as it was before the run (files written there are new files: the
        embedded default's data and backbone live in folders named by their seed and size)."""
        if not self.writer:
            return
        manifest_text, had_root, existing = self._before
        for path in sorted(_paths(self.root) - existing, key=lambda p: len(p.parts)):
            if path.exists() or path.is_symlink():
                _remove(path)
        if manifest_text is not None:
            (self.root / MANIFEST).write_text(manifest_text, encoding="utf-8")
        else:
            (self.root / MANIFEST).unlink(missing_ok=True)
        if not had_root and self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()
        self._state = self._read()


def _paths(root: Path) -> set[Path]:
    """Every path under ``root`` (files and folders, symbolic links not followed)."""
    if not root.is_dir():
        return set()
    found = set()
    for folder, dirs, files in os.walk(root):
        found.update(Path(folder, name) for name in dirs + files)
    return found


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


# -- checkpoints ---------------------------------------------------------------------------------------

# What the trainer writes into checkpoint-N, in this order (transformers' Trainer._save_checkpoint with
# sentence-transformers' _save): config_sentence_transformers.json, each module (config, weights, tokenizer),
# modules.json, training_args.bin, optimizer.pt, scheduler.pt, rng_state*.pth, trainer_state.json. A kill can
# stop it after any of them; a resume needs all of them.
CHECKPOINT_FILES = ("config_sentence_transformers.json", "modules.json", "optimizer.pt", "scheduler.pt",
                    "trainer_state.json")
CHECKPOINT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def checkpoint_gaps(path: Path) -> list[str]:
    """What a checkpoint folder lacks for a resume ([] when it is complete): its files, each module's folder,
    the weights, the RNG state, and a ``trainer_state.json`` that reads as JSON and names the folder's step."""
    path = Path(path)
    gaps = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
    if not any((path / name).is_file() for name in CHECKPOINT_WEIGHTS):
        gaps.append(" or ".join(CHECKPOINT_WEIGHTS))
    if not any(path.glob("rng_state*.pth")):
        gaps.append("rng_state.pth")
    if (path / "modules.json").is_file():
        try:
            modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
            gaps += [f"{m['path']}/" for m in modules if m.get("path") and not (path / m["path"]).is_dir()]
        except (ValueError, TypeError, KeyError):
            gaps.append("a readable modules.json")
    if (path / "trainer_state.json").is_file():
        try:
            step = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
        except (ValueError, TypeError, KeyError):
            step = None
        if f"checkpoint-{step}" != path.name:
            gaps.append(f"a trainer_state.json of step {path.name.rsplit('-', 1)[-1]}")
    return gaps


def checkpoints_newest_first(folder: Path) -> list[Path]:
    """The ``checkpoint-<step>`` folders under ``folder``, the highest step first."""
    if not Path(folder).is_dir():
        return []
    found = [p for p in Path(folder).iterdir()
             if p.is_dir() and p.name.startswith("checkpoint-") and p.name[len("checkpoint-"):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len("checkpoint-"):]), reverse=True)


def last_complete_checkpoint(folder: Path) -> tuple[Path | None, dict[str, list[str]]]:
    """(the newest complete checkpoint under ``folder`` or None, the newer incomplete ones: name -> what each lacks).

    A run killed while the trainer wrote a checkpoint leaves that folder incomplete; resuming from it fails,
    resuming from the one before continues the run exactly."""
    skipped: dict[str, list[str]] = {}
    for path in checkpoints_newest_first(folder):
        gaps = checkpoint_gaps(path)
        if not gaps:
            return path, skipped
        skipped[path.name] = gaps
    return None, skipped


def resume_checkpoint(config: Any, output_dir: Path) -> str | None:
    """The checkpoint to resume from (``--resume auto|always``): the newest COMPLETE one, None to start fresh."""
    return resume_choice(config, output_dir)[0]


def resume_choice(config: Any, output_dir: Path) -> tuple[str | None, dict[str, list[str]]]:
    """(the checkpoint to resume from or None, the newer incomplete checkpoints skipped: name -> what each lacks)."""
    folder = output_dir / "checkpoints"
    last, skipped = last_complete_checkpoint(folder)
    if config.resume == "always" and last is None:
        lacking = "".join(f"; {name} is incomplete (lacks {', '.join(gaps)})" for name, gaps in skipped.items())
        raise FileNotFoundError(f"--resume always: no complete checkpoint in {str(folder)!r} to resume from{lacking} "
                                "(use --resume auto to start a new run there).")
    if config.resume == "never":
        return None, {}
    return (str(last) if last is not None else None), skipped
