"""Hostile and careless inputs (issue 13): each bad input is a clear error naming the item."""

import json
import os
import shutil

import numpy as np
import pytest

from mm_st import build_model, load_model
from mm_st.testing import tiny_model


# ----------------------------------------------------------------------------------------------
# 1. load_model refuses an incomplete saved model instead of silently building another one
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    model = build_model(tiny_model("qwen2_vl"), recipe="e5v")
    path = tmp_path_factory.mktemp("saved") / "model"
    model.save(str(path))
    return model, path


def _copy(saved_model, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(saved_model[1], target)
    return target


def test_load_model_complete_directory_loads_the_same_model(saved_model):
    model, path = saved_model
    assert np.abs(load_model(str(path)).encode(["a dog"]) - model.encode(["a dog"])).max() <= 1e-6


def test_load_model_without_modules_json_names_the_file_and_build_model(saved_model, tmp_path):
    path = _copy(saved_model, tmp_path)
    (path / "modules.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"modules\.json' is missing.*mm_st\.build_model"):
        load_model(str(path))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b"\xff\xfe[]", "not valid UTF-8 JSON"),
        (b"{}", "expected a non-empty JSON list"),
        (b"[]", "expected a non-empty JSON list"),
        (b'[{"path": ""}]', "entry 0 needs string 'path' and 'type'"),
    ],
)
def test_load_model_invalid_modules_json_names_the_file(saved_model, tmp_path, content, message):
    path = _copy(saved_model, tmp_path)
    (path / "modules.json").write_bytes(content)
    with pytest.raises(ValueError, match=rf"Invalid '.*modules\.json': {message}"):
        load_model(str(path))


def test_load_model_missing_module_directory_names_the_entry(saved_model, tmp_path):
    path = _copy(saved_model, tmp_path)
    shutil.rmtree(path / "1_Pooling")
    with pytest.raises(FileNotFoundError, match=r"modules\.json': entry 1 \(.*Pooling\) names directory '1_Pooling'"):
        load_model(str(path))
    modules = json.loads((saved_model[1] / "modules.json").read_text())
    modules[1]["path"] = "../../outside"
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(FileNotFoundError, match=r"entry 1 .*'\.\./\.\./outside', which is missing or outside"):
        load_model(str(path))
    modules[1]["path"] = "1_Pooling"
    (path / "modules.json").write_text(json.dumps(modules))
    shutil.copytree(saved_model[1] / "1_Pooling", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", path / "1_Pooling")  # a module folder linking out of the model
    with pytest.raises(FileNotFoundError, match=r"entry 1 .*'1_Pooling', which is missing or outside"):
        load_model(str(path))


# ----------------------------------------------------------------------------------------------
# 9. Training with per-task prompts on struct columns: model-card widget examples do not crash
# ----------------------------------------------------------------------------------------------


def _mbeir_root(root, images, n):
    """An M-BEIR layout with ``n`` t2i and ``n`` i2t queries over a few real images."""
    (root / "img").mkdir(parents=True)
    for i, image in enumerate(images):
        image.save(root / "img" / f"{i}.png")
    k = len(images)
    pool = [{"did": f"9:{i}", "txt": None, "img_path": f"img/{i % k}.png", "modality": "image"} for i in range(n)]
    pool += [{"did": f"9:{n + i}", "txt": f"caption number {i}", "img_path": None, "modality": "text"} for i in range(n)]
    queries = [{"qid": f"9:{i}", "query_txt": f"a picture number {i}", "query_img_path": None, "query_modality": "text",
                "pos_cand_list": [f"9:{i}"], "neg_cand_list": [f"9:{(i + 1) % n}"], "task_id": 0} for i in range(n)]
    queries += [{"qid": f"9:{2 * n + i}", "query_txt": None, "query_img_path": f"img/{i % k}.png", "query_modality": "image",
                 "pos_cand_list": [f"9:{n + i}"], "neg_cand_list": [], "task_id": 3} for i in range(n)]  # fmt: skip
    for folder, name, entries in (("cand_pool", "pool.jsonl", pool), ("query/train", "q.jsonl", queries)):
        (root / folder).mkdir(parents=True)
        (root / folder / name).write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    (root / "instructions").mkdir()
    (root / "instructions" / "query_instructions.tsv").write_text(
        "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\n"
        "text\timage\tMSCOCO\t9\tFind me an everyday image that matches the given caption.\n"
        "image\ttext\tMSCOCO\t9\tFind an image caption describing the following everyday image.\n"
    )
    return root


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_trainer_with_mbeir_prompts_builds_text_widgets(tmp_path, emoji_images, seed):
    import random

    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from mm_st.data.converters import load_mbeir, mbeir_instructions
    from mm_st.losses import MultimodalInfoNCELoss

    root = _mbeir_root(tmp_path / "mbeir", emoji_images, 1200)
    data = load_mbeir(root, instructions="none", num_negatives=1)
    prompts = {task: {"anchor": text} for task, text in mbeir_instructions(root).items()}
    for tasks in (data, {"MSCOCO_t2i": data["MSCOCO_t2i"]}):
        model = build_model(tiny_model("qwen2_vl"), recipe="mmembed")
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=2, report_to="none",
            use_cpu=True, prompts={task: prompts[task] for task in tasks},
        )  # fmt: skip
        random.seed(seed)
        train = type(data)(tasks)
        SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=MultimodalInfoNCELoss(model))
        widget = model.model_card_data.widget
        assert widget, seed
        texts = [widget[0]["source_sentence"], *widget[0]["sentences"]]
        assert all(isinstance(text, str) and ("number" in text) for text in texts), texts


# ----------------------------------------------------------------------------------------------
# 6. Converters name the file and row of every parse failure
# ----------------------------------------------------------------------------------------------

GOOD_ROW = {"qry": "a query", "qry_image_path": "", "pos_text": "a positive", "pos_image_path": "", "neg_text": "", "neg_image_path": ""}


def _mmeb(tmp_path, lines: bytes, suffix="jsonl"):
    from mm_st.data.converters import load_mmeb_train

    (tmp_path / "cfg").mkdir(exist_ok=True)
    (tmp_path / "cfg" / f"original.{suffix}").write_bytes(lines)
    return lambda **kw: load_mmeb_train(tmp_path, configs=["cfg"], **kw)


def _line(row) -> bytes:
    return (json.dumps(row) + "\n").encode()


@pytest.mark.parametrize(
    "bad, message",
    [
        (b"{not json\n", r"original\.jsonl' line 2: malformed JSON"),
        (b"[1, 2]\n", r"original\.jsonl' line 2: a row must be a JSON object, got list"),
        (b'{"qry": "caf\xe9"}\n', r"original\.jsonl' line 2: not valid UTF-8"),
    ],
)
def test_converter_malformed_jsonl_line_names_file_and_line(tmp_path, bad, message):
    load = _mmeb(tmp_path, _line(GOOD_ROW) + bad + _line(GOOD_ROW))
    with pytest.raises(ValueError, match=message):
        load()


def test_converter_json_file_errors_name_file_and_row(tmp_path):
    load = _mmeb(tmp_path, json.dumps([GOOD_ROW, "oops"]).encode(), suffix="json")
    with pytest.raises(ValueError, match=r"original\.json' row 1: a row must be a JSON object, got str"):
        load()
    load = _mmeb(tmp_path, b'[\n{"qry": "\xff"}]', suffix="json")
    with pytest.raises(ValueError, match=r"original\.json' line 2: not valid UTF-8"):
        load()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("pos_text", 123, r"original\.jsonl: cfg/original row 1 pos_text: must be a string or None, got int 123"),
        ("qry_image_path", ["a.png"], r"cfg/original row 1 qry_image_path: must be a string or None, got list"),
        ("neg_text", 7, r"cfg/original row 1 neg_text: must be a string or a list of strings, got int 7"),
        ("neg_text", ["ok", 5], r"cfg/original row 1 neg_text\[1\]: must be a string or None, got int 5"),
        ("pos_image_path", "emoji/a\x00.png", r"cfg/original row 1 pos: image path 'emoji/a\\x00\.png' contains a NUL byte"),
    ],
)
def test_converter_bad_field_names_file_row_and_field(tmp_path, field, value, message):
    (tmp_path / "images").mkdir()
    load = _mmeb(tmp_path, _line(GOOD_ROW) + _line({**GOOD_ROW, field: value}))
    with pytest.raises((TypeError, ValueError), match=message):
        load(image_root=tmp_path / "images", num_negatives=None)


def test_converter_rows_of_several_files_name_their_own_file_row(tmp_path):
    load = _mmeb(tmp_path, _line(GOOD_ROW) * 3)
    (tmp_path / "cfg" / "original1.jsonl").write_bytes(_line(GOOD_ROW) + _line({**GOOD_ROW, "pos_text": 1.5}))
    with pytest.raises(TypeError, match=r"original1\.jsonl row 1: cfg/original row 4 pos_text: .*float 1\.5"):
        load()


def test_converter_list_literal_strings_are_documented(tmp_path):
    rows = [{**GOOD_ROW, "neg_text": "['a cat', 'a dog']"}, {**GOOD_ROW, "neg_text": "[1, 2, 3]"}]
    data = _mmeb(tmp_path, b"".join(_line(row) for row in rows))(num_negatives=None)["cfg"]
    assert data["negative_1"] == [{"text": "a cat", "image": None}, {"text": "[1, 2, 3]", "image": None}]
    assert data["negative_2"] == [{"text": "a dog", "image": None}, {"text": "[1, 2, 3]", "image": None}]


def test_nli_row_missing_hard_neg_names_file_row_and_column(tmp_path):
    from mm_st.data.converters import load_nli

    path = tmp_path / "nli.jsonl"
    path.write_text(json.dumps({"sent0": "a", "sent1": "b", "hard_neg": "c"}) + "\n" + json.dumps({"sent0": "a", "sent1": "b"}) + "\n")
    with pytest.raises(ValueError, match=r"nli\.jsonl row 1: .*'hard_neg' is missing"):
        load_nli(path)
    path.write_text(json.dumps({"sent0": "a", "sent1": 3, "hard_neg": "c"}) + "\n")
    with pytest.raises(ValueError, match=r"nli\.jsonl row 0: .*'sent1' is a int"):
        load_nli(path)


def _mbeir_bad(tmp_path, emoji_images, query=None, candidate=None):
    from mm_st.data.converters import load_mbeir

    root = _mbeir_root(tmp_path / "mbeir", emoji_images[:1], 2)
    if query is not None:
        with open(root / "query" / "train" / "q.jsonl", "a") as handle:
            handle.write(json.dumps(query) + "\n")
    if candidate is not None:
        with open(root / "cand_pool" / "pool.jsonl", "a") as handle:
            handle.write(json.dumps(candidate) + "\n")
    return lambda: load_mbeir(root, instructions="none")


QUERY = {"qid": "9:77", "query_txt": "x", "query_img_path": None, "query_modality": "text", "pos_cand_list": ["9:0"]}


@pytest.mark.parametrize(
    "query, candidate, error, message",
    [
        ({k: v for k, v in QUERY.items() if k != "qid"}, None, ValueError, r"q\.jsonl row 4 \(qid None\): missing or non-string 'qid'"),
        (None, {"txt": "x", "img_path": None, "modality": "text"}, ValueError, r"pool\.jsonl row 4: candidate without a string 'did'"),
        ({**QUERY, "pos_cand_list": "9:0"}, None, TypeError, r"q\.jsonl row 4 \(qid 9:77\) pos_cand_list: must be a list of candidate id strings, got '9:0'"),
        ({**QUERY, "query_txt": 123}, None, TypeError, r"q\.jsonl row 4 \(qid 9:77\) query_txt: must be a string or None, got int"),
        (None, {"did": "9:99", "txt": ["x"], "img_path": None, "modality": "text"}, None, None),
    ],
)  # fmt: skip
def test_mbeir_bad_rows_name_file_and_row(tmp_path, emoji_images, query, candidate, error, message):
    load = _mbeir_bad(tmp_path, emoji_images, query, candidate)
    if error is None:  # an unused pool entry with a bad text is not read
        assert len(load()["MSCOCO_t2i"]) == 2
        return
    with pytest.raises(error, match=message):
        load()


# ----------------------------------------------------------------------------------------------
# 7. encode: every unsupported or degenerate input is an error naming its index
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen():
    return build_model(tiny_model("qwen2_vl"), recipe="e5v")


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ("empty_image", ValueError, r"Input 1: the image is empty \(0x0 pixels\)"),
        ("empty_image_in_dict", ValueError, r"Input 1: the image is empty \(0x0 pixels\)"),
        ("gray_array", TypeError, r"Input 1 is a ndarray of shape \(8, 8\): arrays are not inputs; .*PIL\.Image\.fromarray"),
        ("int", TypeError, r"Input 1: unsupported type int 7; give a str, a PIL image"),
        ("bytes", TypeError, r"Input 1: unsupported type bytes b'abc'"),
        ("nested", TypeError, r"Input 1 is a list \(\['a', 'b'\]\): nested lists and pairs are not inputs"),
        ("pair", TypeError, r"Input 1 is a tuple"),
        ("array_in_dict", TypeError, r"Input 1: 'image' must be a PIL image or an image path, got ndarray of shape \(4, 4, 3\)"),
        ("other_dict", ValueError, r"Input 1: a dict needs 'text' / 'image' / 'video' keys .*got keys \['txt'\]"),
    ],
)
def test_encode_bad_input_names_its_index(qwen, bad, error, message):
    from PIL import Image

    value = {
        "empty_image": Image.new("RGB", (0, 0)),
        "empty_image_in_dict": {"text": "x", "image": Image.new("RGB", (0, 0))},
        "gray_array": np.zeros((8, 8), dtype=np.uint8),
        "int": 7,
        "bytes": b"abc",
        "nested": ["a", "b"],
        "pair": ("a", "b"),
        "array_in_dict": {"image": np.zeros((4, 4, 3), dtype=np.uint8)},
        "other_dict": {"txt": "x"},
    }[bad]
    with pytest.raises(error, match=message):
        qwen.encode(["fine", value])


def test_encode_chat_messages_still_accepted(qwen):
    message = [{"role": "user", "content": [{"type": "text", "text": "grin"}]}]
    assert qwen.encode([message, "x"]).shape == (2, 64)


# ----------------------------------------------------------------------------------------------
# 5. mteb: MMEB rows are validated when the task loads, naming dataset, row and candidate
# ----------------------------------------------------------------------------------------------


def _mmeb_task_with(tmp_path, edit):
    from mm_st.evaluation import mmeb_tasks
    from tests.mmst_eval_data import write_mmeb

    rows = write_mmeb(tmp_path, names=["VOC2007"], fmt="jsonl")["VOC2007"]
    edit(rows)
    (tmp_path / "VOC2007" / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return mmeb_tasks(["VOC2007"], data=tmp_path)[0]


def _set(row, column, value, j=None):
    def edit(rows):
        if j is None:
            rows[row][column] = value
        else:
            rows[row][column][j] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set(3, "tgt_text", "", j=2), r"MMEB-VOC2007: row 3 \(query q3\) candidate 2 has neither text nor image \(tgt_text\[2\]='', tgt_img_path\[2\]=''\)"),
        (_set(3, "tgt_text", "<|image_1|>\n", j=1), r"MMEB-VOC2007: row 3 \(query q3\) candidate 1 has neither text nor image"),
        (lambda rows: rows[2].update(qry_text="", qry_img_path=""), r"MMEB-VOC2007: row 2 \(query q2\) has neither text nor image"),
        (_set(4, "tgt_text", "one string"), r"MMEB-VOC2007: row 4 \(query q4\): tgt_text must be a list, got str"),
        (_set(1, "qry_text", None), r"MMEB-VOC2007: row 1 \(query q1\): qry_text must be a string, got NoneType"),
        (_set(2, "qry_text", "<|image_1|>\nIdentify the object shown in the image. Why?"),
         r"MMEB-VOC2007: row 2 \(query q2\) holds text 'Why\?', but the task's category 'i2t' declares queries with images only"),
        (_set(3, "tgt_img_path", "emoji/0.png", j=1),
         r"MMEB-VOC2007: row 3 \(query q3\) candidate 1 holds an image 'emoji/0.png', but the task's category 'i2t' declares candidates with text only"),
    ],
)  # fmt: skip
def test_mmeb_bad_rows_fail_when_the_task_loads(tmp_path, edit, message):
    task = _mmeb_task_with(tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        task.load_data()


# ----------------------------------------------------------------------------------------------
# 2. Two synthesis runs on one output directory: the second is refused (no doubled paid work)
# ----------------------------------------------------------------------------------------------


def test_second_synthesis_run_on_a_locked_output_dir_is_refused(tmp_path):
    from filelock import FileLock

    from mm_st.synthesis import OutputDirInUse, ScriptedBackend, SynthesisConfig, synthesize
    from tests.synthesis_support import fake_answer

    config = SynthesisConfig(num_samples=2, languages=["en"])
    with FileLock(str(tmp_path / ".lock")):
        with pytest.raises(OutputDirInUse, match=r"is in use by another synthesis run .*\.lock'\); wait for that run"):
            synthesize(config, ScriptedBackend(fake_answer), tmp_path, progress=False, verbose=False)
    assert not (tmp_path / "journal.jsonl").exists()
    assert synthesize(config, ScriptedBackend(fake_answer), tmp_path, progress=False, verbose=False)["accepted"] == 2


@pytest.mark.slow
def test_two_concurrent_recipe_runs_generate_each_id_once(tmp_path, capsys):
    import importlib.util
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    run, gate = tmp_path / "run", tmp_path / "gate"
    # the first run answers 4 requests, then waits for `gate`: it is mid-run and holds the folder's lock until the
    # second run below has finished, however slowly either starts
    first = subprocess.Popen([sys.executable, str(root / "tests" / "synthesis_crash_worker.py"), str(run), "0", str(gate)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "journal.jsonl").is_file():
        time.sleep(0.02)
    assert (run / "journal.jsonl").is_file(), "the first run wrote no record in 120 s"
    # the second run: the recipe script's main in this process (the first run is another process: the lock is the OS's)
    spec = importlib.util.spec_from_file_location("synthesize_recipe", root / "recipes" / "synthesize_mme5_data.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    try:
        code = recipe.main(["--backend", "dry-run", "--num-samples", "40", "--output-dir", str(run), "--no-progress"])
    finally:
        gate.touch()
        out, _ = first.communicate(timeout=180)
    second_err = capsys.readouterr().err
    assert code == 2, second_err[-2000:]
    assert "is in use by another synthesis run" in second_err and str(run) in second_err
    assert first.returncode == 0 and "DONE 40 0 0" in out
    ids = [json.loads(line)["id"] for line in (run / "journal.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 40


# ----------------------------------------------------------------------------------------------
# 3. Journal recovery: any malformed line is skipped and counted with its number, never a crash
# ----------------------------------------------------------------------------------------------


def test_resume_skips_malformed_journal_lines_and_regenerates_them(tmp_path, caplog):
    from mm_st.synthesis import Journal, ScriptedBackend, SynthesisConfig, synthesize
    from tests.synthesis_support import fake_answer

    config = SynthesisConfig(num_samples=6, languages=["en"], seed=3)
    synthesize(config, ScriptedBackend(fake_answer), tmp_path, progress=False, verbose=False)
    journal = tmp_path / "journal.jsonl"
    lines = journal.read_bytes().split(b"\n")[:-1]
    broken = json.loads(lines[4])
    lost = broken["id"]
    broken_line = json.dumps({**broken, "status": "weird"}).encode()
    # lines 2, 3, 4, 6, 7: non-UTF-8, an object without id, a list, a bad status, an accepted record without scores
    no_scores = json.dumps({**json.loads(lines[0]), "id": "other", "evaluation": {}}).encode()
    corrupted = [lines[0], b'{"id": "caf\xe9"}', b'{"foo": 1}', b"[1, 2]", lines[1], broken_line, no_scores, lines[2], lines[3], lines[5]]
    journal.write_bytes(b"\n".join(corrupted) + b"\n")
    loaded = Journal(journal).load()
    assert lost not in loaded and len(loaded) == 5
    with caplog.at_level("WARNING"):
        summary = synthesize(config, ScriptedBackend(fake_answer), tmp_path, progress=False, verbose=False)
    assert summary["journal_lines_skipped"] == [2, 3, 4, 6, 7]
    assert (summary["accepted"], summary["pending"], summary["generated_this_run"]) == (6, 0, 1)
    assert "line 2: malformed record skipped (not valid UTF-8)" in caplog.text
    assert "line 3: malformed record skipped (no string 'id')" in caplog.text
    assert "line 4: malformed record skipped (not an object but list)" in caplog.text
    assert "line 6: malformed record skipped (status 'weird'" in caplog.text
    assert "5 malformed line(s) skipped: [2, 3, 4, 6, 7]" in caplog.text
    assert Journal(journal).load()[lost]["status"] == "accepted"  # regenerated and appended


# ----------------------------------------------------------------------------------------------
# 4. An API key echoed by a server in an error body never reaches a log, a message or a file
# ----------------------------------------------------------------------------------------------


def test_key_echoed_in_a_401_body_is_redacted_everywhere(tmp_path, monkeypatch, caplog, capsys):
    from mm_st.synthesis import OpenAIChatBackend, SynthesisConfig, synthesize
    from mm_st.synthesis.backends import Request
    from tests.synthesis_support import StubOpenAIServer

    secret = "sk-live-ECHOED-9f8e7d6c5b4a"
    monkeypatch.setenv("MM_ST_TEST_KEY", secret)
    with StubOpenAIServer(statuses=[401, 401], echo_headers=True) as server, caplog.at_level("INFO"):
        backend = OpenAIChatBackend(server.base_url, "stub", api_key_env="MM_ST_TEST_KEY", concurrency=1, backoff=0.01)
        error = backend.generate([Request("r0", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])])[0]
        summary = synthesize(SynthesisConfig(num_samples=2, languages=["en"]), backend, tmp_path, progress=False)
    assert server.authorization[0] == f"Bearer {secret}"  # the server did see (and echo) the key
    assert "HTTP 401 (not retried)" in str(error) and "request_headers" in str(error)
    assert "Bearer [REDACTED]" in str(error) and secret not in str(error)
    assert summary["pending"] == 1 and "Bearer [REDACTED]" in caplog.text
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err, written):
        assert secret not in text and secret[:12] not in text


def test_redact_removes_any_bearer_token_and_the_key():
    from mm_st.synthesis.backends import redact

    text = 'authorization: bearer abc.def-123 {"Authorization": "Bearer xyz"} key sk-1234567 esc "sk-12\\"34"'
    assert redact(text, "sk-1234567", 'sk-12"34') == (
        'authorization: bearer [REDACTED] {"Authorization": "Bearer [REDACTED]"} key [REDACTED] esc "[REDACTED]"'
    )


# ----------------------------------------------------------------------------------------------
# 10. Mllama: a batch mixing inputs with and without an image gets an explained error
# ----------------------------------------------------------------------------------------------


def test_mllama_mixed_batch_error_is_explained(emoji_images):
    model = build_model(tiny_model("mllama"), recipe="e5v")
    mixed = ["short", emoji_images[0], {"text": "x", "image": emoji_images[1]}]
    assert model.encode(mixed).shape == (3, 64)  # modality-grouped batching (default) never sends a mixed batch
    model.group_modalities = False
    with pytest.raises(RuntimeError, match=r"mixes inputs with an image \(2\) and without \(1\).*separate calls.*Original error: .*invalid"):
        model.encode(mixed)
    assert model.encode(["short", "text only"]).shape == (2, 64)  # each kind alone works
    assert model.encode([emoji_images[0], {"text": "x", "image": emoji_images[1]}]).shape == (2, 64)


# ----------------------------------------------------------------------------------------------
# 11. Synthesis against a server: rejection excerpts (bounded, redacted) and the json_schema format
# ----------------------------------------------------------------------------------------------


def test_rejections_keep_a_bounded_redacted_excerpt_of_the_answer(tmp_path, monkeypatch, capsys):
    from mm_st.synthesis import Journal, OpenAIChatBackend, SynthesisConfig, synthesize
    from mm_st.synthesis.runner import EXCERPT_HEAD, EXCERPT_TAIL
    from tests.synthesis_support import StubOpenAIServer

    secret = "sk-live-EXCERPT-1234567890"
    monkeypatch.setenv("MM_ST_TEST_KEY", secret)
    answers = {"short": f"Sorry, I can't. (auth: Bearer {secret})", "long": "Here is the JSON: {\"draft\": " + "word " * 400}

    calls = []

    def respond(body):  # short and long answers in turn
        calls.append(body)
        return answers["short"] if len(calls) % 2 else answers["long"]

    config = SynthesisConfig(num_samples=4, languages=["en"], max_attempts=1)
    with StubOpenAIServer(respond=respond) as server:
        backend = OpenAIChatBackend(server.base_url, "stub", api_key_env="MM_ST_TEST_KEY", concurrency=1)
        summary = synthesize(config, backend, tmp_path, progress=False)
    records = list(Journal(tmp_path / "journal.jsonl").load().values())
    assert summary["rejected"] == 4 and {r["reason"] for r in records} == {"invalid_json"}
    excerpts = sorted(r["excerpt"] for r in records)
    assert excerpts[-1] == "Sorry, I can't. (auth: Bearer [REDACTED])"
    long = excerpts[0]
    assert long.startswith('Here is the JSON: {"draft": word') and long.endswith("word ")
    assert f"[... {len(answers['long']) - EXCERPT_HEAD - EXCERPT_TAIL} characters ...]" in long
    assert len(long) < EXCERPT_HEAD + EXCERPT_TAIL + 40
    assert summary["rejection_examples"]["invalid_json"]["excerpt"] in excerpts
    assert "e.g. invalid_json (" in capsys.readouterr().out
    assert secret not in (tmp_path / "journal.jsonl").read_text() and secret not in (tmp_path / "summary.json").read_text()


def test_json_schema_response_format_sends_the_inlined_answer_schema(tmp_path):
    from mm_st.synthesis import OpenAIChatBackend, SynthesisConfig, synthesize
    from mm_st.synthesis.prompts import PROMPT_DIR, validate
    from tests.synthesis_support import StubOpenAIServer, fake_answer

    with StubOpenAIServer() as server:
        backend = OpenAIChatBackend(server.base_url, "stub", json_mode="schema", concurrency=1)
        summary = synthesize(SynthesisConfig(num_samples=2, languages=["en"]), backend, tmp_path, progress=False, verbose=False)
    assert summary["accepted"] == 2
    sent = server.bodies[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "mme5_synthetic_sample"
    schema = sent["json_schema"]["schema"]
    source = json.loads((PROMPT_DIR / "schema.json").read_text())
    assert "$ref" not in json.dumps(schema) and "definitions" not in schema and "$comment" not in schema
    assert schema["properties"]["revised"] == schema["properties"]["draft"] == source["definitions"]["sample"]
    assert schema["required"] == ["visual_interpretation", "draft", "evaluation", "revised"]
    assert validate(json.loads(fake_answer()), schema, schema) == []
    assert validate({"revised": {}}, schema, schema)[:1] == ["$: missing 'visual_interpretation'"]
    with pytest.raises(ValueError, match="json_mode must be False, True/'object' or 'schema', got 'strict'"):
        OpenAIChatBackend(server.base_url, "stub", json_mode="strict")


@pytest.mark.parametrize("flag, expected", [(["--json-mode"], "json_object"), (["--json-mode", "schema"], "json_schema"), ([], None)])
def test_recipe_json_mode_flag(tmp_path, flag, expected):
    import importlib.util
    from pathlib import Path

    from tests.synthesis_support import StubOpenAIServer

    path = Path(__file__).resolve().parents[1] / "recipes" / "synthesize_mme5_data.py"
    spec = importlib.util.spec_from_file_location("synthesize_recipe", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    with StubOpenAIServer() as server:
        code = recipe.main(["--backend", "openai", "--base-url", server.base_url, "--num-samples", "1", "--languages", "en",
                            "--output-dir", str(tmp_path), "--no-progress", *flag])  # fmt: skip
    assert code == 0
    assert server.bodies[0].get("response_format", {}).get("type") == expected
