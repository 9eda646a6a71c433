"""VLM2Vec (arXiv 2410.05160) v1: contrastive training on MMEB-train with shared in-batch negatives.

MMEB-train (``original`` or ``diverse_instruction`` split), VLM2Vec's text format, temperature 0.02,
LoRA, GradCache for the large batch; values and sources: --help. Config: recipes/configs/vlm2vec.yaml.

    python recipes/train_vlm2vec.py                   # embedded default: tiny backbone, emoji in MMEB-train layout
    python recipes/train_vlm2vec.py --dry-run --config recipes/configs/vlm2vec.yaml
    accelerate launch --config_file recipes/configs/accelerate/ddp.yaml recipes/train_vlm2vec.py --config recipes/configs/vlm2vec.yaml
"""

import sys

from mm_st.training import VLM2VecConfig
from mm_st.training.cli import main

if __name__ == "__main__":
    sys.exit(main(VLM2VecConfig, description=__doc__))
