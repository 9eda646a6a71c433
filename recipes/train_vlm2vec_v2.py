"""VLM2Vec-V2 (arXiv 2507.04590): image, video and visual-document data in one run, each sub-batch from one dataset.

VLM2Vec-V2's dataset-config YAML (its experiments/public/train/train_alltasks.yaml), Qwen2-VL, DoRA r=16, temperature
0.02, GradCache chunks of 8, sub-batches of 64 rows per GPU drawn by the datasets' weights; values and sources: --help.
The embedded default trains a tiny Qwen2-VL on generated data (emoji images, Pillow videos of moving shapes, rendered
document pages) and scores held-out items before and after (Hit@1 per modality group).

    python recipes/train_vlm2vec_v2.py                   # embedded default: offline, CPU, a few minutes
    python recipes/train_vlm2vec_v2.py --dry-run         # the checked plan, every value with its source
    python recipes/train_vlm2vec_v2.py --dry-run --config recipes/configs/vlm2vec_v2.yaml
    torchrun --nproc_per_node 8 recipes/train_vlm2vec_v2.py --config recipes/configs/vlm2vec_v2.yaml
"""

import sys

from mm_st.training import VLM2VecV2Config
from mm_st.training.cli import main

if __name__ == "__main__":
    sys.exit(main(VLM2VecV2Config, description=__doc__))
