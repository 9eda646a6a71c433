"""mmE5 (arXiv 2502.08468): MMEB-train with mined negatives (rank 70) plus mmE5-synthetic, on Mllama.

Each hard negative is scored only against its own query (3 per query), temperature 0.02, DoRA r=8,
lr 1e-5, 1 epoch, max length 256. The paper's batch (2 per GPU x 8 accumulation steps) is formed with
GradCache instead, so every query sees the whole batch's candidates (accumulation adds no in-batch
negatives). --synthetic-only is the paper's zero-shot setting. Values and sources: --help.

    python recipes/train_mme5.py                      # embedded default: tiny Mllama, emoji data, CPU
    python recipes/train_mme5.py --dry-run --config recipes/configs/mme5.yaml
    python recipes/train_mme5.py --synthetic-only
"""

import sys

from mm_st.training import MME5Config
from mm_st.training.cli import main

if __name__ == "__main__":
    sys.exit(main(MME5Config, description=__doc__))
