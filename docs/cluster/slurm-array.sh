#!/usr/bin/env bash
# flexharness on Slurm: one array task per shard, one GPU each; docs/cluster.md explains every line.
#   sbatch docs/cluster/slurm-array.sh                  # every shard; then docs/cluster/merge.sh
#   sbatch --array=1,3 docs/cluster/slurm-array.sh      # only the shards that failed, after a partial failure
#   sbatch --gres=none docs/cluster/slurm-array.sh      # a CPU-only partition (it refuses the GPU line below)
#SBATCH --job-name=flexharness
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --output=flexharness-%A_%a.out
set -euo pipefail

SHARDS=${SHARDS:-4}                      # the size of --array above, written here rather than read from
                                         # SLURM_ARRAY_TASK_COUNT: a resubmitted index must cut the same shards
SHARED=${SHARED:-/shared/flexharness}    # a folder every node mounts: the result cache and the shard files
RESULTS=${RESULTS:-$SHARED/results}      # this run's shard files; give each run its own folder
SUITES=${SUITES:-suites/}                # suite files or folders, space-separated; more options in PYTEST_ADDOPTS
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}  # models and data were fetched before submitting (docs/cluster.md)

INDEX=${SLURM_ARRAY_TASK_ID:?submit with sbatch --array}
mkdir -p "$RESULTS"
exec pytest $SUITES --flex-shard=$((INDEX + 1))/$SHARDS --flex-shard-by=measured --flex-json="$RESULTS/shard-$((INDEX + 1)).json" -o cache_dir="$SHARED/pytest-cache"
