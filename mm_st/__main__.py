"""``python -m mm_st <command>``. Commands: ``push`` (:mod:`mm_st.hub`: push a saved model folder to the Hub).

Example::

    python -m mm_st push runs/vlm2vec/model org/vlm2vec-emoji --private
"""

from __future__ import annotations

import sys

COMMANDS = {"push": "push a saved model folder to the Hugging Face Hub (python -m mm_st push --help)"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m mm_st <command> ...\n\ncommands:\n" + "\n".join(f"  {k:<6} {v}" for k, v in COMMANDS.items()))
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "push":
        from mm_st.hub import main as push

        return push(rest)
    print(f"error: unknown command {command!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
