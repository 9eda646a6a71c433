"""Run by tests under torchrun: a recipe's ``main(<Config>)`` (all that its script in recipes/ runs) once per
argument list of the JSON list in argv[2], one after the other in the same processes and process group, so one
torchrun start-up (the launcher and each rank's imports, ~20 s of CPU) serves several runs. argv[1] names the config
class in mm_st.training (e.g. VLM2VecConfig). Before each run the main process prints a line ``=== run <n> ===``
(:data:`RUN_MARK`) that splits the output by run: :func:`outputs_by_run`."""

import json
import re
import sys

RUN_MARK = "=== run {} ==="


def outputs_by_run(stdout: str) -> list[str]:
    """The main process's output of each run, in order (what follows each run's mark)."""
    return re.split(r"^" + re.escape(RUN_MARK).replace(r"\{\}", r"\d+") + r"$", stdout, flags=re.MULTILINE)[1:]


if __name__ == "__main__":
    import mm_st.training
    from mm_st.training.cli import main
    from mm_st.training.distributed import is_main_process

    config = getattr(mm_st.training, sys.argv[1])
    for number, argv in enumerate(json.loads(sys.argv[2])):
        if is_main_process():
            print(RUN_MARK.format(number), flush=True)
        code = main(config, argv)
        if code:
            sys.exit(code)
