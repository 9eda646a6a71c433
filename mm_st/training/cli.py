"""The recipes' command line: ``recipes/train_*.py`` call :func:`main` with their config class.

Errors a user can act on (bad data, model, config, output folder, evaluation data, a run that
diverged) end with ``error: ...`` and exit status 2, in a real run as in ``--dry-run``; ``--traceback``
(or ``MM_ST_TRACEBACK=1``) shows the Python traceback instead. An ``error:`` always starts its own line.

The console (:mod:`mm_st.training.console`): a short plan, one progress bar per stage, a one-line summary per stage
and the held-out table; ``--verbose`` adds the full plan (every config value and its source) and the libraries' log
lines; ``--dry-run`` prints the full plan.

Example:
    >>> from mm_st.training import E5VConfig
    >>> from mm_st.training.cli import main
    >>> main(E5VConfig, ["--dry-run", "--lora-r", "0"])
    2
"""

from __future__ import annotations

import argparse
import os
import sys

from mm_st.hub import PushError
from mm_st.training import console
from mm_st.training.config import RecipeConfig, add_arguments, config_from_args
from mm_st.training.distributed import is_main_process
from mm_st.training.trainer import TrainingDiverged

# The failure classes of a recipe run that come from its inputs, not from a bug: printed as `error: ...` (a failed
# push after training, mm_st.hub.PushError, is one: the model is saved, the message says how to push it again).
USER_ERRORS = (ValueError, KeyError, OSError, TrainingDiverged, ImportError, PushError)


def main(cls: type[RecipeConfig], argv: list[str] | None = None, description: str | None = None) -> int:
    """Parse flags into a ``cls`` config; ``--dry-run`` prints the checked plan, otherwise the stage runs."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, cls)
    parser.add_argument("--traceback", action="store_true", help="show the Python traceback of an error")
    parser.add_argument("--verbose", action="store_true", help="print the full plan (every config value and its "
                        "source) and the libraries' log lines and progress bars")
    args = parser.parse_args(argv)
    console.configure(verbose=args.verbose, main_process=is_main_process())
    try:
        config = config_from_args(cls, args)
        if args.dry_run:
            print("\n".join(config.plan_lines()))
            print("dry run: plan checked, nothing trained")
            return 0
        config.run()
    except USER_ERRORS as exc:
        console.end_line()
        sys.stdout.flush()
        if args.traceback or os.environ.get("MM_ST_TRACEBACK") == "1":
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
