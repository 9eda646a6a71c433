"""Run the whole reference cross-check for one reference, then check the results (see README.md).

Runs each script in its own process (both references call their package ``src``), reads the ``result_*.json``
they write and checks them against what RESULTS.md states:

- token ids equal in every batch and column;
- embeddings within the tolerance (``--tolerance``; default 1e-7 in float64, 1e-6 in float32) and losses too,
  except the explained cases, which are checked for what explains them: Qwen2-VL (VLM2Vec's 1-D positions;
  given mm_st's image-token types the reference matches), mmE5's mixed batch (its text rows differ from the
  same rows in a text-only batch; mm_st matches the image rows, and the text rows of the text-only batch);
- mm_st padded on the right like the references: equal to 1e-12;
- multi-process: mm_st's local gradient = W x the full-batch gradient; VLM2Vec's too, mmE5's is 1/W of it;
- adapters: the same adapted modules, trainable parameters and DoRA magnitudes;
- MMEB-V2 inputs (``mmeb_v2``, VLM2Vec's eval parsers and eval collator): the same candidates, positives,
  instructions and sampled frames; token ids, vision grids and pixel values equal, with the ``vlm2vec_v2`` recipe
  as it ships (its text format and processor sizes are VLM2Vec-V2's).

Exit status 1 when a check fails. Usage::

    python benchmarks/reference/run.py vlm2vec --upstream path/to/VLM2Vec
    python benchmarks/reference/run.py mme5 --upstream path/to/mmE5
    python benchmarks/reference/run.py mmeb_v2 --upstream path/to/VLM2Vec
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

STEPS = {
    "vlm2vec": [
        ("vlm2vec.py", ["--family", "llava_next"], "vlm2vec_llava_next_{dtype}"),
        ("vlm2vec.py", ["--family", "llava_next", "--mmst-pad", "right"], "vlm2vec_llava_next_{dtype}_mmst-pad-right"),
        ("vlm2vec.py", ["--family", "qwen2_vl"], "vlm2vec_qwen2_vl_{dtype}"),
        ("vlm2vec.py", ["--family", "qwen2_vl", "--ref-mm-types", "image"],
         "vlm2vec_qwen2_vl_{dtype}_ref-mm-types-image"),
        ("ddp.py", ["vlm2vec"], "ddp_vlm2vec"),
        ("adapters.py", ["vlm2vec"], "adapters_vlm2vec"),
    ],
    "mme5": [
        ("mme5.py", [], "mme5_mllama_{dtype}"),
        ("mme5.py", ["--mmst-pad", "right"], "mme5_mllama_{dtype}_mmst-pad-right"),
        ("ddp.py", ["mme5"], "ddp_mme5"),
        ("adapters.py", ["mme5"], "adapters_mme5"),
    ],
    "mmeb_v2": [  # MMEB-V2 inputs (VLM2Vec's eval parsers + eval collator); no dtype: nothing is embedded
        ("mmeb_v2.py", [], "mmeb_v2_inputs"),
    ],
}
ENCODING_SCRIPTS = ("vlm2vec.py", "mme5.py")  # the scripts that take --dtype
EXACT = 1e-12  # "bitwise" up to the last float64 bits of a sum


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", choices=tuple(STEPS))
    parser.add_argument("--upstream", type=Path, required=True, help="root of the reference checkout (see README.md)")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for result_*.json (default: a new temporary one)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--tolerance", type=float, default=None, help="max |diff| (default 1e-7 float64, 1e-6 float32)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check-only", action="store_true", help="only check the result_*.json already in --out")
    return parser.parse_args()


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.count = 0

    def __call__(self, ok: bool, what: str) -> None:
        self.count += 1
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
        if not ok:
            self.failed.append(what)


def columns(batch: dict) -> list[int]:
    return sorted({int(k[3:].split("_")[0]) for k in batch if k.startswith("col") and k.endswith("_max_abs_diff")})


def max_emb(batch: dict) -> float:
    return max(batch[f"col{k}_max_abs_diff"] for k in columns(batch))


def ids_line(batch: dict) -> str:
    equal = sum(batch[f"col{k}_ids_equal"] for k in columns(batch))
    return f"{equal}/{sum(batch[f'col{k}_rows'] for k in columns(batch))}"


def all_ids(batch: dict) -> bool:
    return all(batch[f"col{k}_all_ids_equal"] for k in columns(batch))


def check_encoding(result: dict, name: str, tol: float, check: Checks) -> None:
    pad_right = result.get("mmst_pad") == "right"
    qwen_positions = result.get("family") == "qwen2_vl" and result.get("ref_mm_types") == "zero"
    for batch in result["batches"]:
        label = f"{name} / {batch['batch']}"
        check(all_ids(batch), f"{label}: token ids equal ({ids_line(batch)})")
        mixed = [batch[f"col{k}_mixed"] for k in columns(batch) if f"col{k}_mixed" in batch]
        if mixed and result["reference"] == "haon-chen/mmE5":  # explained case (d): batch-composition dependence
            worst_text = max(m["reference_text_rows_mixed_vs_text_only_batch"] for m in mixed)
            check(worst_text > 1e-3, f"{label}: the reference's text rows change with the batch's images "
                                     f"(mixed vs text-only batch {worst_text:.2e})")
            image = max(m["mm_st_vs_reference_image_rows"] for m in mixed)
            alone = max(m["mm_st_vs_reference_text_only_batch_text_rows"] for m in mixed)
            limit = EXACT if pad_right else tol
            check(image <= limit and alone <= limit, f"{label}: mm_st = reference on image rows ({image:.1e}) and on "
                                                     f"text rows of a text-only batch ({alone:.1e})")
            grouped = abs(batch["loss_mm_st"] - batch["loss_reference_text_rows_from_text_only_batches"])
            check(grouped <= limit / 0.02, f"{label}: mm_st's loss = the reference's with text rows from text-only "
                                           f"batches (|diff| {grouped:.1e})")
            continue
        if qwen_positions:  # explained case (c): VLM2Vec's 1-D positions for image tokens
            check(max_emb(batch) > 1e-5,
                  f"{label}: differs by the Qwen2-VL positions (max |emb diff| {max_emb(batch):.1e})")
            continue
        limit = EXACT if pad_right else tol
        check(max_emb(batch) <= limit, f"{label}: max |emb diff| {max_emb(batch):.1e} <= {limit:g}")
        check(batch["abs_loss_diff"] <= limit / 0.02,
              f"{label}: |loss diff| {batch['abs_loss_diff']:.1e} <= {limit / 0.02:g} (tolerance / temperature)")


def check_ddp(result: dict, check: Checks) -> None:
    expected_reference = 1.0 if result["reference"] == "vlm2vec" else 1.0 / result["world_size"]
    for rank in result["ranks"]:
        mine, theirs = rank["mm_st"], rank["reference"]
        check(mine["max_abs_diff_vs_W_x_full_grad"] <= EXACT,
              f"ddp {result['reference']} rank {rank['rank']}: mm_st local grad = W x full-batch grad "
              f"(max |diff| {mine['max_abs_diff_vs_W_x_full_grad']:.1e})")
        check(abs(theirs["local_grad_over_W_x_full_grad"] - expected_reference) <= EXACT
              and theirs["max_abs_dev_from_factor"] <= EXACT,
              f"ddp {result['reference']} rank {rank['rank']}: reference local grad = "
              f"{theirs['local_grad_over_W_x_full_grad']:.3f} x (W x full-batch grad), expected {expected_reference:g}")
        check(abs(mine["loss_full_batch"] - theirs["loss_full_batch"]) <= EXACT,
              f"ddp {result['reference']} rank {rank['rank']}: same single-process full-batch loss "
              f"({mine['loss_full_batch']:.6f} / {theirs['loss_full_batch']:.6f})")


def check_adapters(result: dict, check: Checks) -> None:
    for family, entry in result["families"].items():
        check(entry["same_modules"] and entry["trainable_parameters_mm_st"] == entry["trainable_parameters_reference"]
              and entry["dora_magnitudes_mm_st"] == entry["dora_magnitudes_reference"],
              f"adapters {result['reference']} / {family}: {entry['adapted_modules_mm_st']}/"
              f"{entry['adapted_modules_reference']} modules, trainable {entry['trainable_parameters_mm_st']:,}/"
              f"{entry['trainable_parameters_reference']:,}, DoRA magnitudes {entry['dora_magnitudes_mm_st']}")


def check_inputs(result: dict, name: str, check: Checks) -> None:
    """MMEB-V2 inputs: the same candidates, positives, instructions and frames; token ids, vision grids and pixel
    values equal (mm_st's recipe as shipped)."""
    for task_name, task in result["tasks"].items():
        label = f"{name} / {task_name}"
        check(task["candidate_names_equal"] and task["relevant_equal"],
              f"{label}: same candidates ({len(task['reference']['candidate'])}) and positives per query")
        same = all(v["reference"] == v["mm_st"] for v in task["instructions"].values())
        check(same, f"{label}: instructions byte-equal to the parser's TASK_INST_QRY / TASK_INST_TGT")
        for side in ("query", "candidate"):
            entry = task[side]
            if "videos" in entry:
                check(entry["frames_equal"] == entry["videos"],
                      f"{label} / {side}: sampled frame paths equal ({entry['frames_equal']}/{entry['videos']} videos)")
            pixels = entry["pixels_max_abs_diff"]
            check(entry["all_ids_equal"] and entry["grids_equal"] == entry["rows"]
                  and (pixels is None or pixels <= 1e-6),
                  f"{label} / {side}: token ids equal ({entry['ids_equal']}/{entry['rows']}), grids equal "
                  f"({entry['grids_equal']}/{entry['rows']}), max |pixel diff| {pixels}")
        if "vendored_video_grid_equal" in task:
            check(task["vendored_video_grid_equal"],
                  f"{label}: VLM2Vec's vendored image processor gives the same video grids as transformers' "
                  f"video processor ({task['vendored_video_grids']})")
        if "model_folder_sampling_equal" in task:
            check(task["model_folder_sampling_equal"],
                  f"{label}: mm_st's model samples each frame folder given as {{'video': folder}} to VLM2Vec's frames")
        if "short_video" in task:
            short = task["short_video"]
            check(short["parser_refuses"] and short["mm_st_frames"] == short["process_video_frames"],
                  f"{label}: a {short['frames']}-frame video: VLM2Vec's parser refuses it ({short.get('error')}); "
                  f"mm_st keeps all {len(short['mm_st_frames'])} frames as process_video_frames does")


def inputs_table(results: dict[str, dict]) -> None:
    print("\n| run | task / side | rows | token ids equal | frames equal | grids equal | max \\|pixel diff\\| "
          "| differing rows: text / grid |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name, result in results.items():
        for task_name, task in result.get("tasks", {}).items():
            for side in ("query", "candidate"):
                e = task[side]
                frames = f"{e['frames_equal']}/{e['videos']}" if "videos" in e else ""
                pixels = "" if e["pixels_max_abs_diff"] is None else f"{e['pixels_max_abs_diff']:.1e}"
                causes = e["differing_rows_by_cause"]
                print(f"| {name} | {task_name} / {side} | {e['rows']} | {e['ids_equal']} | {frames} | "
                      f"{e['grids_equal']} | {pixels} | {causes['text']} / {causes['grid']} |")


def table(results: dict[str, dict]) -> None:
    if not any(result.get("batches") for result in results.values()):
        return
    print("\n| run | batch (rows) | token ids equal | max \\|emb diff\\| | loss mm_st | loss reference "
          "| \\|loss diff\\| |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, result in results.items():
        for batch in result.get("batches", []):
            print(f"| {name} | {batch['batch']} ({batch['rows']}) | {ids_line(batch)} | {max_emb(batch):.1e} | "
                  f"{batch['loss_mm_st']:.10f} | {batch['loss_reference']:.10f} | {batch['abs_loss_diff']:.1e} |")


def main() -> None:
    args = parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mm_st-reference-"))
    tol = args.tolerance or (1e-7 if args.dtype == "float64" else 1e-6)
    steps = [(script, extra, name.format(dtype=args.dtype)) for script, extra, name in STEPS[args.reference]]
    if not args.check_only:
        for script, extra, _ in steps:
            dtype = ["--dtype", args.dtype] if script in ENCODING_SCRIPTS else []
            command = [sys.executable, str(HERE / script), *extra, *dtype, "--upstream", str(args.upstream),
                       "--out", str(out), "--threads", str(args.threads)]  # fmt: skip
            shown = " ".join(extra + dtype)
            print(f"\n$ python benchmarks/reference/{script} {shown} --upstream {args.upstream}", flush=True)
            started = time.perf_counter()
            subprocess.run(command, check=True)
            print(f"({time.perf_counter() - started:.0f} s)")
    results = {name: json.loads((out / f"result_{name}.json").read_text(encoding="utf-8")) for _, _, name in steps}
    commits = {r.get("commit") for r in results.values()}
    print(f"\nResults in {out} (reference commit {', '.join(sorted(c for c in commits if c))})")
    table(results)
    if any(n.startswith("mmeb_v2") for n in results):
        inputs_table(results)
    print("\nChecks:")
    check = Checks()
    for name, result in results.items():
        if name.startswith("ddp_"):
            check_ddp(result, check)
        elif name.startswith("adapters_"):
            check_adapters(result, check)
        elif name.startswith("mmeb_v2"):
            check_inputs(result, name, check)
        else:
            check_encoding(result, name, tol, check)
    print(f"\n{check.count - len(check.failed)}/{check.count} checks passed")
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    main()
