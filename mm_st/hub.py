"""Publishing to the Hugging Face Hub: a trained model folder becomes a repo that ``SentenceTransformer("org/name")``
loads anywhere (no mm_st, no ``trust_remote_code``), with a model card from ``hub_cards/model_card.md.jinja``.

What is pushed (:func:`push_model`):

- an **adapter** (LoRA / DoRA, saved adapter-only) by default: sentence-transformers' files, the processor with the
  recipe's chat template, ``adapter_config.json`` whose ``base_model_name_or_path`` is the base model's **Hub id**
  (``base_model_id=``, ``--base-model``; else the id the model was trained from, or the id of a Hugging Face cache
  snapshot it was read from), checked to exist on the Hub; the repo is small and loads the base from the Hub;
- **merged full weights** (safetensors) with ``merge_adapter=True``, and whenever the base exists only on this
  machine (mm_st's embedded tiny backbone): an adapter pointing at a path nobody else has is never pushed, and the
  result says so;
- **full weights** for a model trained without an adapter.

The push is one Hub commit (files the folder no longer has are deleted in it, dot-files such as
``.gitattributes`` are kept), so a failed push changes nothing and re-running it completes it; files already on the
Hub are not uploaded again. A folder that is not a complete saved model, holds pickle weights, or would publish
a local path or a load-time flag is refused before anything is uploaded. The token comes from ``HF_TOKEN`` or
the login cache (``hf auth login``), is sent only in the ``Authorization`` header and never written, logged or
put in an error (:class:`PushError` messages are redacted). :func:`push_folder` is the same upload for any folder
(the synthesis recipe's dataset export).

Command line (a model trained earlier; recipes take ``--push-to-hub org/name``)::

    python -m mm_st push runs/vlm2vec/model org/vlm2vec-emoji            # adapter + card
    python -m mm_st push runs/vlm2vec/model org/vlm2vec-emoji --merge-adapter --private
    python -m mm_st push runs/e5v/model org/e5v --base-model llava-hf/llama3-llava-next-8b-hf
    python -m mm_st push runs/e5v/model org/e5v --dry-run out/           # write what would be pushed, upload nothing

Example (offline: the card and file list a push would make):
    >>> import tempfile
    >>> from mm_st import build_model
    >>> from mm_st.hub import plan_model_push
    >>> from mm_st.testing import tiny_model
    >>> folder = tempfile.mkdtemp()
    >>> build_model(tiny_model("llava_next"), recipe="e5v").save(folder)
    >>> plan = plan_model_push(folder, "org/e5v-tiny", workdir=tempfile.mkdtemp())
    >>> plan.kind, "model.safetensors" in plan.files, plan.files["README.md"].startswith(b"---")
    ('full', True, True)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mm_st.portable import cache_hub_id, hub_id_of_cache_path, is_local_path, scrub_json, state_of

logger = logging.getLogger(__name__)

CARD_TEMPLATE = "model_card.md.jinja"
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
# Written by a training stage next to the model; pushed (the card links them) except eval/ (mteb result files:
# the scores go to the card's model-index) and the trainer's checkpoints.
NOT_PUSHED = ("README.md", "eval", "checkpoints")
CARD_STAGES = "training_stages.json"  # a multi-stage recipe's stages and their scores, for the card (no local paths)
# What a training run says about itself for the card (its config lines with their sources, the languages of its
# data), written by mm_st.training next to the model: the card is rendered from the folder, never from training code.
CARD_RECORD = "recipe_card.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")  # safetensors only
LOCAL_VALUE = "<local path, not published>"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class PushError(RuntimeError):
    """A push that was refused or failed; the message says why and never holds the token."""


# -- token and errors ----------------------------------------------------------------------------


def hub_token(token: str | None = None) -> str:
    """The token to push with: ``token``, else ``HF_TOKEN``, else the login cache (``hf auth login``)."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PushError("No Hugging Face token: set HF_TOKEN or run `hf auth login` (the token is never written "
                        "anywhere by mm_st).")
    return token


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is shaped ``org/name``; a PushError naming it otherwise.

    >>> check_repo_id("org/mme5-tiny")
    'org/mme5-tiny'
    >>> check_repo_id("runs/x/model")
    Traceback (most recent call last):
    ...
    mm_st.hub.PushError: 'runs/x/model' is not a Hub repo id (expected 'org/name').
    """
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise PushError(f"{repo_id!r} is not a Hub repo id (expected 'org/name').")
    return repo_id


def check_push_target(repo_id: str) -> None:
    """What a recipe config checks (offline) when it will push: the repo id and that a token is available."""
    check_repo_id(repo_id)
    hub_token()


def check_hub_access(repo_id: str, token: str | None = None, endpoint: str | None = None) -> str:
    """The token, once the Hub at ``endpoint`` (default ``HF_ENDPOINT``) accepted it (``whoami``) as one that may
    write; what a recipe asks before training and ``mm_st push`` before merging, so that a wrong or read-only
    token fails at once, not after hours. Raises a redacted :class:`PushError`."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    token = hub_token(token)
    api = HfApi(endpoint=endpoint, token=token)
    who = _hub_call(f"Checking the token on {api.endpoint}", token, api.whoami, token)
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise PushError(f"The token (HF_TOKEN or `hf auth login`) is read-only on {api.endpoint}; pushing to "
                        f"{repo_id} needs a token that may write.")
    return token


def _hub_call(what: str, token: str | None, function: Any, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, any client or network error turned into a redacted :class:`PushError`.

    The PushError is raised after the ``except`` block, so the client's error (whose text may hold what a server
    echoed back, e.g. the token) is neither its cause nor its context and no traceback prints it.
    """
    from mm_st.synthesis.backends import redact

    try:
        return function(*args, **kwargs)
    except PushError:
        raise
    except Exception as exc:  # the client's HTTP errors, dropped connections, malformed answers, ...
        detail = " ".join(str(exc).split()) or type(exc).__name__
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and str(status) not in detail:
            detail = f"{status}: {detail}"
        message = redact(f"{what} failed ({type(exc).__name__}): {detail}", token)
    if status in (401, 403):
        hint = " Check that the token (HF_TOKEN or `hf auth login`) is valid here and may write to this repo's namespace."
    else:
        hint = (" A Hub commit is all or nothing: re-run the same push to complete it (files already on the Hub are "
                "not sent again).")
    raise PushError(message + hint)


# -- what a folder holds ---------------------------------------------------------------------------


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def check_publishable(model_dir: str | os.PathLike) -> Path:
    """Refuse (PushError) a folder that is not a complete saved sentence-transformers model with safetensors weights."""
    from mm_st.builder import check_saved_model

    folder = Path(model_dir)
    if not folder.is_dir():
        raise PushError(f"{str(folder)!r} is not a directory (expected a saved model folder, e.g. runs/<recipe>/model).")
    try:
        check_saved_model(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise PushError(f"Not pushed: {exc}") from None
    for name in ("config_sentence_transformers.json",):
        if not (folder / name).is_file():
            raise PushError(f"Not pushed: {str(folder)!r} is not a complete saved model: {name} is missing.")
    pickles = [p.relative_to(folder).as_posix() for p in _files(folder) if p.suffix in PICKLE_SUFFIXES
               and not p.relative_to(folder).parts[0] in NOT_PUSHED]
    if pickles:
        raise PushError(f"Not pushed: {str(folder)!r} holds pickle files {pickles}; mm_st pushes safetensors only "
                        "(save the model again with mm_st / sentence-transformers).")
    for module in json.loads((folder / "modules.json").read_text(encoding="utf-8")):
        if not module["type"].endswith(".Transformer"):
            continue
        where = folder / module["path"]
        if (where / ADAPTER_CONFIG).is_file():
            if not (where / ADAPTER_WEIGHTS).is_file():
                raise PushError(f"Not pushed: {str(where)!r} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}.")
        elif not (where / "config.json").is_file() or not list(where.glob("*.safetensors")):
            raise PushError(f"Not pushed: {str(where)!r} has no weights (config.json with model*.safetensors, or "
                            f"{ADAPTER_CONFIG} with {ADAPTER_WEIGHTS}).")
    return folder


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def redact_paths(value: Any) -> Any:
    """A recipe config with local paths (output and data directories of this machine) replaced by a marker."""
    if isinstance(value, dict):
        return {k: redact_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_paths(v) for v in value]
    if isinstance(value, str) and (is_local_path(value) or ("/" in value and os.path.exists(value))):
        return LOCAL_VALUE
    return value


def _is_hub_id(value: str | None) -> bool:
    return bool(value) and not is_local_path(value) and not os.path.exists(value) and bool(_REPO_ID.match(value))


# -- plan ----------------------------------------------------------------------------------------


@dataclass
class PushPlan:
    """What :func:`push_model` will upload: ``kind`` is ``"adapter"``, ``"merged"`` or ``"full"``."""

    model_dir: Path
    repo_id: str
    kind: str
    base_model: str | None  # the base model's Hub id (None: it exists only locally, or is unknown)
    local_base: str | None  # the base path the adapter was trained from, when it is a local directory
    files: dict[str, bytes | Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _base_of(model_dir: Path, recipe_config: dict, base_model_id: str | None) -> tuple[str | None, str | None]:
    """(base Hub id or None, local base path or None) of a saved model."""
    adapter = _read_json(model_dir / ADAPTER_CONFIG)
    trained_from = adapter.get("base_model_name_or_path") or recipe_config.get("model")
    local = trained_from if trained_from and (is_local_path(trained_from) or os.path.exists(trained_from)) else None
    if base_model_id:
        return check_repo_id(base_model_id), local
    if _is_hub_id(trained_from):
        return trained_from, None
    if local and hub_id_of_cache_path(local):
        return cache_hub_id(local) or hub_id_of_cache_path(local)[0], local
    return None, local


def plan_model_push(model_dir: str | os.PathLike, repo_id: str, *, merge_adapter: bool = False,
                    base_model_id: str | None = None, workdir: str | os.PathLike, license: str | None = None,
                    languages: list[str] | None = None, base_card: Any = None) -> PushPlan:
    """Decide what to push (see the module doc), merge the adapter into ``workdir`` if needed, render the card.

    Offline: nothing here talks to the Hub (``base_card``, the base model's ``ModelCard`` when known, gives the
    licence). Raises :class:`PushError` when the folder cannot be published.
    """
    model_dir = check_publishable(model_dir)
    check_repo_id(repo_id)
    recipe_config = _read_json(model_dir / "recipe_config.json")
    base, local_base = _base_of(model_dir, recipe_config, base_model_id)
    adapter = (model_dir / ADAPTER_CONFIG).is_file()
    notes = []
    if not adapter:
        kind, source = "full", model_dir
    elif merge_adapter or base is None:
        kind = "merged"
        if base is None:  # the note goes into the card: it names no local path
            what = "mm_st's embedded tiny backbone" if recipe_config.get("model", "") is None else "a local directory"
            notes.append(f"The base model ({what}) exists only on the machine that trained this model, so the "
                         "adapter is merged into full weights: an adapter pointing at a path nobody else has is never "
                         "pushed. Give --base-model org/name to push the adapter for a base model that is on the Hub.")
        source = merge_adapter_weights(model_dir, Path(workdir) / "merged")
    else:
        kind, source = "adapter", model_dir
    files: dict[str, bytes | Path] = {}
    for path in _files(source):
        relative = path.relative_to(source).as_posix()
        if relative.split("/")[0] in NOT_PUSHED:
            continue
        files[relative] = path
    for extra in ("training_curve.png", "eval_results.json", "recipe_config.json", CARD_RECORD):  # merged: from the trained folder
        if extra not in files and (model_dir / extra).is_file():
            files[extra] = model_dir / extra
    problems = []
    for name, value in list(files.items()):
        if not name.endswith(".json"):
            continue
        data = json.loads(Path(value).read_text(encoding="utf-8"))
        if name == "recipe_config.json":
            redacted = redact_paths(data)
            changed = redacted != data
            data = redacted
        else:
            changed = bool(scrub_json(data, name, base if kind == "adapter" else None))
        if changed:  # unchanged files are uploaded as they are
            files[name] = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()
        problems += state_of(data, name)
    card = render_model_card(model_dir, repo_id=repo_id, kind=kind, base_model=base, notes=notes,
                             license=license, languages=languages, base_card=base_card,
                             has_curve="training_curve.png" in files)
    files["README.md"] = card.encode("utf-8")
    machine_paths = {str(p) for p in (model_dir.resolve(), model_dir.resolve().parent, local_base)
                     if p and len(Path(p).parts) >= 3}  # e.g. /runs/e5v: never in what is pushed
    problems += [f"{name} names {path!r}" for name, value in files.items() if isinstance(value, bytes)
                 for path in machine_paths if path.encode() in value]
    if problems:
        raise PushError("Not pushed: these files would publish state of this machine: " + "; ".join(problems))
    return PushPlan(model_dir, repo_id, kind, base, local_base, files, notes)


# -- merging -------------------------------------------------------------------------------------


def merge_adapter_weights(model_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Save a copy of an adapter model with the adapter merged into the base weights (peft's own merge), as full
    safetensors weights that load without peft. Needs the base model (its path or id in ``adapter_config.json``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from mm_st.builder import load_model, own_module_code

    try:  # a shipped module file (latent attention) runs only when it is mm_st's own code
        model = load_model(str(model_dir), device="cpu", trust_remote_code=own_module_code(Path(model_dir)))
    except Exception as exc:
        raise PushError(f"Could not load {str(model_dir)!r} with its base model to merge the adapter "
                        f"({type(exc).__name__}: {exc}).") from None
    backbone = model[0].model
    names = list(getattr(backbone, "peft_config", {}) or {})
    layers = [(name, module) for name, module in backbone.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, layer in layers:  # peft's merge (LoRA and DoRA), then the plain base layer takes the wrapper's place
        layer.merge(safe_merge=True)
        parent, _, child = name.rpartition(".")
        setattr(backbone.get_submodule(parent) if parent else backbone, child, layer.get_base_layer())
    if names:
        backbone.delete_adapter(names)  # transformers forgets the adapter: save_pretrained writes full weights
    # transformers 5.23 keeps the key mapping of the adapter load (it adds peft's "base_model.model." prefix) and
    # save_pretrained reverts it; without it the weights are saved as a model built from its config is.
    if getattr(backbone, "_weight_conversions", None) is not None:
        del backbone._weight_conversions
    left = [name for name, _ in backbone.named_parameters() if "lora_" in name or ".base_layer." in name]
    if left or getattr(backbone, "_hf_peft_config_loaded", False):
        raise PushError(f"Merging the adapter of {str(model_dir)!r} left adapter parameters {left[:3]}; not pushed.")
    out_dir = Path(out_dir)
    model.save(str(out_dir))
    (out_dir / "README.md").unlink(missing_ok=True)
    from safetensors import safe_open

    for weights in out_dir.glob("*.safetensors"):
        with safe_open(str(weights), framework="pt") as handle:
            wrong = [key for key in handle.keys() if key.startswith("base_model.model.") or "lora_" in key]
        if wrong:
            raise PushError(f"The merged weights of {str(model_dir)!r} kept adapter keys ({wrong[:3]}); not pushed.")
    return out_dir


# -- card ----------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6}) +(.+?)\s*$")


def markdown_sections(text: str) -> dict[str, str]:
    """Each heading's section (heading line to the next heading of the same or a higher level), by title; headings
    inside code blocks and HTML comments are not headings.

    >>> markdown_sections("# A\\nx\\n```\\n# not\\n```\\n## B\\ny\\n# C\\n")["A"]
    '# A\\nx\\n```\\n# not\\n```\\n## B\\ny'
    """
    lines = text.splitlines()
    heads, fenced, comment = [], False, False
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            if "<!--" in line and "-->" not in line.split("<!--", 1)[1]:
                comment = True
            elif comment and "-->" in line:
                comment = False
            elif not comment and (match := _HEADING.match(line)):
                heads.append((index, len(match[1]), match[2]))
    sections = {}
    for n, (start, level, title) in enumerate(heads):
        end = next((s for s, lv, _ in heads[n + 1:] if lv <= level), len(lines))
        sections.setdefault(title, "\n".join(lines[start:end]).strip("\n"))
    return sections


def _st_card(model_dir: Path) -> tuple[dict, dict[str, str]]:
    """sentence-transformers' own card of the folder: (YAML metadata, sections by title)."""
    readme = model_dir / "README.md"
    if not readme.is_file():
        return {}, {}
    from huggingface_hub import ModelCard

    card = ModelCard(readme.read_text(encoding="utf-8"), ignore_metadata_errors=True)
    return card.data.to_dict(), markdown_sections(card.text)


def _shift(section: str, levels: int) -> str:
    """``section`` with every heading outside code blocks ``levels`` deeper."""
    out, fenced = [], False
    for line in section.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        if not fenced and _HEADING.match(line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out)


def _latest_mteb_results(model_dir: Path) -> list[Path]:
    """The mteb result file of each task's last evaluation in ``model_dir/eval`` (``step-N`` revisions)."""
    latest: dict[str, tuple[int, Path]] = {}
    for path in sorted((model_dir / "eval").rglob("*.json")):
        match = re.fullmatch(r"step-(\d+)", path.parent.name)
        if path.name in ("model_meta.json",) or not match:
            continue
        step = int(match[1])
        if step >= latest.get(path.stem, (-1, path))[0]:
            latest[path.stem] = (step, path)
    return [path for _, path in sorted(latest.values())]


def _mteb_eval_results(model_dir: Path, repo_id: str, embedded: bool) -> list[Any]:
    """huggingface_hub ``EvalResult`` objects of the last evaluation in ``model_dir/eval`` (mteb's own conversion),
    one model-index entry per task and subset: a task without subsets is told apart by its name as the dataset
    config (tasks of one layout share their dataset's path)."""
    import mteb

    from mm_st.evaluation.registry import register

    register()  # mm_st's tasks, which mteb's conversion looks up (also with MM_ST_MTEB_PLUGIN=0)

    results = []
    for path in _latest_mteb_results(model_dir):
        try:
            task_result = mteb.TaskResult.from_disk(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # mteb marks the model-index form deprecated in favour of .eval_results/
                converted = task_result.get_hf_eval_results()
        except Exception as exc:  # a result file of a task this mteb does not know: left out of the model-index
            logger.warning("Evaluation results %s not in the model card: %s", path.name, exc)
            continue
        for result in converted:
            if result.dataset_config == "default":
                result.dataset_config = task_result.task_name
            if embedded and not result.dataset_type.startswith("mm_st/"):
                # the embedded default evaluates on held-out bundled emoji in a benchmark's layout, not on it
                result.dataset_type = "mm_st/emoji-heldout"
                result.dataset_name = result.dataset_name.replace(task_result.task_name, "held-out emoji (XTD layout)")
            results.append(result)
    return results


# A flattened score key of the training evaluators (mm_st.training.evaluators) -> (task, metric) in the card's table.
_SCORE_KEYS = ((re.compile(r"mbeir/(?P<task>[^/]+)/(?P<metric>.+)"), None),
               (re.compile(r"mbeir_(?P<metric>.+)"), "mean over the tasks"),
               (re.compile(r"xtd_(?P<metric>.+)"), "XTDT2IRetrieval (mean over languages)"))


def _score_row(key: str) -> tuple[str, str]:
    for pattern, task in _SCORE_KEYS:
        if match := pattern.fullmatch(key):
            return task or match["task"], match["metric"]
    return "", key


def score_table(model_dir: Path) -> dict[str, Any]:
    """What the card's evaluation table shows for a saved model: ``columns`` (label -> flattened scores: the
    untrained model, then the model after training, or after each stage for a multi-stage recipe, read from the
    stages file it wrote) and ``rows`` ((task, metric, key), every key any column holds, grouped by task)."""
    scores = _read_json(model_dir / "eval_results.json")
    stages = _read_json(model_dir / CARD_STAGES)
    if stages.get("stages"):
        columns = {"untrained": stages.get("untrained") or {},
                   **{f"after stage {s['stage']}": s["after"] for s in stages["stages"]}}
    else:
        columns = {"before training": scores.get("before") or {}, "after training": scores.get("after") or {}}
    keys = list(dict.fromkeys(k for column in columns.values() for k in column))
    rows = sorted(((*_score_row(k), k) for k in keys), key=lambda row: (row[0].startswith(("mean", "XTD")), row))
    return {"columns": columns if rows else {}, "rows": rows, "stages": stages.get("stages") or []}


def _license_of(base_card: Any, local_base: str | None) -> str | None:
    if base_card is not None:
        return getattr(base_card.data, "license", None)
    if local_base and (Path(local_base) / "README.md").is_file():
        from huggingface_hub import ModelCard

        return ModelCard.load(Path(local_base) / "README.md", ignore_metadata_errors=True).data.license
    return None


def _config_lines(model_dir: Path, recipe_config: dict) -> list[str]:
    """``field = value  (source)`` for each recipe config value, as the run wrote them (:data:`CARD_RECORD`); a
    folder without that record (saved by an older mm_st) gets ``field = value`` lines of its recipe config."""
    return _read_json(model_dir / CARD_RECORD).get("config_lines") or [
        f"  {k} = {v!r}" for k, v in sorted(redact_paths(recipe_config).items())]


def _shipped_code(model_dir: Path) -> dict[str, str]:
    """``{module class: code file}`` of the custom modules a saved folder ships (``modules.json`` type ``<file>.<Class>``
    with ``<file>.py`` in the folder), which loading runs only with ``trust_remote_code=True``."""
    modules = _read_json(model_dir / "modules.json") or []
    shipped = {}
    for entry in modules if isinstance(modules, list) else []:
        stem, _, name = str(entry.get("type", "")).rpartition(".")
        if stem and "." not in stem and (model_dir / f"{stem}.py").is_file():
            shipped[name] = f"{stem}.py"
    return shipped


def render_model_card(model_dir: str | os.PathLike, *, repo_id: str, kind: str, base_model: str | None,
                      notes: list[str] | None = None, license: str | None = None, languages: list[str] | None = None,
                      base_card: Any = None, has_curve: bool | None = None, template: str | os.PathLike | None = None) -> str:
    """The model card (``hub_cards/model_card.md.jinja``) for a saved model folder; ``huggingface_hub.ModelCard``
    parses it. The YAML header and model-index come from huggingface_hub's ``ModelCardData`` with the mteb results
    converted by mteb; sentence-transformers' own sections that still hold (architecture, training details, framework
    versions, citations) are kept once."""
    import jinja2
    from huggingface_hub import ModelCard, ModelCardData

    from mm_st import metadata, templates
    from mm_st.model_card import remote_code_note

    model_dir = Path(model_dir)
    recipe_config = _read_json(model_dir / "recipe_config.json")
    meta = metadata.read_dir(model_dir) or {}
    recipe = recipe_config.get("recipe") or meta.get("recipe")
    embedded = bool(recipe_config) and recipe_config.get("model") is None and recipe_config.get("data") is None
    modalities = list(_read_json(model_dir / "sentence_bert_config.json").get("modality_config") or {"text": {}})
    st_data, st_sections = _st_card(model_dir)
    eval_results = _mteb_eval_results(model_dir, repo_id, embedded) if (model_dir / "eval").is_dir() else []
    eval_tasks = [path.stem for path in _latest_mteb_results(model_dir)] if (model_dir / "eval").is_dir() else []
    local_base = _base_of(model_dir, recipe_config, base_model)[1]
    if languages is None:
        languages = _read_json(model_dir / CARD_RECORD).get("languages") or None
    datasets = [recipe_config[k] for k in ("data", "synthetic_data") if _is_hub_id(recipe_config.get(k))]
    data = ModelCardData(
        library_name="sentence-transformers",
        pipeline_tag=st_data.get("pipeline_tag") or "sentence-similarity",
        tags=list(dict.fromkeys([*(st_data.get("tags") or []), "mteb", "mm_st", *([recipe] if recipe else []),
                                 *(["image-text-retrieval"] if "image" in modalities else [])])),
        base_model=base_model,
        base_model_relation=None if base_model is None else "adapter" if kind == "adapter" else "finetune",
        datasets=datasets or None, language=languages or None,
        license=license or _license_of(base_card, local_base),
        widget=st_data.get("widget"), model_name=repo_id if eval_results else None,
        eval_results=eval_results or None,
    )
    recipe_spec = templates.RECIPES.get(recipe) if recipe else None
    kept = {title: st_sections[title] for title in ("Model Sources", "Full Model Architecture", "Training Details")
            if title in st_sections}
    bibtex = st_sections.get("BibTeX", "")
    description = [line for line in st_sections.get("Model Description", "").splitlines()[1:]
                   if line.startswith("- ") and "<!--" not in line]
    path = Path(template) if template else None
    source = path.read_text(encoding="utf-8") if path else \
        resources.files("mm_st.hub_cards").joinpath(CARD_TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    shipped = _shipped_code(model_dir)
    text = env.from_string(source).render(
        card_data=data.to_yaml(), repo_id=repo_id, kind=kind, base_model=base_model, notes=notes or [],
        remote_code=remote_code_note(shipped), latent_attention="LatentAttentionPooling" in shipped,
        recipe=recipe, family=meta.get("family"), prompt_format=meta.get("prompt_format"), embedded=embedded,
        modalities=modalities, uses_instruction=bool(recipe_spec and recipe_spec.uses_instruction),
        description=description, table=score_table(model_dir), eval_tasks=eval_tasks, eval_results=eval_results,
        languages=languages or [],
        eval_languages=recipe_config.get("eval_languages") or [],
        recipe_config=recipe_config, config_lines=_config_lines(model_dir, recipe_config) if recipe_config else [],
        datasets=datasets, local_value=LOCAL_VALUE, license=data.license,
        has_curve=(model_dir / "training_curve.png").is_file() if has_curve is None else has_curve,
        st_sections={k: _shift(v, 1) if k == "Training Details" else v for k, v in kept.items()},
        st_bibtex="\n".join(bibtex.splitlines()[1:]).strip("\n"),
    )
    card = ModelCard(text)  # parses the YAML header (raises on a broken card)
    return str(card)


# -- upload --------------------------------------------------------------------------------------


@dataclass
class PushResult:
    """A finished push: the repo URL, the new commit (None for a dry run), what was pushed and why."""

    repo_url: str
    commit: str | None
    kind: str
    base_model: str | None
    files: list[str]
    notes: list[str]


def upload_files(files: dict[str, bytes | Path], repo_id: str, *, repo_type: str = "model", private: bool | None = None,
                 token: str | None = None, endpoint: str | None = None, commit_message: str = "Upload with mm_st") -> tuple[str, str]:
    """Create the repo if needed and make ONE commit holding exactly ``files`` (path in repo -> content or file);
    files of the repo not in ``files`` are deleted in that commit, except dot-files (``.gitattributes``).
    Returns (repo URL, commit id). Errors are :class:`PushError` (redacted)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    check_repo_id(repo_id)
    token = hub_token(token)
    api = HfApi(endpoint=endpoint, token=token)
    url = str(_hub_call(f"Creating {repo_type} repo {repo_id}", token, api.create_repo, repo_id, repo_type=repo_type,
                        private=private, exist_ok=True))
    existing = _hub_call(f"Listing {repo_id}", token, api.list_repo_files, repo_id, repo_type=repo_type)
    operations = [CommitOperationAdd(name, value if isinstance(value, bytes) else str(value))
                  for name, value in sorted(files.items())]
    operations += [CommitOperationDelete(name) for name in existing
                   if name not in files and not any(part.startswith(".") for part in name.split("/"))]
    info = _hub_call(f"Pushing {len(files)} files to {repo_id}", token, api.create_commit, repo_id, operations,
                     commit_message=commit_message, repo_type=repo_type)
    return url, info.oid


def push_folder(folder: str | os.PathLike, repo_id: str, *, repo_type: str = "dataset", private: bool | None = None,
                token: str | None = None, endpoint: str | None = None, commit_message: str = "Upload with mm_st") -> str:
    """Push every file of ``folder`` as one commit (see :func:`upload_files`); returns the repo URL."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{str(folder)!r} is not a directory.")
    files = {p.relative_to(folder).as_posix(): p for p in _files(folder)}
    if not files:
        raise PushError(f"{str(folder)!r} is empty; nothing to push.")
    return upload_files(files, repo_id, repo_type=repo_type, private=private, token=token, endpoint=endpoint,
                        commit_message=commit_message)[0]


def _check_base_on_hub(api: Any, plan: PushPlan, token: str, workdir: str) -> Any:
    """The base model must be on the Hub (the adapter points at it); when it was trained from a local copy, its
    safetensors files must have the same names and sizes there. Returns the base model's card (for its licence)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    def look_up() -> Any:
        try:
            return api.model_info(plan.base_model, files_metadata=True)
        except RepositoryNotFoundError:
            return None

    info = _hub_call(f"Looking up the base model {plan.base_model}", token, look_up)
    if info is None:
        raise PushError(f"The base model {plan.base_model!r} is not on {api.endpoint} (or this token cannot see it): "
                        "push the base first, or push merged weights (--merge-adapter). Nothing was pushed.")
    if plan.local_base and Path(plan.local_base).is_dir():
        local = {p.name: p.stat().st_size for p in Path(plan.local_base).glob("*.safetensors")}
        remote = {s.rfilename: s.size for s in info.siblings or [] if s.rfilename.endswith(".safetensors")}
        if local and local != remote:
            raise PushError(f"The base model {plan.base_model!r} on the Hub is not the one this adapter was trained "
                            f"from ({plan.local_base}): safetensors files {sorted(remote.items())} there, "
                            f"{sorted(local.items())} here. Nothing was pushed.")
    if any(s.rfilename == "README.md" for s in info.siblings or []):
        from huggingface_hub import ModelCard

        card = _hub_call(f"Reading the card of {plan.base_model}", token, api.hf_hub_download, plan.base_model,
                         "README.md", cache_dir=workdir)  # a temporary cache, not the user's
        return ModelCard.load(card, ignore_metadata_errors=True)
    return None


def push_model(model_dir: str | os.PathLike, repo_id: str, *, private: bool | None = None, merge_adapter: bool = False,
               base_model_id: str | None = None, token: str | None = None, endpoint: str | None = None,
               commit_message: str | None = None, license: str | None = None, languages: list[str] | None = None,
               dry_run: str | os.PathLike | None = None) -> PushResult:
    """Push a saved model folder (e.g. ``runs/<recipe>/model``) to ``repo_id`` as one commit (see the module doc).

    Args:
        private: create the repo private (an existing repo keeps its visibility); None: the Hub's default.
        merge_adapter: push merged full weights instead of the adapter.
        base_model_id: the base model's Hub id, when the adapter was trained from a local copy of it.
        token: default ``HF_TOKEN`` / the login cache. endpoint: default ``HF_ENDPOINT`` (the Hub).
        license, languages: card metadata (default: the base model's licence; the training languages if known).
        dry_run: write the files that would be pushed into this folder and upload nothing.
    """
    check_repo_id(repo_id)
    check_publishable(model_dir)  # offline refusals first, then the token, then the merge (which loads the model)
    token = None if dry_run is not None else check_hub_access(repo_id, token, endpoint)
    with tempfile.TemporaryDirectory(prefix="mm_st-push-") as workdir:
        plan = plan_model_push(model_dir, repo_id, merge_adapter=merge_adapter, base_model_id=base_model_id,
                               workdir=workdir, license=license, languages=languages)
        if dry_run is not None:
            out = Path(dry_run)
            for name, value in plan.files.items():
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                if isinstance(value, bytes):
                    (out / name).write_bytes(value)
                else:
                    shutil.copyfile(value, out / name)
            return PushResult(str(out), None, plan.kind, plan.base_model, sorted(plan.files), plan.notes)
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token)
        if plan.kind == "adapter":
            base_card = _check_base_on_hub(api, plan, token, workdir)
            if base_card is not None and license is None:  # the card again, now with the base model's licence
                plan = plan_model_push(model_dir, repo_id, base_model_id=plan.base_model, workdir=workdir,
                                       languages=languages, base_card=base_card)
        what = {"adapter": "adapter", "merged": "merged weights", "full": "weights"}[plan.kind]
        url, commit = upload_files(plan.files, repo_id, repo_type="model", private=private, token=token,
                                   endpoint=endpoint, commit_message=commit_message or f"Upload {what} with mm_st")
    return PushResult(url, commit, plan.kind, plan.base_model, sorted(plan.files), plan.notes)


def push_trained_model(config: Any, model_dir: str | os.PathLike, folder: Any = None) -> PushResult | None:
    """What a recipe does when ``config.push_to_hub`` is set and its model is trained: push ``model_dir`` and print
    the result. ``folder`` (the run's :class:`~mm_st.training.outputs.RunFolder`) records the push: a re-run of a
    finished run pushes only when no push of the same settings completed (None then). A failed push is a
    :class:`PushError` that says how to finish it."""
    target = {"repo_id": config.push_to_hub, "merge_adapter": bool(getattr(config, "merge_adapter", False)),
              "base_model": getattr(config, "hub_base_model", None)}
    done = folder.pushed() if folder is not None else None
    if done is not None and done["target"] == target:
        print(f"{model_dir} is already pushed to {config.push_to_hub} (commit {done['commit']}); nothing to push.",
              flush=True)
        return None
    try:
        result = push_model(model_dir, config.push_to_hub, private=getattr(config, "private", False) or None,
                            merge_adapter=target["merge_adapter"], base_model_id=target["base_model"])
    except PushError as exc:
        message = (f"{exc} The trained model is saved in {model_dir}: re-run the same command, or "
                   f"`python -m mm_st push {model_dir} {config.push_to_hub}`, to push it.")
    else:
        if folder is not None:
            folder.mark_pushed(target, result.commit)
        print("\n".join([*result.notes, f"pushed {result.kind} to {result.repo_url} (commit {result.commit})"]), flush=True)
        return result
    raise PushError(message)


# -- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m mm_st push MODEL_DIR ORG/NAME [...]``; errors print one line and exit with 2."""
    parser = argparse.ArgumentParser(prog="python -m mm_st push", description=(
        "Push a saved model folder to the Hugging Face Hub (adapter only when its base model is on the Hub, else "
        "merged weights), with a model card. Token: HF_TOKEN or `hf auth login`; endpoint: HF_ENDPOINT."))
    parser.add_argument("model_dir", help="saved model folder, e.g. runs/vlm2vec/model")
    parser.add_argument("repo_id", help="Hub repo id, org/name")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--merge-adapter", action="store_true", help="push merged full weights instead of the adapter")
    parser.add_argument("--base-model", help="Hub id of the base model when the adapter was trained from a local copy")
    parser.add_argument("--license", help="licence for the card (default: the base model's)")
    parser.add_argument("--language", action="append", help="language code for the card (repeat)")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--dry-run", metavar="OUT_DIR", help="write the files that would be pushed here; upload nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = push_model(args.model_dir, args.repo_id, private=args.private or None,
                            merge_adapter=args.merge_adapter, base_model_id=args.base_model, license=args.license,
                            languages=args.language, commit_message=args.message, dry_run=args.dry_run)
    except PushError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(note)
    if result.commit is None:
        print(f"dry run: {result.kind}, {len(result.files)} files written to {result.repo_url}: {', '.join(result.files)}")
    else:
        print(f"pushed {result.kind} to {result.repo_url} (commit {result.commit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
