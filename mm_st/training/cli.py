"""The recipes' command line: ``recipes/train_*.py`` call :func:`main` with their config class.

Example:
    >>> from mm_st.training import E5VConfig
    >>> from mm_st.training.cli import main
    >>> main(E5VConfig, ["--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import logging
import sys

from mm_st.training.config import RecipeConfig, add_arguments, config_from_args
from mm_st.training.stage import is_main_process, plan_stage, run_stage


def main(cls: type[RecipeConfig], argv: list[str] | None = None, description: str | None = None) -> int:
    """Parse flags into a ``cls`` config; ``--dry-run`` prints the checked plan, otherwise the stage runs."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, cls)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("mteb", "httpx", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = config_from_args(cls, args)
        if args.dry_run:
            plan, _ = plan_stage(config)
            print("\n".join(plan.lines()))
            print("dry run: plan checked, nothing trained")
            return 0
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from mm_st.hub import PushError

    try:
        run_stage(config)
    except PushError as exc:  # training finished and the model is saved; only the push failed (message redacted)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
