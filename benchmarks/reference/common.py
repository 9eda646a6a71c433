"""Shared parts of the reference cross-check: import stubs, the tiny data, token-id and embedding comparison.

The reference code (VLM2Vec, mmE5) is imported from the checkout given with ``--upstream``; nothing of it
lives in this repository. Both call their top-level package ``src``, so one process checks one reference.

- :func:`import_upstream` puts the checkout first on ``sys.path`` and installs a meta-path finder that stubs
  the modules the compared code imports but never calls (:data:`STUBS`: the vendored backbone and processor
  classes, which transformers' own replace, and ``qwen_vl_utils``): a stubbed name raises if it is ever
  called, so a comparison can never silently run a stub. Packages whose ``__init__.py`` imports every
  (video) dataset are registered bare (:data:`BARE`: their submodules import as usual, the ``__init__`` is
  not run).
- :func:`write_data` writes a tiny MMEB-train layout and a tiny mmE5-synthetic layout from the bundled emoji.
- :func:`mm_st_row_ids` / :func:`reference_row_ids` give each row's unpadded token ids on either side.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import platform
import re
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Iterable

IMAGES = 32  # emoji 0-31 of load_emoji("train")

# The commits the figures in benchmarks/RESULTS.md come from, and a file that tells the checkouts apart.
PINNED = {"vlm2vec": "6e1e1d42d4cba85ae4db4d3f7a25cba2465d1e16", "mme5": "4818cdfebe46f761421ae7edff8aaabf1f947bad"}
REPOSITORY = {"vlm2vec": "TIGER-AI-Lab/VLM2Vec", "mme5": "haon-chen/mmE5"}
MARKER = {"vlm2vec": "src/model/model.py", "mme5": "src/collator.py"}

# Per reference: the modules the compared code imports but never calls (replaced by transformers' own classes,
# or not installed: qwen_vl_utils), and the packages whose __init__.py imports every (video) dataset.
STUBS = {
    "vlm2vec": ("src.model.baseline_backbone", "src.model.vlm_backbone", "qwen_vl_utils"),
    "mme5": ("src.vlm_backbone",),
}
BARE = {"vlm2vec": ("src.data", "src.data.dataset", "src.data.collator", "src.data.eval_dataset"), "mme5": ()}
# Names the compared code imports from an installed package that no longer has them (and never calls): stubbed
# only where missing. torchvision 0.29 dropped ``torchvision.io.write_video`` (VLM2Vec's vision_utils imports it).
MISSING_NAMES = {"vlm2vec": {"torchvision.io": ("write_video",)}, "mme5": {}}


# ------------------------------------------------------------------------------------------------
# Import stubs


class StubbedCall(RuntimeError):
    """A stubbed upstream name was called: the comparison reached code it claims not to use."""


def _stub_object(module: str, name: str) -> type:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise StubbedCall(f"{module}.{name} is stubbed by benchmarks/reference/common.py and must not be called")

    # A class, so that it can be subclassed, used in isinstance checks and in dict literals at import time.
    namespace = {"__new__": lambda cls, *a, **k: refuse(), "from_pretrained": staticmethod(refuse)}
    return type(name, (), {**namespace, "__module__": module})


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _stub_object(self.__name__, name)
        setattr(self, name, value)
        return value


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, prefixes: Iterable[str]) -> None:
        self.prefixes = tuple(prefixes)
        self.stubbed: list[str] = []

    def matches(self, fullname: str) -> bool:
        return any(fullname == p or fullname.startswith(p + ".") for p in self.prefixes)

    def find_spec(self, fullname, path=None, target=None):
        if not self.matches(fullname):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []  # a package: stubbed submodules import too
        return module

    def exec_module(self, module) -> None:
        self.stubbed.append(module.__name__)


def _bare_package(name: str, directory: Path) -> None:
    """Register package ``name`` (directory ``directory``) without running its ``__init__.py``."""
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(directory)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def import_upstream(upstream: Path, reference: str) -> _StubFinder:
    """Make the checkout's ``src`` importable, with :data:`STUBS` stubbed and :data:`BARE` registered bare."""
    upstream = Path(upstream).resolve()
    if not (upstream / MARKER[reference]).is_file():
        raise SystemExit(f"--upstream {str(upstream)!r} has no {MARKER[reference]}: pass the root of a "
                         f"{REPOSITORY[reference]} checkout (benchmarks/reference/README.md).")
    commit = upstream_commit(upstream)
    if commit != PINNED[reference]:
        print(f"warning: {REPOSITORY[reference]} checkout at {commit}, not the pinned {PINNED[reference]}",
              file=sys.stderr)
    if "src" in sys.modules:
        raise RuntimeError("a module named 'src' is already imported; run one reference per process")
    sys.path.insert(0, str(upstream))
    finder = _StubFinder(STUBS[reference])
    sys.meta_path.insert(0, finder)
    for module_name, names in MISSING_NAMES[reference].items():
        module = importlib.import_module(module_name)
        for name in names:
            if not hasattr(module, name):
                setattr(module, name, _stub_object(module_name, name))
                finder.stubbed.append(f"{module_name}.{name}")
    for name in BARE[reference]:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            package = ".".join(parts[:depth])
            if package not in sys.modules:
                _bare_package(package, upstream.joinpath(*parts[:depth]))
    return finder


def upstream_commit(upstream: Path) -> str:
    """The checkout's commit: ``HEAD`` of a clone, else its ``UPSTREAM_COMMIT`` file (``git archive`` exports)."""
    import subprocess

    upstream = Path(upstream).resolve()
    try:
        git = ["git", "-C", str(upstream), "rev-parse", "--show-toplevel", "HEAD"]
        top, head = subprocess.run(git, capture_output=True, text=True, check=True).stdout.split()
        if Path(top).resolve() == upstream:  # not a directory inside some other repository
            return head
    except (OSError, ValueError, subprocess.CalledProcessError):
        pass
    marker = upstream / "UPSTREAM_COMMIT"
    if marker.is_file():
        return marker.read_text().strip()
    return "unknown (not a git clone, and no UPSTREAM_COMMIT file)"


# ------------------------------------------------------------------------------------------------
# Tiny data


def write_data(root: Path) -> dict[str, Path]:
    """Write the tiny datasets under ``root``; returns their directories (``images``, ``mmeb``, ``synth``).

    - ``images/e{i}.png``: emoji 0-31 of ``mm_st.data.load_emoji("train")``.
    - ``mmeb/{ImageNet_1K,MSCOCO_t2i,OK-VQA}/original-00000-of-00001.jsonl``: MMEB-train rows: image +
      instruction -> label, caption -> ``<|image_1|>\\nRepresent the given image.``, image + question -> answer.
    - ``synth/{Classification,Retrieval}/train-00000-of-00001.jsonl``: mmE5-synthetic rows, negatives written
      as Python-literal strings as mmE5's data does: image + instruction -> label with 3 text negatives; a text
      query (ending in a space) -> image + caption with 1-3 image + text negatives (mmE5 pads them to 3).
    """
    from mm_st.data import load_emoji

    root = Path(root)
    images, mmeb, synth = root / "images", root / "mmeb", root / "synth"
    images.mkdir(parents=True, exist_ok=True)
    emoji = load_emoji("train").select(range(IMAGES))
    names = emoji["name_en"]
    for i, image in enumerate(emoji["image"]):
        image.convert("RGB").save(images / f"e{i}.png")

    def write(path: Path, rows: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    def img(i: int) -> str:
        return f"e{i % IMAGES}.png"

    write(mmeb / "ImageNet_1K" / "original-00000-of-00001.jsonl", [
        {"qry": "<|image_1|>\nRepresent the given image for classification\n", "qry_image_path": img(i),
         "pos_text": names[i], "pos_image_path": "", "neg_text": "", "neg_image_path": ""}
        for i in range(8)])  # fmt: skip
    write(mmeb / "MSCOCO_t2i" / "original-00000-of-00001.jsonl", [
        {"qry": f"Find me an everyday image that matches the given caption: A picture of {names[i]}.",
         "qry_image_path": "", "pos_text": "<|image_1|>\nRepresent the given image.", "pos_image_path": img(i),
         "neg_text": "", "neg_image_path": ""}
        for i in range(8, 16)])  # fmt: skip
    write(mmeb / "OK-VQA" / "original-00000-of-00001.jsonl", [
        {"qry": f"<|image_1|>\nRepresent the given image with the following question: What is shown here, {names[i]}?",
         "qry_image_path": img(i), "pos_text": names[i].split()[0], "pos_image_path": "",
         "neg_text": "", "neg_image_path": ""}
        for i in range(16, 24)])  # fmt: skip
    write(synth / "Classification" / "train-00000-of-00001.jsonl", [
        {"qry": "<|image_1|>\nIdentify the emoji shown in the image: ", "qry_image_path": img(i),
         "pos_text": names[i], "pos_image_path": "",
         "neg_text": str([names[(i + k) % IMAGES] for k in (1, 2, 3)]), "neg_image_path": str(["", "", ""])}
        for i in range(8)])  # fmt: skip
    retrieval = []
    for i in range(8, 16):
        count = 1 + i % 3  # 1-3 negatives: mmE5 pads to negative_ratio by repeating the last one
        negatives = [(i + k) % IMAGES for k in range(1, count + 1)]
        retrieval.append({
            "qry": f"Retrieve an image with its caption for: {names[i]} ", "qry_image_path": "",
            "pos_text": f"<|image_1|>\nA picture of {names[i]}.", "pos_image_path": img(i),
            "neg_text": str([f"<|image_1|>\nA picture of {names[j]}." for j in negatives]),
            "neg_image_path": str([img(j) for j in negatives]),
        })  # fmt: skip
    write(synth / "Retrieval" / "train-00000-of-00001.jsonl", retrieval)
    return {"images": images, "mmeb": mmeb, "synth": synth}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------
# Comparison


def mm_st_row_ids(features: dict[str, Any]) -> list[list[int]]:
    """Each row's unpadded token ids from mm_st features (modality-grouped features in caller order)."""
    from mm_st.model import GROUP_ROWS_KEY, GROUPS_KEY

    if GROUPS_KEY in features:
        rows: dict[int, list[int]] = {}
        for group, caller_rows in zip(features[GROUPS_KEY], features[GROUP_ROWS_KEY]):
            ids = reference_row_ids(group["input_ids"], group["attention_mask"])
            rows.update(zip(caller_rows.tolist(), ids))
        return [rows[i] for i in range(len(rows))]
    return reference_row_ids(features["input_ids"], features["attention_mask"])


def reference_row_ids(input_ids, attention_mask) -> list[list[int]]:
    """Each row's token ids where the attention mask is set (either padding side)."""
    return [[int(t) for t, m in zip(ids.tolist(), mask.tolist()) if m] for ids, mask in zip(input_ids, attention_mask)]


def compare_ids(mine: list[list[int]], theirs: list[list[int]], tokenizer) -> dict[str, Any]:
    """Rows equal / total, and the first differing row decoded both ways."""
    equal = [a == b for a, b in zip(mine, theirs)]
    out: dict[str, Any] = {"ids_equal": sum(equal), "rows": len(mine)}
    out["all_ids_equal"] = all(equal) and len(mine) == len(theirs)
    if not out["all_ids_equal"]:
        row = equal.index(False) if False in equal else min(len(mine), len(theirs))
        out["first_mismatch"] = {
            "row": row,
            "mm_st": tokenizer.decode(mine[row]) if row < len(mine) else None,
            "reference": tokenizer.decode(theirs[row]) if row < len(theirs) else None,
        }
    return out


def shorten(text: str) -> str:
    """Runs of one special token written once with a count: ``<image>x144``."""
    return re.sub(r"(<[^<>]+>)\1+", lambda m: f"{m.group(1)}x{len(m.group(0)) // len(m.group(1))}", text)


def max_abs_diff(a, b) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


# ------------------------------------------------------------------------------------------------
# Scripts


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", type=Path, required=True, help="root of the reference checkout (see README.md)")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for result_*.json (default: a new temporary one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return parser


def setup(args: argparse.Namespace) -> None:
    """Offline, quiet, ``--threads`` torch threads, ``--out`` created (a new temporary directory if not given)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.basicConfig(level=logging.WARNING)  # before VLM2Vec's basic_utils asks for DEBUG (a no-op then)
    import torch

    torch.set_num_threads(args.threads)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="mm_st-reference-"))
    args.out.mkdir(parents=True, exist_ok=True)


def quiet_logging() -> None:
    """VLM2Vec's basic_utils sets the root logger to DEBUG at import; keep the output readable."""
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()


def machine(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "torch_threads": args.threads, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def write_result(args: argparse.Namespace, name: str, result: dict[str, Any]) -> Path:
    path = args.out / f"result_{name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path
