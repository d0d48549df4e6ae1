#!/usr/bin/env bash
# Join the shards and decide the gates, as one unsharded run would; no GPU. docs/cluster.md explains it.
#   sbatch --dependency=afterany:ARRAY_JOB_ID docs/cluster/merge.sh    # on Slurm, after the array
#   bash docs/cluster/merge.sh                                          # anywhere the shared folder is mounted
#SBATCH --job-name=flexharness-merge
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=00:30:00
#SBATCH --output=flexharness-merge-%j.out
set -euo pipefail

SHARED=${SHARED:-/shared/flexharness}
RESULTS=${RESULTS:-$SHARED/results}

exec flexharness merge "$RESULTS"/shard-*.json -o "$RESULTS/results.json" --markdown "$RESULTS/summary.md" --junitxml "$RESULTS/gates.xml"
