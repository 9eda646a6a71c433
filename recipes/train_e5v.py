"""E5-V (arXiv 2407.12580): text-only NLI training of a multimodal LLM with one-word prompts.

NLI triplets (contradiction = hard negative), InfoNCE at temperature 0.05 with cross-device
negatives, LoRA r=64 alpha=16 on the language model (4-bit QLoRA with CUDA + bitsandbytes), lr 4e-4,
texts cut at 32 tokens, global batch 768 via GradCache, 2 epochs (upstream run.sh; the paper says 1:
--num-train-epochs 1). Every default and its source: --help. Config: recipes/configs/e5v.yaml.

    python recipes/train_e5v.py                       # embedded default: tiny backbone, emoji names, CPU
    python recipes/train_e5v.py --dry-run --config recipes/configs/e5v.yaml
    torchrun --nproc_per_node 8 recipes/train_e5v.py --config recipes/configs/e5v.yaml
    python recipes/train_e5v.py --train-template upstream   # ft_llm.py's de-tokenised training text
"""

import sys

from mm_st.training import E5VConfig
from mm_st.training.cli import main

if __name__ == "__main__":
    sys.exit(main(E5VConfig, description=__doc__))
