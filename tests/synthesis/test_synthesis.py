"""mm_st.synthesis: planning, schema checks and retries, HTTP transport, crash safety, export round-trip."""

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import datasets
import pytest

from mm_st.data.columns import modality_of
from mm_st.data.converters import load_mme5_synthetic
from mm_st.synthesis import (
    DEFAULT_LANGUAGE_WEIGHTS,
    Journal,
    OpenAIChatBackend,
    ScriptedBackend,
    SynthesisConfig,
    export_dataset,
    plan_samples,
    push_to_hub,
    synthesize,
)
from mm_st.synthesis.config import image_roles
from tests.synthesis_support import ServerNotReady, StubOpenAIServer, TransformersServe, fake_answer

ROOT = Path(__file__).resolve().parents[2]


def journal_ids(path):
    return [json.loads(line)["id"] for line in Path(path).read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- planning


def test_plan_matches_weights_and_ids_are_stable():
    config = SynthesisConfig(
        num_samples=4000, seed=3, tasks={"classification": 0.2, "vqa": 0.3, "retrieval": 0.5},
        languages={"en": 0.5, "de": 0.3, "sw": 0.2},
    )  # fmt: skip
    plan = plan_samples(config, pool_size=500)
    n = len(plan)

    def close(count, total, p):  # within 4 standard deviations of a binomial
        return abs(count - total * p) <= 4 * math.sqrt(total * p * (1 - p)) + 1

    tasks, languages = Counter(s.task for s in plan), Counter(s.language for s in plan)
    assert all(close(tasks[t], n, w) for t, w in config.tasks.items()), tasks
    assert all(close(languages[code], n, w) for code, w in config.languages.items()), languages
    for task, weights in config.combinations.items():
        in_task = [s.combination for s in plan if s.task == task]
        total = sum(weights.values())
        assert all(close(Counter(in_task)[c], len(in_task), w / total) for c, w in weights.items()), (task, Counter(in_task))
    # images: one per role the combination needs, distinct within a sample
    for s in plan[:200]:
        assert tuple(s.images) == image_roles(s.combination) and len(set(s.images.values())) == len(s.images)
    # stable ids: same config -> same plan; more samples only append; another seed -> other ids
    assert [s.id for s in plan_samples(config, 500)] == [s.id for s in plan]
    assert len({s.id for s in plan}) == n and plan[17].id.startswith("0000017-")
    longer = SynthesisConfig(**{**config.to_dict(), "num_samples": 4100})
    assert [s.id for s in plan_samples(longer, 500)[:n]] == [s.id for s in plan]
    other = SynthesisConfig(**{**config.to_dict(), "seed": 4})
    assert not {s.id for s in plan_samples(other, 500)} & {s.id for s in plan}
    # defaults: 93 languages, English half the mass
    assert len(DEFAULT_LANGUAGE_WEIGHTS) == 93 and DEFAULT_LANGUAGE_WEIGHTS["en"] == 0.5
    assert math.isclose(sum(DEFAULT_LANGUAGE_WEIGHTS.values()), 1.0)
    with pytest.raises(ValueError, match="Bad modality combination"):
        SynthesisConfig(combinations={"classification": {"I=>T": 1}, "vqa": {"IT->T": 1}, "retrieval": {"T->I": 1}})


# ---------------------------------------------------------------------------------------------- schema


def test_valid_invalid_and_partial_answers(tmp_path):
    config = SynthesisConfig(num_samples=6, tasks={"retrieval": 1.0}, combinations={"retrieval": {"T->IT": 1.0}}, languages=["en"], seed=0)
    seen = []

    def respond(request):
        seen.append((request.sample.index, request.attempt, request.messages[-1]["content"][-1]["text"]))
        good = json.loads(fake_answer(request))
        index = request.sample.index
        if index == 1 and request.attempt == 1:
            return "Sure! Here is the sample: {not json"
        if index == 2:
            del good["revised"]  # partially valid: no revised sample, every time
        if index == 3:
            good["evaluation"]["relevance"] = 9  # score out of range
        if index == 4:
            return "```json\n" + json.dumps(good) + "\n```"
        if index == 5:
            good["revised"]["query"] = "  "  # T query side needs a query text
        return json.dumps(good)

    summary = synthesize(config, ScriptedBackend(respond), tmp_path, progress=False, verbose=False)
    records = {r["plan"]["index"]: r for r in Journal(tmp_path / "journal.jsonl").load().values()}
    assert [records[i]["status"] for i in range(6)] == ["accepted", "accepted", "rejected", "rejected", "accepted", "rejected"]
    assert [records[i]["attempts"] for i in range(6)] == [1, 2, 3, 3, 1, 3]
    assert records[2]["reason"] == "schema" and "missing 'revised'" in records[2]["detail"]
    assert records[3]["reason"] == "schema" and "9 > maximum 5" in records[3]["detail"]
    assert records[5]["reason"] == "content" and "empty query" in records[5]["detail"]
    # only the revised sample is kept, scores stored alongside
    assert records[0]["sample"]["query"] == f"query {records[0]['id']}" and records[0]["evaluation"]["relevance"] == 4
    # the retry prompt names the previous problem
    retry = [text for index, attempt, text in seen if index == 1 and attempt == 2][0]
    assert "Your previous answer could not be used: invalid_json" in retry
    assert summary["accepted"] == 3 and summary["rejected_by_reason"] == {"schema": 2, "content": 1}
    assert summary["mean_scores"] == {"cross_modal_alignment": 5.0, "image_fidelity": 4.0, "relevance": 4.0, "hard_negative_difficulty": 3.0}
    assert json.loads((tmp_path / "summary.json").read_text())["per_combination"] == {"T->IT": 3}
    # a restart has nothing to do; a different plan in the same directory is refused
    again = synthesize(config, ScriptedBackend(lambda r: pytest.fail("nothing should be generated")), tmp_path, progress=False, verbose=False)
    assert again["generated_this_run"] == 0 and len(journal_ids(tmp_path / "journal.jsonl")) == 6
    with pytest.raises(ValueError, match="different plan"):
        synthesize(SynthesisConfig(**{**config.to_dict(), "seed": 1}), ScriptedBackend(fake_answer), tmp_path, progress=False, verbose=False)


# ---------------------------------------------------------------------------------------------- HTTP transport


def test_http_backend_retries_5xx_429_timeouts_and_hides_the_key(tmp_path, monkeypatch, caplog, capsys):
    secret = "sk-test-DO-NOT-LEAK-4242"
    monkeypatch.setenv("MM_ST_TEST_KEY", secret)
    config = SynthesisConfig(num_samples=4, languages=["en", "fr"], seed=2)
    # request 0, 1: 500; request 2: 429; request 3: slower than the client timeout; then fine
    with StubOpenAIServer(statuses=[500, 500, 429], slow={3: 1.5}) as server, caplog.at_level("INFO"):
        backend = OpenAIChatBackend(server.base_url, "stub-model", api_key_env="MM_ST_TEST_KEY", concurrency=1,
                                    timeout=0.5, max_retries=5, backoff=0.01)  # fmt: skip
        summary = synthesize(config, backend, tmp_path / "run", progress=False)
    assert summary["accepted"] == 4 and summary["pending"] == 0 and backend.retries == 4
    assert server.status_log[:3] == [500, 500, 429] and server.requests == 8
    assert set(server.authorization) == {f"Bearer {secret}"}
    body = server.bodies[0]
    parts = body["messages"][1]["content"]
    assert body["model"] == "stub-model" and body["messages"][0]["role"] == "system"
    images = [p for p in parts if p["type"] == "image_url"]
    plan = plan_samples(config, 1458)[0]
    assert len(images) == len(plan.images) and all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in images)
    assert "timeout" in caplog.text and "HTTP 500" in caplog.text
    # the key is never written or logged
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert secret not in written and secret not in caplog.text and secret not in capsys.readouterr().out
    assert secret not in repr(backend)
    # a non-retryable error (400) leaves the sample pending (not journaled); the next run finishes it
    config = SynthesisConfig(num_samples=3, languages=["en"], seed=5)
    with StubOpenAIServer(statuses=[400]) as server:
        backend = OpenAIChatBackend(server.base_url, "stub-model", concurrency=1, backoff=0.01)
        first = synthesize(config, backend, tmp_path / "run2", progress=False, verbose=False)
        second = synthesize(config, backend, tmp_path / "run2", progress=False, verbose=False)
    assert (first["accepted"], first["pending"], second["accepted"], second["pending"]) == (2, 1, 3, 0)
    assert sorted(journal_ids(tmp_path / "run2" / "journal.jsonl")) == sorted(s.id for s in plan_samples(config, 1458))


def test_http_concurrency_overlaps_requests(tmp_path):
    config = SynthesisConfig(num_samples=16, languages=["en"], seed=0)
    with StubOpenAIServer(delay=0.3) as server:
        summary = synthesize(config, OpenAIChatBackend(server.base_url, "stub", concurrency=8), tmp_path, progress=False, verbose=False)
    # the server saw requests being answered at the same time (a serial client never has more than one in flight);
    # counted by the server, not timed (timings: benchmarks/synthesis_throughput.py)
    assert summary["accepted"] == 16 and 2 <= server.max_in_flight <= 8


class RecordingBackend(OpenAIChatBackend):
    """Keeps each raw answer (or transport error) by request id."""

    def generate(self, requests):
        out = super().generate(requests)
        self.answers = {**getattr(self, "answers", {}), **{r.id: a for r, a in zip(requests, out)}}
        return out


def test_synthesis_against_a_real_transformers_serve_process(tmp_path, monkeypatch, caplog, capsys, smollm2):
    """SmolLM2-135M-Instruct behind ``transformers serve`` (transformers' ``serving`` extra), 2 text-only samples,
    32 new tokens: every request is answered by the real server, each sample is journaled accepted or rejected
    with a reason and a bounded excerpt of what the server said, and the key never reaches a log or file."""
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"transformers serve needs transformers' serving extra (in mm-st[dev]); missing {missing}")
    secret = "sk-test-REAL-SERVER-7319"
    monkeypatch.setenv("MM_ST_TEST_KEY", secret)
    config = SynthesisConfig(num_samples=2, languages=["en"], tasks={"retrieval": 1.0},
                             combinations={"retrieval": {"T->T": 1.0}}, max_attempts=1, seed=1)  # fmt: skip
    server = TransformersServe(smollm2, tmp_path / "serve.log", ready_timeout=300, home=tmp_path / "hf_home")
    try:
        try:
            server.start()
        except ServerNotReady as error:
            pytest.skip(f"transformers serve could not start on this machine: {error}")
        # 300 s per request: a 2-core CI runner under load answered in ~60 s; the server ignores response_format
        backend = RecordingBackend(server.base_url, smollm2, api_key_env="MM_ST_TEST_KEY", concurrency=2, timeout=300,
                                   max_retries=1, max_tokens=32, json_mode="schema")  # fmt: skip
        with caplog.at_level("INFO"):
            summary = synthesize(config, backend, tmp_path / "run", progress=False)
    finally:
        server.stop()
    records = Journal(tmp_path / "run" / "journal.jsonl").load()
    assert summary["pending"] == 0 and summary["accepted"] + summary["rejected"] == 2
    assert set(records) == set(backend.answers) and all(isinstance(a, str) for a in backend.answers.values())
    assert server.log_tail(10**6).count('"POST /v1/chat/completions HTTP/1.1" 200 OK') == 2
    for sample_id, record in records.items():
        answer = backend.answers[sample_id]
        if record["status"] == "accepted":
            assert set(record["sample"]) == {"task_instruction", "query", "positive", "hard_negative"}
            continue
        assert record["status"] == "rejected" and record["reason"] in ("invalid_json", "schema", "content")
        assert record["detail"] and record["excerpt"]
        if len(answer) <= 500:
            assert record["excerpt"] == answer
        else:
            assert record["excerpt"].startswith(answer[:300]) and record["excerpt"].endswith(answer[-200:])
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size < 10**7)
    output = capsys.readouterr()
    assert secret not in written + caplog.text + output.out + output.err


# ---------------------------------------------------------------------------------------------- crash safety


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_has_every_id_exactly_once(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from synthesis_crash_worker import CONFIG
    from synthesis_crash_worker import run as synthesize_into

    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "tests" / "synthesis_crash_worker.py"), str(run), "0.05"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = run / "journal.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not journal.is_file() or len(journal.read_bytes().splitlines()) < 5):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = journal_ids(journal)
    assert 5 <= len(written) < 40 and process.returncode == -signal.SIGKILL
    with open(journal, "ab") as handle:  # as if the kill had hit in the middle of a write
        handle.write(b'{"id": "0000039-trunc", "status": "acc')
    # the restart in this process (what the worker script runs; only the killed run needs a process of its own)
    assert synthesize_into(str(run), 0.0) == "DONE 40 0 0"
    ids = journal_ids(journal)
    expected = [s.id for s in plan_samples(SynthesisConfig(**CONFIG), 1458)]
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids)) == 40
    assert ids[: len(written)] == written  # append-only: earlier records untouched


# ---------------------------------------------------------------------------------------------- local transformers backend


def test_transformers_backend_garbage_output_is_rejected(tmp_path):
    from mm_st.synthesis import TransformersBackend
    from mm_st.testing import tiny_model

    backend = TransformersBackend(tiny_model("qwen2_vl"), batch_size=3, max_new_tokens=6)
    config = SynthesisConfig(num_samples=3, languages=["en"], seed=0, max_attempts=2)
    summary = synthesize(config, backend, tmp_path, progress=False, verbose=False)
    records = list(Journal(tmp_path / "journal.jsonl").load().values())
    assert summary["rejected_by_reason"] == {"invalid_json": 3} and summary["accepted"] == 0
    assert [r["attempts"] for r in records] == [2, 2, 2] and records[0]["generator"].endswith("qwen2_vl-seed0-v1")


# ---------------------------------------------------------------------------------------------- dry runs


def test_dry_run_backend_answers_every_combination_validly():
    from mm_st.synthesis import DryRunBackend, PlannedSample, PromptBuilder, Request
    from mm_st.synthesis.config import COMBINATIONS

    prompts, backend = PromptBuilder(), DryRunBackend()
    for i, combination in enumerate(COMBINATIONS):
        sample = PlannedSample(f"{i:07d}-x", i, "retrieval", combination, "de", {r: 7 for r in image_roles(combination)})
        revised, evaluation = prompts.parse(sample, backend.generate([Request(sample.id, [], sample)])[0])
        query_side, target_side = combination.split("->")
        assert revised["query"] == (f"[dry run] retrieval {combination} de: query of {sample.id}" if "T" in query_side else "")
        assert bool(revised["positive"]) == bool(revised["hard_negative"]) == ("T" in target_side)
        assert evaluation["relevance"] == 3
    with pytest.raises(ValueError, match="DryRunBackend needs the planned sample of request 'r1'; got None"):
        backend.generate([Request("r1", [])])
    with pytest.raises(ValueError, match="score must be within 1..5"):
        DryRunBackend(score=0)


def test_recipe_dry_run_exports_template_data_offline(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("synthesize_recipe", ROOT / "recipes" / "synthesize_mme5_data.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    code = recipe.main(["--backend", "dry-run", "--num-samples", "6", "--languages", "en,de", "--output-dir",
                        str(tmp_path / "run"), "--export-dir", str(tmp_path / "export"), "--no-progress"])  # fmt: skip
    assert code == 0
    records = list(Journal(tmp_path / "run" / "journal.jsonl").load().values())
    assert [r["status"] for r in records] == ["accepted"] * 6
    assert {r["generator"] for r in records} == {"dry-run (template filler, no model)"}
    assert all(r["sample"]["task_instruction"].startswith("[dry run] ") for r in records)
    assert "Generator model: `dry-run (template filler, no model)`" in (tmp_path / "export" / "README.md").read_text()


def test_runtime_code_never_imports_test_code():
    """mm_st/ and recipes/ are runtime code: no import of tests' support code (benchmarks/ may)."""
    import ast

    offenders = []
    for path in sorted([*(ROOT / "mm_st").rglob("*.py"), *(ROOT / "recipes").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert offenders == []
    assert not (ROOT / "mm_st" / "synthesis" / "testing.py").exists() and not (ROOT / "mm_st" / "data" / "build_emoji.py").exists()


# ---------------------------------------------------------------------------------------------- export


@pytest.mark.slow
def test_export_round_trip_loads_with_converter_and_trains(tmp_path, monkeypatch):
    from tests.data.test_converters import one_training_step

    from mm_st import build_model
    from mm_st.testing import tiny_model

    config = SynthesisConfig(num_samples=30, languages={"en": 0.5, "de": 0.25, "ja": 0.25}, seed=11, image_license="OFL-1.1 (Noto Color Emoji)")
    summary = synthesize(config, ScriptedBackend(fake_answer, name="scripted-mllm"), tmp_path / "run", progress=False, verbose=False)
    out = tmp_path / "export"
    exported = export_dataset(tmp_path / "run", out)
    assert sum(len(d) for d in exported.values()) == summary["accepted"] == 30
    assert set(exported) == {"Classification", "Retrieval", "VQA"}
    assert (out / "VQA" / "train-00000-of-00001.parquet").is_file()
    row = exported["VQA"][0]
    assert row["qry"].startswith("<|image_1|>\nFind the matching item") and row["qry_image_path"].startswith("pool/")
    assert row["pos_text"] == f"positive {row['id']}" and row["neg_text"] == [f"hard negative {row['id']}"] and row["neg_image_path"] == [""]
    loaded = load_mme5_synthetic(out, configs=list(exported), image_root=out / "images")
    for name, ds in loaded.items():
        assert len(ds) == len(exported[name]) and ds.column_names == ["anchor", "positive", "negative_1"]
    modalities = {(r["modality"], modality_of(a), modality_of(p)) for r, a, p in zip(exported["Retrieval"], loaded["Retrieval"]["anchor"], loaded["Retrieval"]["positive"])}
    expected = {"T->I": ("text", "image+text"), "I->T": ("image+text", "text"), "IT->IT": ("image+text", "image+text"), "I->I": ("image+text", "image+text")}
    assert all(expected[c] == (a, p) for c, a, p in modalities if c in expected) and len(modalities) >= 3
    assert loaded["Retrieval"][0]["anchor"]["image"] is None or loaded["Retrieval"][0]["anchor"]["image"].size == (64, 64)
    # card
    card = (out / "README.md").read_text()
    assert "config_name: Classification" in card and "path: VQA/train-*" in card
    assert "Generator model: `scripted-mllm`" in card and "OFL-1.1 (Noto Color Emoji)" in card and "| **total** | **30** |" in card
    assert "Languages (3): de, en, ja" in card
    # one training step on the exported data (mmE5: hard negatives scored against their own query)
    model = build_model(tiny_model("qwen2_vl"), recipe="vlm2vec")
    loss, changed = one_training_step(model, datasets.DatasetDict(dict(loaded)), tmp_path / "train", hard_negative_scope="own")
    assert loss > 0 and changed
    # push_to_hub: the export as one commit of a dataset repo on a local Hub (tests/hub_server.py), via mm_st.hub
    from tests.hub_server import FakeHub, use_in_process

    token = "hf_synthesisPushToken_1234"
    with FakeHub(token=token) as hub:
        use_in_process(monkeypatch, hub, token)
        assert push_to_hub(out, "me/syn", endpoint=hub.url) == f"{hub.url}/datasets/me/syn"
        files = hub.files("me/syn", "dataset")
        exported_files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert {k: v for k, v in files.items() if k != ".gitattributes"} == exported_files
        assert hub.repos[("dataset", "me/syn")].private and len(hub.commits("me/syn", "dataset")) == 2
