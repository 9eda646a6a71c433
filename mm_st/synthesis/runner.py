"""Run a synthesis plan into an append-only, crash-safe JSONL journal and summarize it.

Output directory::

    config.json      the synthesis config (a restart must match its planning fields)
    .lock            held (``filelock``) while a run works on the directory: a second run at the same
                     time is refused (:class:`OutputDirInUse`) instead of paying for every sample twice
    journal.jsonl    one record per finished sample id: accepted or rejected (with the reason)
    summary.json     counts, rejection reasons, per task/combination/language, mean self-evaluation

Crash safety: each record is written as one line, flushed and fsync'ed; on start the journal is read,
a truncated last line (a kill mid-write) is cut off, and ids already recorded (accepted or rejected)
are skipped, so a run killed at any moment and restarted completes with every planned id exactly
once. A sample whose generator call fails at the transport level (after the backend's retries) is
NOT recorded: it stays pending and the next run retries it.

Example:
    >>> import tempfile
    >>> from mm_st.synthesis import DryRunBackend, SynthesisConfig, synthesize
    >>> config = SynthesisConfig(num_samples=4, languages=["en", "de"], image_source="mm_st:emoji")
    >>> summary = synthesize(config, DryRunBackend(), tempfile.mkdtemp(), progress=False, verbose=False)
    >>> summary["accepted"], summary["rejected"]
    (4, 0)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from mm_st.synthesis.backends import Backend, Request, TransportError
from mm_st.synthesis.config import PlannedSample, SynthesisConfig, plan_samples
from mm_st.synthesis.images import ImagePool
from mm_st.synthesis.prompts import SCORE_KEYS, PromptBuilder, SampleError

logger = logging.getLogger(__name__)
JOURNAL, CONFIG, SUMMARY, LOCK = "journal.jsonl", "config.json", "summary.json", ".lock"
EXCERPT_HEAD, EXCERPT_TAIL = 300, 200  # characters of a rejected answer kept in its journal record


def excerpt(answer: str, backend: Backend) -> str:
    """A bounded, redacted excerpt of a rejected answer: its start and its end (where a cut-off answer fails).

    Example:
        >>> from mm_st.synthesis.backends import ScriptedBackend
        >>> excerpt("x" * 1000, ScriptedBackend(str))[295:310]
        'xxxxx [... 500 '
    """
    text = backend.redact(answer)
    if len(text) <= EXCERPT_HEAD + EXCERPT_TAIL:
        return text
    cut = len(text) - EXCERPT_HEAD - EXCERPT_TAIL
    return f"{text[:EXCERPT_HEAD]} [... {cut} characters ...] {text[-EXCERPT_TAIL:]}"


class OutputDirInUse(RuntimeError):
    """Another synthesis run holds the output directory's lock."""


def _lock(output_dir: Path) -> FileLock:
    """The output directory's exclusive lock, taken now (an OS lock: a killed run releases it)."""
    lock = FileLock(str(output_dir / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputDirInUse(
            f"{str(output_dir)!r} is in use by another synthesis run (it holds {str(output_dir / LOCK)!r}); "
            "wait for that run to finish, or use another output directory."
        ) from None
    return lock


def record_problem(record: Any) -> str | None:
    """Why a journal line's value is not a record the runner wrote (None when it is one)."""
    if not isinstance(record, dict):
        return f"not an object but {type(record).__name__}"
    if not isinstance(record.get("id"), str) or not record["id"]:
        return "no string 'id'"
    plan = record.get("plan")
    if not isinstance(plan, dict) or not all(isinstance(plan.get(k), str) for k in ("task", "combination", "language")):
        return "no 'plan' with task, combination and language"
    if record.get("status") == "rejected":
        return None if isinstance(record.get("reason"), str) else "a rejection without a string 'reason'"
    if record.get("status") != "accepted":
        return f"status {record.get('status')!r} (expected 'accepted' or 'rejected')"
    evaluation = record.get("evaluation")
    if not isinstance(record.get("sample"), dict) or not isinstance(evaluation, dict):
        return "an accepted record without 'sample' and 'evaluation' objects"
    if not all(isinstance(evaluation.get(k), (int, float)) and not isinstance(evaluation.get(k), bool) for k in SCORE_KEYS):
        return f"an evaluation without numeric {list(SCORE_KEYS)}"
    return None


class Journal:
    """Append-only JSONL keyed by ``id``; :meth:`load` repairs a truncated tail and skips malformed lines."""

    def __init__(self, path: str | Path, fsync: bool = True):
        self.path, self.fsync = Path(path), fsync
        self.records: dict[str, dict] = {}
        self.skipped: list[int] = []  # line numbers of malformed lines (their ids are generated again)
        self._handle = None

    def load(self) -> dict[str, dict]:
        """Read every complete record (first one wins per id); cut a partial last line off the file.

        A line that is not UTF-8, not JSON, or not a record the runner writes (see
        :func:`record_problem`) is skipped, counted in :attr:`skipped` and logged with its number;
        the sample it held stays pending and is generated again.
        """
        self.records, self.skipped = {}, []
        if not self.path.is_file():
            return self.records
        data = self.path.read_bytes()
        good = data.rfind(b"\n") + 1  # bytes up to the last complete line
        if good < len(data):
            logger.warning("%s: dropping a truncated last line (%d bytes).", self.path, len(data) - good)
            with open(self.path, "r+b") as handle:
                handle.truncate(good)
        for number, line in enumerate(data[:good].split(b"\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
                problem = record_problem(record)
            except UnicodeDecodeError:
                problem = "not valid UTF-8"
            except (json.JSONDecodeError, RecursionError):
                problem = "not valid JSON"
            if problem is not None:
                self.skipped.append(number)
                logger.warning("%s line %d: malformed record skipped (%s); its sample will be generated again.", self.path, number, problem)
                continue
            self.records.setdefault(record["id"], record)
        if self.skipped:
            logger.warning("%s: %d malformed line(s) skipped: %s.", self.path, len(self.skipped), self.skipped[:20])
        return self.records

    def append(self, record: dict) -> None:
        if record["id"] in self.records:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())
        self.records[record["id"]] = record

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _check_config(output_dir: Path, config: SynthesisConfig) -> None:
    path = output_dir / CONFIG
    current = json.loads(json.dumps(config.to_dict()))
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        planning = json.loads(json.dumps(config.planning_dict()))
        changed = [k for k in planning if saved.get(k) != planning[k]]
        if changed:
            raise ValueError(
                f"{str(output_dir)!r} holds a run with a different plan (fields {changed}); "
                "use the same config to resume, or a new output directory."
            )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _process(chunk: list[PlannedSample], backend: Backend, pool: ImagePool, prompts: PromptBuilder, max_attempts: int) -> list[dict]:
    """Generate, check and retry one chunk; returns journal records (transport failures are left out)."""
    images = {s.id: {role: pool.load(index) for role, index in s.images.items()} for s in chunk}
    pending = {s.id: (s, None) for s in chunk}  # id -> (sample, last rejection reason)
    attempts: Counter = Counter()
    records = []
    while pending:
        batch = list(pending.values())
        requests = []
        for sample, reason in batch:
            attempts[sample.id] += 1
            requests.append(Request(sample.id, prompts.messages(sample, images[sample.id], reason), sample, attempts[sample.id]))
        answers = backend.generate(requests)
        for (sample, _), answer in zip(batch, answers):
            base = {"id": sample.id, "plan": sample.to_dict(), "generator": backend.name, "attempts": attempts[sample.id]}
            if isinstance(answer, TransportError):
                logger.warning("%s: transport failure, left pending: %s", sample.id, backend.redact(str(answer)))
                del pending[sample.id]
                continue
            try:
                revised, evaluation = prompts.parse(sample, answer)
            except SampleError as error:
                if attempts[sample.id] >= max_attempts:
                    records.append({**base, "status": "rejected", "reason": error.kind, "detail": backend.redact(error.detail)[:500],
                                    "excerpt": excerpt(answer, backend)})  # fmt: skip
                    del pending[sample.id]
                else:
                    pending[sample.id] = (sample, str(error)[:300])
                continue
            records.append({**base, "status": "accepted", "sample": revised, "evaluation": evaluation})
            del pending[sample.id]
    return records


def synthesize(
    config: SynthesisConfig, backend: Backend, output_dir: str | os.PathLike, *, prompt_dir: str | os.PathLike | None = None,
    pool: ImagePool | None = None, progress: bool = True, verbose: bool = True, fsync: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) the plan of ``config`` with ``backend`` into ``output_dir``; return the summary.

    The backend's ``concurrency`` chunks of ``batch_size`` samples are kept in flight; each answer is
    validated against the schema and retried (with the reason appended to the prompt) up to
    ``config.max_attempts`` calls, then recorded as rejected.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(output_dir)
    try:
        return _run(config, backend, output_dir, prompt_dir, pool, progress, verbose, fsync)
    finally:
        lock.release()


def _run(
    config: SynthesisConfig, backend: Backend, output_dir: Path, prompt_dir: str | os.PathLike | None,
    pool: ImagePool | None, progress: bool, verbose: bool, fsync: bool,
) -> dict[str, Any]:  # fmt: skip
    _check_config(output_dir, config)
    pool = pool or ImagePool.open(config.image_source, config.image_column, config.image_split)
    plan = plan_samples(config, len(pool))
    prompts = PromptBuilder(prompt_dir, config.image_only_text)
    journal = Journal(output_dir / JOURNAL, fsync=fsync)
    done = journal.load()
    todo = [s for s in plan if s.id not in done]
    size = max(1, int(backend.batch_size))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    started, finished = time.monotonic(), 0
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="Synthesizing", unit="sample", disable=not progress, smoothing=0.1)
    executor = ThreadPoolExecutor(max_workers=max(1, int(backend.concurrency)), thread_name_prefix="mm_st-synthesis")
    in_flight: set[Future] = set()
    try:
        next_chunk = 0
        while next_chunk < len(chunks) or in_flight:
            while next_chunk < len(chunks) and len(in_flight) < 2 * max(1, int(backend.concurrency)):
                in_flight.add(executor.submit(_process, chunks[next_chunk], backend, pool, prompts, config.max_attempts))
                next_chunk += 1
            completed, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in completed:
                for record in future.result():
                    journal.append(record)
                    finished += 1
                    bar.update(1)
    finally:
        for future in in_flight:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
        journal.close()
        bar.close()
    elapsed = time.monotonic() - started
    summary = summarize(plan, journal.records, backend.name, elapsed=elapsed, generated_now=finished)
    summary["journal_lines_skipped"] = journal.skipped
    tmp = output_dir / (SUMMARY + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, output_dir / SUMMARY)
    if verbose:
        print(format_summary(summary))
    return summary


def summarize(plan: list[PlannedSample], records: dict[str, dict], generator: str, elapsed: float = 0.0, generated_now: int = 0) -> dict[str, Any]:
    """Counts over the planned ids: accepted, rejected by reason, pending, per task / combination /
    language (accepted), mean self-evaluation scores (accepted)."""
    ids = {s.id for s in plan}
    mine = [records[i] for i in ids if i in records]
    accepted = [r for r in mine if r["status"] == "accepted"]
    per: dict[str, Counter] = defaultdict(Counter)
    for record in accepted:
        per["task"][record["plan"]["task"]] += 1
        per["combination"][record["plan"]["combination"]] += 1
        per["language"][record["plan"]["language"]] += 1
    scores = {k: round(sum(r["evaluation"][k] for r in accepted) / len(accepted), 3) for k in SCORE_KEYS} if accepted else {}
    return {
        "planned": len(plan), "accepted": len(accepted), "rejected": len(mine) - len(accepted),
        "pending": len(plan) - len(mine),
        "rejected_by_reason": dict(Counter(r["reason"] for r in mine if r["status"] == "rejected")),
        "rejection_examples": _rejection_examples(mine),
        "per_task": dict(sorted(per["task"].items())), "per_combination": dict(sorted(per["combination"].items())),
        "per_language": dict(per["language"].most_common()), "mean_scores": scores,
        "generator": generator, "generated_this_run": generated_now, "seconds_this_run": round(elapsed, 3),
        "samples_per_second_this_run": round(generated_now / elapsed, 3) if elapsed > 0 else None,
    }  # fmt: skip


def _rejection_examples(records: list[dict]) -> dict[str, dict[str, str]]:
    """One rejected sample per reason (sorted ids: stable): its id, detail and answer excerpt."""
    examples: dict[str, dict[str, str]] = {}
    for record in sorted((r for r in records if r["status"] == "rejected"), key=lambda r: r["id"]):
        examples.setdefault(record["reason"], {key: record.get(key, "") for key in ("id", "detail", "excerpt")})
    return examples


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable summary."""
    lines = [
        f"planned {summary['planned']}  accepted {summary['accepted']}  rejected {summary['rejected']}  pending {summary['pending']}",
        f"rejected by reason: {summary['rejected_by_reason'] or '-'}",
        *(f"  e.g. {reason} ({example['id']}): {example['detail'][:200]}; answer: {example['excerpt'][:200]!r}"
          for reason, example in summary.get("rejection_examples", {}).items()),
        f"per task: {summary['per_task']}",
        f"per combination: {summary['per_combination']}",
        f"top languages: {dict(list(summary['per_language'].items())[:10])}",
        f"mean self-evaluation: {summary['mean_scores'] or '-'}",
        f"generator: {summary['generator']}  this run: {summary['generated_this_run']} samples in {summary['seconds_this_run']} s",
    ]
    if summary.get("journal_lines_skipped"):
        lines.append(f"malformed journal lines skipped (samples generated again): {summary['journal_lines_skipped'][:20]}")
    if summary["pending"]:
        lines.append(f"{summary['pending']} samples still pending (generator unreachable?): re-run the same command to finish.")
    return "\n".join(lines)
