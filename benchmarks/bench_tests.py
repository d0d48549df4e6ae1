"""How many torch threads each xdist worker of the test suite should use: one, or the cores (the default).

Runs the same test files under `pytest -n 2` with OMP_NUM_THREADS=1 and with OMP_NUM_THREADS set to the
machine's cores, interleaved (A B A B ...), and prints each wall time and the ratio from the same run
(tests/conftest.py pins workers to OMP_NUM_THREADS, default 1). Time it with nothing else running.

    python benchmarks/bench_tests.py [--repeats 2] [TEST_FILE ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILES = ("tests/test_train.py", "tests/test_compression.py", "tests/test_tasks.py")


def run(files: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", *files, "-n", "2", "-q", "-p", "no:cacheprovider"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", default=list(DEFAULT_FILES))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    times: dict[int, list[float]] = {1: [], cores: []}
    for _ in range(args.repeats):
        for threads in times:
            times[threads].append(run(args.files, threads))
            print(f"threads per worker {threads}: {times[threads][-1]:.1f} s", flush=True)
    one, many = statistics.median(times[1]), statistics.median(times[cores])
    print(f"median: 1 thread {one:.1f} s, {cores} threads {many:.1f} s; ratio {many / one:.2f}x "
          f"(load average at the end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
