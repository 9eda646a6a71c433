"""What a recipe command shows (issue 27 item 16): a short plan, one progress bar per stage, a one-line summary, the
held-out table; library log lines only with --verbose; each warning once; `error:` on its own line; one task order."""

from __future__ import annotations

import collections
import logging

import pytest
import transformers

from mm_st.testing import tiny_model
from mm_st.training import VLM2VecConfig
from mm_st.training import console
from mm_st.training.cli import main
from tests.recipe_data import write_classification

QUICK = ["--max-steps", "4", "--save-steps", "4", "--global-batch-size", "8", "--adapter", "none", "--logging-steps", "1"]


@pytest.fixture(autouse=True)
def restore_console():
    yield
    console.configure(verbose=False)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A user's backbone folder WITH its language-model head (loading it as an encoder leaves lm_head unused: the
    load report transformers prints) and an MMEB-train-layout folder."""
    root = tmp_path_factory.mktemp("console")
    backbone = tiny_model("llava_next", root / "backbone", head=True)
    write_classification(root / "data", "TenLabels", labels=10, rows=40)
    return backbone, root / "data"


def _argv(user_run, out, *extra):
    backbone, data = user_run
    return ["--model", str(backbone), "--data", str(data), "--image-root", str(data / "images"), "--data-configs",
            "TenLabels", "--no-evaluate", "--output-dir", str(out), *QUICK, *extra]


def repeated(lines: list[str]) -> list[str]:
    """Warning lines printed more than once."""
    return [line for line, n in collections.Counter(lines).items() if n > 1 and "warning" in line.lower()]


def test_screen_lines_count_each_progress_bar_redraw():
    raw = "plan\n  0%|          | 0/4\r 50%|#####     | 2/4\r100%|##########| 4/4\r\ndone\r\n\x1b[1mbold\x1b[0m\n"
    assert console.screen_lines(raw) == ["plan", "  0%|          | 0/4", " 50%|#####     | 2/4",
                                         "100%|##########| 4/4", "done", "bold"]


def test_warnings_show_once_and_library_lines_only_with_verbose(capfd):
    console.configure(verbose=False)
    for _ in range(3):
        logging.getLogger("mm_st.evaluation.mbeir").warning("the layout's instruction differs")
    logging.getLogger("sentence_transformers.trainer").info("Saving model checkpoint")
    logging.getLogger("sentence_transformers.trainer").warning("a library warning")
    transformers.utils.logging.get_logger("transformers.modeling_utils").warning("LlavaNextModel LOAD REPORT")
    err = capfd.readouterr().err
    assert err.splitlines() == ["warning: the layout's instruction differs"]
    console.configure(verbose=True)
    logging.getLogger("sentence_transformers.trainer").info("Saving model checkpoint")
    transformers.utils.logging.get_logger("transformers.modeling_utils").warning("LlavaNextModel LOAD REPORT")
    err = capfd.readouterr().err
    assert "INFO sentence_transformers.trainer: Saving model checkpoint" in err and "LOAD REPORT" in err


def test_library_python_warnings_only_with_verbose_and_once(capfd):
    """Python warnings of the libraries (each DDP process's FutureWarnings under torchrun) follow the console too."""
    import warnings

    def library_warning() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn_explicit("`broadcast_buffers` is deprecated", FutureWarning, "accelerator.py", 2060)

    try:
        console.configure(verbose=False)
        library_warning()
        assert capfd.readouterr().err == ""
        console.configure(verbose=True)
        library_warning()
        library_warning()
        err = capfd.readouterr().err
        assert err.count("`broadcast_buffers` is deprecated") == 1, err
    finally:
        logging.captureWarnings(False)


def test_a_user_run_prints_a_short_plan_one_bar_and_one_summary_line(user_run, tmp_path, capfd):
    out = tmp_path / "run"
    assert main(VLM2VecConfig, _argv(user_run, out)) == 0
    captured = capfd.readouterr()
    lines = console.screen_lines(captured.out + captured.err)
    text = "\n".join(lines)
    assert len(lines) <= 16, text  # plan 6, bar (first draw, 4 steps, close) 6, summary 1
    for noise in ("LOAD REPORT", "UNEXPECTED", "INFO", "Writing model shards", "max_length", "{'loss'",
                  "config (source"):
        assert noise not in text, noise
    assert not repeated(lines)
    assert sum(line.startswith("done: 4 steps in ") for line in lines) == 1
    assert f"model saved to {out / 'model'}" in text
    assert f"output: {out} (the full plan and config: plan.txt)" in text
    full = (out / "plan.txt").read_text(encoding="utf-8")  # the full plan goes to the run folder
    assert "config (source of each value):" in full and "  lora_r = 8" in full
    # --verbose shows the full plan and the libraries' lines (a fresh folder: the same one would be "finished")
    assert main(VLM2VecConfig, _argv(user_run, tmp_path / "verbose", "--verbose")) == 0
    verbose = capfd.readouterr()
    assert "config (source of each value):" in verbose.out and "LOAD REPORT" in verbose.err


def test_an_error_after_a_progress_bar_starts_its_own_line(user_run, tmp_path, capfd):
    argv = _argv(user_run, tmp_path / "run", "--learning-rate", "1e30", "--max-grad-norm", "0", "--save-steps", "1")
    assert main(VLM2VecConfig, argv) == 2
    err = capfd.readouterr().err
    assert "training:" in err  # the bar was drawn before the error
    assert [line for line in err.split("\n") if "error:" in line][0].startswith("error: step ")


def test_every_table_lists_the_tasks_in_one_order():
    from mm_st.evaluation.mbeir import mbeir_table

    scores = {"Emoji_t2i": {"recall_at_1": 0.1}, "Emoji_i2i": {"recall_at_1": 0.2}, "Emoji_i2t": {"recall_at_1": 0.3}}
    alphabetical = dict(sorted(scores.items()))
    first = mbeir_table({"after": scores}, metrics=("recall_at_1",)).splitlines()
    second = mbeir_table({"untrained": alphabetical, "after": scores}, metrics=("recall_at_1",)).splitlines()
    order = ["Emoji_t2i", "Emoji_i2t", "Emoji_i2i"]  # the registry's (M-BEIR's task ids)
    assert [line.split()[0] for line in first[1:]] == [line.split()[0] for line in second[1:]] == order


def test_data_file_bars_show_only_with_verbose():
    from mm_st.data.rows import PROGRESS_MIN_ROWS, quiet_progress

    rows = range(PROGRESS_MIN_ROWS)  # large enough for a bar of its own
    console.configure(verbose=False)
    assert quiet_progress(rows)  # "Converting <file>" bars: one per data file and stage before issue 27
    console.configure(verbose=True)
    assert not quiet_progress(rows) and quiet_progress(range(3))


def test_an_error_while_any_bar_is_open_starts_its_own_line(tmp_path, capfd, monkeypatch):
    from tqdm import tqdm

    bars = []

    def run(self):  # a step inside the run (mining, evaluation) fails while its bar is drawn
        bars.append(tqdm(total=10, desc="Encoding corpus", mininterval=0))
        bars[0].update(3)
        raise ValueError("corpus[60]: cannot read image file")

    monkeypatch.setattr(VLM2VecConfig, "run", run)
    assert main(VLM2VecConfig, ["--output-dir", str(tmp_path / "run")]) == 2
    err = capfd.readouterr().err
    assert "Encoding corpus" in err and "\nerror: corpus[60]: cannot read image file" in err
