"""How many lines a terminal shows for a command: `bash scripts/train.sh` by default.

The command runs under a pseudo-terminal (so tqdm and the libraries behave as in a user's terminal); every
line break (``\\n``) and every carriage-return redraw (``\\r``, a progress bar drawing itself again) counts as one
screen line, as a terminal's scroll-back shows them. Prints the counts and the most frequent lines; ``--save``
keeps the raw output.

    python benchmarks/console_lines.py                          # bash scripts/train.sh --output-dir <a new temp folder>
    python benchmarks/console_lines.py -- bash scripts/train.sh --dry-run
    python benchmarks/console_lines.py --save out.txt -- python recipes/train_vlm2vec.py --max-steps 2 --output-dir x
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

from mm_st.training.console import screen_lines

ROOT = Path(__file__).resolve().parent.parent


def run_in_terminal(command: list[str], cwd: Path, columns: int = 120) -> tuple[str, int, float]:
    """(everything the command printed on a terminal ``columns`` wide, exit status, seconds)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the command closed its terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace"), process.wait(), time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save", help="write the raw terminal output here")
    parser.add_argument("--top", type=int, default=8, help="print the most frequent lines (0: none)")
    parser.add_argument("command", nargs="*", help="the command (after --); default: bash scripts/train.sh")
    args = parser.parse_args()
    command = args.command or ["bash", "scripts/train.sh", "--output-dir", tempfile.mkdtemp(prefix="mmst-console-")]
    raw, status, seconds = run_in_terminal(command, ROOT)
    if args.save:
        Path(args.save).write_text(raw, encoding="utf-8")
    lines = screen_lines(raw)
    newline_lines = raw.count("\n")
    print(f"command: {' '.join(command)}")
    print(f"exit status {status}, {seconds:.0f} s; {len(lines)} screen lines ({newline_lines} newline-separated, "
          f"{len(raw.encode()) / 1000:.1f} KB)")
    for line, count in collections.Counter(lines).most_common(args.top):
        if count > 1:
            print(f"  {count:4d} x {line[:110]!r}")
    return status


if __name__ == "__main__":
    sys.exit(main())
