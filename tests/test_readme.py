"""README's own examples run as written (with a tiny offline backbone in place of the Hub model)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_block(section: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


def test_quickstart_runs(tmp_path, monkeypatch, emoji_images):
    from mm_st.testing import tiny_model

    code = _python_block("Quickstart")
    assert '"llava-hf/llama3-llava-next-8b-hf"' in code
    code = code.replace('"llava-hf/llama3-llava-next-8b-hf"', repr(tiny_model("llava_next")))
    monkeypatch.chdir(tmp_path)
    namespace = {"image": emoji_images[0]}
    exec(compile(code, "README.md (Quickstart)", "exec"), namespace)
    assert tuple(namespace["model"].similarity(namespace["queries"], namespace["documents"]).shape) == (2, 2)
    from sentence_transformers import SentenceTransformer

    again = SentenceTransformer(str(tmp_path / "my-e5v"))
    assert abs(again.encode(["A dog runs on the beach."]) - namespace["model"].encode(["A dog runs on the beach."])).max() < 1e-5


def test_readme_set_up_commands_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Set up and run\n", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["bash scripts/train.sh", "bash scripts/test.sh"]
    assert "recipes/train_mmembed.py" in (ROOT / "scripts" / "train.sh").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/test.sh" in ci
