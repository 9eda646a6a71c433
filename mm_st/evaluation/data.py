"""Where evaluation data comes from (a local directory or the Hugging Face Hub), checked before use.

Every data set is configured the same way: an argument, else an environment variable, else the
Hub default. A value that is an existing directory (or looks like a path) is read locally; anything
else is a Hub dataset repo id (:func:`mm_st.io.is_local`). A missing or incomplete local directory raises
:class:`DataLayoutError`, which names the expected layout and the first missing file.

========  ======================  ======================  ======================================
data set  data variable           images variable         Hub default
========  ======================  ======================  ======================================
MMEB      ``MM_ST_MMEB_DATA``     ``MM_ST_MMEB_IMAGES``   ``TIGER-Lab/MMEB-eval``
MMEB-V2   ``MM_ST_MMEB_V2_DATA``  none (frames inside)    none (a local root: ``mmeb_v2_files``)
XTD       ``MM_ST_XTD_DATA``      ``MM_ST_XTD_IMAGES``    none (give a path or repo)
CIRR      ``MM_ST_CIRR_DATA``     ``MM_ST_CIRR_IMAGES``   none (give a path or repo)
M-BEIR    ``MM_ST_MBEIR_DATA``    ``MM_ST_MBEIR_IMAGES``  none (a local root only)
========  ======================  ======================  ======================================

Example:
    >>> import os, tempfile
    >>> from mm_st.evaluation.data import read_mmeb_rows, DataLayoutError
    >>> try:
    ...     read_mmeb_rows("VOC2007", tempfile.mkdtemp())
    ... except DataLayoutError as err:
    ...     print(str(err).splitlines()[0][:40])
    MMEB data for 'VOC2007' not found in loc
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mm_st.io import PathOutsideRoot, hub_snapshot, is_local, resolve_inside

MMEB_HUB = "TIGER-Lab/MMEB-eval"
MMEB_COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")

MMEB_LAYOUT = """\
Expected layout of a local MMEB-eval directory (a mirror of the Hub dataset TIGER-Lab/MMEB-eval):
  <data>/<Dataset>/test-00000-of-00001.parquet   one folder per dataset (all *.parquet or *.jsonl in it),
                                                 or a single file <data>/<Dataset>.parquet / <Dataset>.jsonl
      columns: qry_text (str), qry_img_path (str, "" = no image), tgt_text (list of str),
               tgt_img_path (list of str, "" = no image); the first target is the positive
  <images>/<Dataset>/...                         the Hub's images.zip extracted; image paths in the rows are
                                                 relative to <images> = <data>/eval_images (else <data>/images,
                                                 else <data>), or image_root= / $MM_ST_MMEB_IMAGES"""

XTD_LAYOUT = """\
Expected layout of a local XTD directory (the XTD10 files of adobe-research/Cross-lingual-Test-Dataset-XTD10):
  <data>/test_image_names.txt            one image file name per line (1000 MSCOCO images)
  <data>/test_1kcaptions_<lang>.txt      line i is the caption of image i, one file per language
                                         (en, es, it, ko, pl, ru, tr, zh; ja may be named _jp)
  <images>/<image file name>             <images> = <data>/images (default), or image_root= / $MM_ST_XTD_IMAGES
                                         (e.g. the MSCOCO train2014 folder)"""

CIRR_LAYOUT = """\
Expected layout of a local CIRR directory (the official release, github.com/Cuberick-Orion/CIRR):
  <data>/captions/cap.rc2.<split>.json         list of {"pairid", "reference", "target_hard", "caption",
                                               "img_set": {"members": [...]}}
  <data>/image_splits/split.rc2.<split>.json   {image name: relative image path, e.g. "./dev/dev-0-0-img0.png"}
  <images>/<relative image path>               <images> = <data>/img_raw (default, else <data>),
                                               or image_root= / $MM_ST_CIRR_IMAGES (the NLVR2 images)"""


MBEIR_LAYOUT = """\
Expected layout of a local M-BEIR root (TIGER-Lab/M-BEIR with its images extracted, or the embedded emoji data
that mm_st.training.embedded.write_mbeir writes):
  <data>/query/test/mbeir_<task>_test.jsonl            one file per task, e.g. mbeir_visualnews_task0_test.jsonl,
                                                       mbeir_emoji_task0_test.jsonl; rows: qid, query_txt,
                                                       query_img_path, query_modality, pos_cand_list
  <data>/cand_pool/local/mbeir_<pool>_cand_pool.jsonl  the task's local pool, e.g. mbeir_visualnews_task0_cand_pool.jsonl,
                                                       mbeir_mscoco_task0_test_cand_pool.jsonl, mbeir_emoji_test_cand_pool.jsonl;
                                                       rows: did, txt, img_path, modality (text | image | image,text)
  <images>/<img_path>                                  <images> = <data> (default: M-BEIR's paths start with
                                                       mbeir_images/), or image_root= / $MM_ST_MBEIR_IMAGES"""


class DataLayoutError(FileNotFoundError):
    """Evaluation data is missing or incomplete; the message shows the expected layout."""


@dataclass(frozen=True)
class DataSource:
    """Where one benchmark's data come from: ``data=``, else ``$<data_env>``, else ``default`` (a Hub dataset repo);
    its images under ``image_root=``, else ``$<images_env>``, else a default folder. ``name`` is how errors name the
    data set, ``layout`` the expected layout they show.

    >>> toy = DataSource("TOY", "MM_ST_TOY_DATA", None, "<data>/rows.jsonl")
    >>> toy.resolve("/data/toy")
    '/data/toy'
    """

    name: str
    data_env: str
    images_env: str | None
    layout: str
    default: str | None = None

    def resolve(self, data: str | os.PathLike | None) -> str:
        """The configured source: ``data``, else the data variable, else ``default``; none is a
        :class:`DataLayoutError` showing the layout."""
        value = data if data is not None else os.environ.get(self.data_env) or self.default
        if value is None:
            raise DataLayoutError(
                f"No {self.name} data configured: pass data=... or set ${self.data_env} to a local directory "
                f"or a Hub dataset repo with this layout.\n{self.layout}"
            )
        return os.fspath(value)

    def images(self, explicit: str | os.PathLike | None, candidates: list[Path]) -> Path:
        """The image root: ``explicit``, else the images variable, else the first existing candidate (else the last)."""
        value = explicit if explicit is not None else os.environ.get(self.images_env) if self.images_env else None
        if value is not None:
            return Path(value).expanduser()
        for candidate in candidates:
            if candidate.is_dir():
                return candidate
        return candidates[-1]


SOURCES = {
    "mmeb": DataSource("MMEB", "MM_ST_MMEB_DATA", "MM_ST_MMEB_IMAGES", MMEB_LAYOUT, MMEB_HUB),
    "xtd": DataSource("XTD", "MM_ST_XTD_DATA", "MM_ST_XTD_IMAGES", XTD_LAYOUT),
    "cirr": DataSource("CIRR", "MM_ST_CIRR_DATA", "MM_ST_CIRR_IMAGES", CIRR_LAYOUT),
    "mbeir": DataSource("MBEIR", "MM_ST_MBEIR_DATA", "MM_ST_MBEIR_IMAGES", MBEIR_LAYOUT),
}
ENV = {kind: (source.data_env, source.images_env) for kind, source in SOURCES.items()}


def resolve_source(kind: str, data: str | os.PathLike | None, default: str | None) -> str:
    """The configured source of :data:`SOURCES` ``[kind]``, ``default`` replacing its Hub default."""
    return replace(SOURCES[kind], default=default).resolve(data)


def local_dir(source: str, kind: str, layout: str) -> Path:
    path = Path(source).expanduser()
    if not path.is_dir():
        raise DataLayoutError(f"{kind} data directory not found: {str(path)!r}.\n{layout}")
    return path


def image_root(kind: str, explicit: str | os.PathLike | None, candidates: list[Path]) -> Path:
    """The image root of :data:`SOURCES` ``[kind]`` (:meth:`DataSource.images`)."""
    return SOURCES[kind].images(explicit, candidates)


def image_file(root: Path, relative: str, what: str, layout: str) -> str:
    """Absolute path of an image inside ``root`` (:func:`mm_st.io.resolve_inside`: refuses paths that
    escape it, also through a symbolic link); names a missing file."""
    try:
        full = resolve_inside(root, relative, what)
    except PathOutsideRoot as err:
        raise DataLayoutError(str(err)) from None
    if not full.is_file():
        raise DataLayoutError(f"{what}: image file not found: {str(full)!r} (first missing image).\n{layout}")
    return str(full)


def fingerprint(paths: list[Path]) -> str:
    """Short hash of file names, sizes and modification times (a local data set's revision)."""
    digest = hashlib.blake2b(digest_size=6)
    for path in sorted(paths):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return "local-" + digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# MMEB-eval
# ----------------------------------------------------------------------------------------------


def mmeb_files(data_dir: Path, name: str) -> list[Path]:
    """The files holding dataset ``name`` in a local MMEB-eval mirror (empty when there are none)."""
    folder = data_dir / name
    if folder.is_dir():
        for pattern in ("test-*.parquet", "*.parquet", "test*.jsonl", "*.jsonl"):
            files = sorted(folder.glob(pattern))
            if files:
                return files
        return []
    return [p for p in (data_dir / f"{name}.parquet", data_dir / f"{name}.jsonl") if p.is_file()][:1]


def _read_table(files: list[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in files:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows += pq.read_table(path).to_pylist()
        else:
            with path.open(encoding="utf-8") as handle:
                rows += [json.loads(line) for line in handle if line.strip()]
    return rows


def _check_columns(rows: list[dict[str, Any]], where: str) -> None:
    if not rows:
        raise DataLayoutError(f"MMEB data {where} has no rows.\n{MMEB_LAYOUT}")
    missing = [c for c in MMEB_COLUMNS if c not in rows[0]]
    if missing:
        raise DataLayoutError(f"MMEB data {where} lacks column(s) {missing}.\n{MMEB_LAYOUT}")


def check_mmeb_row_types(rows: list[dict[str, Any]], name: str) -> None:
    """Every MMEB row's fields have the right types (checked when the task loads), naming dataset and row."""
    for index, row in enumerate(rows):
        where = f"{name}: row {index} (query q{index})"
        for column, optional in (("qry_text", False), ("qry_img_path", True)):
            if not isinstance(row[column], str) and not (optional and row[column] is None):
                raise ValueError(f"{where}: {column} must be a string, got {type(row[column]).__name__} {row[column]!r:.60}.")
        for column, optional in (("tgt_text", False), ("tgt_img_path", True)):
            values = row[column]
            if not isinstance(values, list):
                raise ValueError(f"{where}: {column} must be a list, got {type(values).__name__} {values!r:.60}.")
            for j, value in enumerate(values):
                if not isinstance(value, str) and not (optional and value is None):
                    raise ValueError(f"{where} candidate {j}: {column}[{j}] must be a string, got {type(value).__name__}.")


def read_mmeb_rows(
    name: str, source: str, images: str | os.PathLike | None = None, revision: str | None = None
) -> tuple[list[dict[str, Any]], Path]:
    """Rows of MMEB dataset ``name`` (split ``test``) and the image root their paths are relative to."""
    if is_local(source):
        data_dir = local_dir(source, "MMEB", MMEB_LAYOUT)
        files = mmeb_files(data_dir, name)
        if not files:
            expected = data_dir / name / "test-00000-of-00001.parquet"
            raise DataLayoutError(
                f"MMEB data for {name!r} not found in local directory {str(data_dir)!r}: first missing file "
                f"{str(expected)!r} (or {str(data_dir / (name + '.parquet'))!r}).\n{MMEB_LAYOUT}"
            )
        rows = _read_table(files)
        _check_columns(rows, f"for {name!r} in {str(files[0])!r}")
        root = image_root("mmeb", images, [data_dir / "eval_images", data_dir / "images", data_dir])
        return rows, root
    import datasets

    rows = datasets.load_dataset(source, name, split="test", revision=revision).to_list()
    _check_columns(rows, f"for {name!r} from the Hub repo {source!r}")
    root = Path(images) if images is not None else (
        Path(os.environ[SOURCES["mmeb"].images_env]) if SOURCES["mmeb"].images_env in os.environ
        else hub_mmeb_images(source, revision)
    )
    return rows, root


def hub_mmeb_images(repo_id: str, revision: str | None = None) -> Path:
    """Download MMEB-eval's ``images.zip`` once and extract it next to the HF cache (resumable)."""
    from huggingface_hub import constants, hf_hub_download

    target = Path(constants.HF_HOME) / "mm_st" / f"{repo_id.replace('/', '__')}-images"
    if (target / ".complete").is_file():
        return target
    archive = hf_hub_download(repo_id, "images.zip", repo_type="dataset", revision=revision)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (target / ".complete").touch()
    return target


# ----------------------------------------------------------------------------------------------
# XTD and CIRR (local layouts; a Hub repo id is downloaded with the same layout)
# ----------------------------------------------------------------------------------------------


def xtd_dir(source: str) -> Path:
    path = local_dir(source, "XTD", XTD_LAYOUT) if is_local(source) else hub_snapshot(source)
    if not (path / "test_image_names.txt").is_file():
        raise DataLayoutError(
            f"XTD data incomplete: first missing file {str(path / 'test_image_names.txt')!r}.\n{XTD_LAYOUT}"
        )
    return path


def xtd_caption_file(data_dir: Path, lang: str) -> Path:
    names = [f"test_1kcaptions_{lang}.txt"] + (["test_1kcaptions_jp.txt"] if lang == "ja" else [])
    for candidate in names:
        if (data_dir / candidate).is_file():
            return data_dir / candidate
    raise DataLayoutError(f"XTD data incomplete: first missing file {str(data_dir / names[0])!r}.\n{XTD_LAYOUT}")


def read_lines(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [line.rstrip("\n").rstrip("\r") for line in handle if line.strip()]


def cirr_dir(source: str, split: str) -> Path:
    path = local_dir(source, "CIRR", CIRR_LAYOUT) if is_local(source) else hub_snapshot(source)
    for relative in (f"captions/cap.rc2.{split}.json", f"image_splits/split.rc2.{split}.json"):
        if not (path / relative).is_file():
            raise DataLayoutError(f"CIRR data incomplete: first missing file {str(path / relative)!r}.\n{CIRR_LAYOUT}")
    return path


# ----------------------------------------------------------------------------------------------
# M-BEIR (a local root)
# ----------------------------------------------------------------------------------------------


def mbeir_dir(source: str) -> Path:
    """The local M-BEIR root named by ``source`` (M-BEIR's images come as tar parts to extract: no Hub route)."""
    if not is_local(source):
        raise DataLayoutError(
            f"M-BEIR evaluation reads a local root, got {source!r}: download TIGER-Lab/M-BEIR and extract its "
            f"images (the dataset's README), then pass data=<root> or set $MM_ST_MBEIR_DATA.\n{MBEIR_LAYOUT}"
        )
    return local_dir(source, "M-BEIR", MBEIR_LAYOUT)


def mbeir_file(root: Path, relative: str) -> Path:
    """The M-BEIR file ``relative`` under ``root``; a missing one is a :class:`DataLayoutError` naming it."""
    path = root / relative
    if not path.is_file():
        raise DataLayoutError(f"M-BEIR data incomplete: first missing file {str(path)!r}.\n{MBEIR_LAYOUT}")
    return path
