"""Run by tests/test_training.py under torchrun: the VLM2Vec recipe (``main(VLM2VecConfig)``, all that
recipes/train_vlm2vec.py runs) once per argument list of the JSON list in argv[1], one after the other in the same
processes and process group, so one torchrun start-up (the launcher and each rank's imports, ~20 s of CPU) serves
several runs. Before each run the main process prints a line ``=== run <n> ===`` that splits the output by run."""

import json
import sys

from mm_st.training import VLM2VecConfig
from mm_st.training.cli import main
from mm_st.training.distributed import is_main_process

RUN_MARK = "=== run {} ==="

if __name__ == "__main__":
    for number, argv in enumerate(json.loads(sys.argv[1])):
        if is_main_process():
            print(RUN_MARK.format(number), flush=True)
        code = main(VLM2VecConfig, argv)
        if code:
            sys.exit(code)
