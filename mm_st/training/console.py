"""What a recipe run shows on the console: a short plan, one progress bar per stage, a one-line summary per stage
and the held-out table. The full plan with every config value goes to the stage's ``plan.txt`` (``--dry-run`` and
``--verbose`` print it); library log lines (transformers, sentence-transformers, datasets, mteb) and their progress
bars show only with ``--verbose``; mm_st's own warnings show once each; an ``error:`` always starts its own line.

Example:
    >>> screen_lines("loading\\n 10%|#  | 1/10\\r 50%|#####  | 5/10\\r100%|##########| 10/10\\ndone\\n")
    ['loading', ' 10%|#  | 1/10', ' 50%|#####  | 5/10', '100%|##########| 10/10', 'done']
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import time
from typing import Any

from transformers import TrainerCallback

HANDLER_NAME = "mm_st.console"
VERBOSE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LIBRARIES = ("sentence_transformers", "mteb", "httpx", "datasets", "huggingface_hub", "PIL")

_verbose = False


def verbose() -> bool:
    """Whether this run shows library log lines and the full plan (``--verbose``)."""
    return _verbose


def library_bars() -> bool:
    """Whether the steps inside a stage (mining's encoding and search) draw their own progress bars: with
    ``--verbose``, on the main process."""
    return _verbose and os.environ.get("RANK", "0") == "0"


def screen_lines(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw`` output, one per ``\\n`` and one per ``\\r`` redraw (a progress bar
    drawing itself again); ``\\r\\n`` is one break, ANSI colour and cursor codes are dropped."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    parts = re.split(r"\r\n|\r|\n", text)
    if parts and parts[-1] == "":
        parts.pop()
    return parts


class OnceFilter(logging.Filter):
    """Lets each distinct message (logger, level, text) through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _OwnWarnings(logging.Filter):
    """The quiet console: mm_st's warnings and anyone's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.split(".")[0] == "mm_st"


class _PlainFormatter(logging.Formatter):
    """``warning: message`` (the way the command's own ``error:`` lines read)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def configure(verbose: bool = False, main_process: bool = True) -> None:
    """Set up the console of a recipe command (see the module doc); calling it again replaces the earlier setup."""
    import datasets
    import transformers

    global _verbose
    _verbose = verbose
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setLevel(logging.INFO if verbose and main_process else logging.WARNING)
    handler.setFormatter(logging.Formatter(VERBOSE_FORMAT) if verbose else _PlainFormatter("%(message)s"))
    if not verbose:
        handler.addFilter(_OwnWarnings())
    handler.addFilter(OnceFilter())
    root.addHandler(handler)
    # Python warnings of the libraries (e.g. each DDP process's FutureWarnings under torchrun) go through the same
    # handler: shown once with --verbose, hidden otherwise.
    logging.captureWarnings(False)  # (re)installed: a caller may have replaced warnings.showwarning since
    logging.captureWarnings(True)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)  # mm_st's info lines reach the handlers (shown with --verbose)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO if verbose and name == "sentence_transformers" else logging.WARNING)
    transformers.utils.logging.disable_default_handler()  # its lines go through this console's handler
    transformers.utils.logging.enable_propagation()
    if verbose:
        transformers.utils.logging.set_verbosity_warning()
        transformers.utils.logging.enable_progress_bar()
        datasets.enable_progress_bars()
    else:
        transformers.utils.logging.set_verbosity_error()  # load reports, tokenizer notes
        transformers.utils.logging.disable_progress_bar()  # "Writing model shards"
        datasets.disable_progress_bars()  # one bar per data file read


def end_line() -> None:
    """Close every progress bar still drawn, so that what is printed next starts its own line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


@contextlib.contextmanager
def library_stderr():
    """Without ``--verbose``, what libraries write straight to stderr inside this block (sentence-transformers'
    "Computing widget examples" bar while its trainer is built) is not shown; log records still are."""
    if _verbose:
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stderr(sink):
        yield


class StageProgress(TrainerCallback):
    """One progress bar over a stage's optimizer steps, drawn at its start, after every ``1/redraws`` of the steps
    and at its end, with the last logged loss; replaces the trainer's own bar and its printed log dictionaries."""

    def __init__(self, label: str, redraws: int = 5) -> None:
        self.label, self.redraws = label, redraws
        self.bar: Any = None
        self.losses: list[float] = []
        self.started = time.monotonic()
        self.first_step = self.steps = 0

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if not state.is_world_process_zero:
            return
        self.first_step = self.steps = state.global_step
        self.every = max(1, math.ceil(state.max_steps / self.redraws))
        self.started = time.monotonic()
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.label, unit="step",
                        mininterval=0, miniters=1, dynamic_ncols=True, file=sys.stderr)

    def on_step_end(self, args, state, control, **kwargs):
        self.steps = state.global_step
        if self.bar is not None and self.bar.n + self.every <= state.global_step < state.max_steps:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{self.losses[-1]:.4g}", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Draw the bar where training stopped (its end, or the step of an error) and end its line."""
        if self.bar is not None:
            self.bar.n = self.steps
            self.bar.close()
            self.bar = None

    def summary(self) -> str:
        """``250 steps in 1m52s, loss 4.16 -> 0.82`` (this run's steps; a resumed run counts from its checkpoint)."""
        text = f"{self.steps - self.first_step} steps in {_duration(time.monotonic() - self.started)}"
        if self.losses:
            text += f", loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g}"
        return text
