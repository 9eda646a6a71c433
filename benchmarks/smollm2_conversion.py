"""SmolLM2 GGUF -> safetensors conversion (``mm_st.real_lm``): the GGUF file read once vs once per transformers call.

transformers reads the whole GGUF file for the tokenizer, the config and the weights (three reads); mm_st's
conversion shares one reader between them. This script converts twice into fresh folders, in a child process each
(same imports paid by both), prints the CPU seconds of each and checks that both folders are byte-identical.

    python benchmarks/smollm2_conversion.py
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from pathlib import Path
from mm_st import real_lm
start = time.process_time()
real_lm._convert(real_lm.smollm2_gguf(), Path(sys.argv[1]), read_once=sys.argv[2] == "1")
print("CPU", json.dumps(time.process_time() - start))
"""


def convert(out: Path, read_once: bool) -> float:
    run = subprocess.run([sys.executable, "-c", CHILD, str(out), "1" if read_once else "0"], capture_output=True,
                         text=True, check=True)
    return json.loads(run.stdout.split("CPU", 1)[1])


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        three, once = Path(tmp, "three-reads"), Path(tmp, "one-read")
        cpu_three, cpu_once = convert(three, read_once=False), convert(once, read_once=True)
        same = digest(three) == digest(once)
    print(f"three reads (transformers' default): {cpu_three:.1f} s CPU")
    print(f"one read (mm_st.real_lm):            {cpu_once:.1f} s CPU  ratio {cpu_once / cpu_three:.2f}")
    print(f"converted folders byte-identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
