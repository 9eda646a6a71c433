"""MM-Embed (arXiv 2411.02571): M-BEIR in three stages, each a sentence-transformers training run.

Stage 1 trains with random in-batch negatives; stage 2 mines modality-aware hard negatives with the
stage-1 model (wrong-modality candidates ranked above the positive, right-modality ones at ranks
46-50) and trains again from the base model; stage 3 continues from stage 2 on text retrieval pairs
mixed with M-BEIR rows. After each stage the held-out tasks print Recall and the wrong-modality
top-1 rate next to the untrained model and chance. Values and sources: --help.

    python recipes/train_mmembed.py                         # embedded default: tiny LLaVA-NeXT, emoji M-BEIR, CPU
    python recipes/train_mmembed.py --dry-run               # the three stages' plans
    python recipes/train_mmembed.py --model <mllm> --data <M-BEIR root> --text-data pairs.jsonl
    python recipes/train_mmembed.py --from-stage 2          # stages 2 and 3 again
"""

import sys

from mm_st.training import MMEmbedConfig
from mm_st.training.cli import main

if __name__ == "__main__":
    sys.exit(main(MMEmbedConfig, description=__doc__))
