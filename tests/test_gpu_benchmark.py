"""benchmarks/gpu/run.py: the one-call GPU benchmark, run here in its CPU smoke mode so it cannot rot."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_run():
    spec = importlib.util.spec_from_file_location("gpu_run", ROOT / "benchmarks" / "gpu" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(gpu_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_smoke")
    return gpu_run.main(["--smoke", "--out", str(out)]), out


def test_smoke_measures_every_part(smoke, gpu_run):
    report, out = smoke
    assert report["errors"] == {} and report["skipped"] == {}
    assert set(report["parts"]) == set(gpu_run.CAPS)
    assert json.loads((out / "gpu_results.json").read_text())["parts"].keys() == report["parts"].keys()
    table = (out / "gpu_results.md").read_text()
    for part in gpu_run.CAPS:
        assert f"| {part}" in table or (part == "train" and "| train (LoRA)" in table), part


def test_smoke_encode_equals_the_hand_loop(smoke):
    """mm_st's encode and the hand-written transformers loop embed the same batches identically."""
    encode = smoke[0]["parts"]["encode"]
    cases = [(shape, modality, r) for shape, by_modality in encode.items() if isinstance(by_modality, dict)
             for modality, r in by_modality.items()]
    assert {(shape, modality) for shape, modality, _ in cases} == {
        (shape, modality) for shape in ("qwen2_vl-tiny", "llava_next-tiny") for modality in ("text", "image", "image+text")}
    for shape, modality, r in cases:
        assert r["max_abs_diff"] < 1e-5, (shape, modality)
        assert r["ratio_mm_st_over_hand"] > 0 and r["tokens_per_batch"] > r["batch"]


def test_smoke_train_pooling_grouping_mining_figures(smoke):
    parts = smoke[0]["parts"]
    assert {key for key in parts["train"] if "@" in key} == {"cached@8", "plain@8", "cached@16", "plain@16"}
    assert all(parts["train"][key]["step_s"] > 0 for key in parts["train"] if "@" in key)
    assert parts["pooling"]["ratio_latent_over_last"] > 0
    assert parts["grouping"]["ratio_grouped_over_ungrouped"] > 0
    assert parts["mining"]["queries"] == 50 and parts["mining"]["queries_per_s"] > 0


def test_budget_too_small_skips_parts_and_still_writes(gpu_run, tmp_path):
    report = gpu_run.main(["--smoke", "--out", str(tmp_path), "--budget-s", "1"])
    assert report["parts"] == {} and set(report["skipped"]) == set(gpu_run.CAPS)
    assert "left of the budget" in report["skipped"]["encode"]
    assert "| encode | skipped |" in (tmp_path / "gpu_results.md").read_text()


def test_a_part_that_overruns_its_cap_is_stopped(gpu_run, tmp_path, monkeypatch):
    """The alarm ends a part stuck past 1.5x its cap; the other parts still run and the files are written."""
    import time

    monkeypatch.setitem(gpu_run.CAPS, "grouping", 2)
    monkeypatch.setitem(gpu_run.PARTS, "grouping", lambda ctx, cap_end: time.sleep(60))
    report = gpu_run.main(["--smoke", "--out", str(tmp_path), "--parts", "grouping", "mining"])
    assert report["errors"]["grouping"].startswith("stopped after")
    assert report["parts"]["mining"]["queries_per_s"] > 0
