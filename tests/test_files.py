"""Special and huge files named by a user are refused before any read: nothing hangs, nothing fills memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flexharness.cli import main
from flexharness.files import RESULTS_LIMIT, SUITE_LIMIT, RefusedFile, read_text


def _specials(tmp_path: Path, limit: int) -> dict[str, tuple[Path, str]]:
    """Each kind of hostile path -> (path, the reason the refusal gives)."""
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # a reader that opened it plainly would wait for a writer forever
    huge = tmp_path / "huge.json"
    with huge.open("wb") as handle:
        handle.truncate(limit + 1)  # sparse: no disk used, but a plain read would take it all into memory
    folder = tmp_path / "folder.json"
    folder.mkdir()
    return {"fifo": (fifo, "a FIFO (named pipe), not a regular file"),
            "dev-zero": (Path("/dev/zero"), "a character device, not a regular file"),
            "folder": (folder, "a directory, not a regular file"),
            "huge": (huge, f"{(limit + 1) / (1 << 20):.0f} MiB, larger than the {limit >> 20} MiB limit")}


def test_read_text_refuses_what_is_not_a_bounded_regular_file(tmp_path: Path) -> None:
    for path, reason in _specials(tmp_path, SUITE_LIMIT).values():
        with pytest.raises(RefusedFile) as refused:
            read_text(path, SUITE_LIMIT)
        assert refused.value.strerror.startswith(reason)
    (tmp_path / "ok.txt").write_text("plain")
    assert read_text(tmp_path / "ok.txt", 5) == "plain"
    with pytest.raises(RefusedFile, match="larger than the 4 bytes limit"):
        read_text(tmp_path / "ok.txt", 4)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder", "huge"])
def test_every_command_refuses_special_and_huge_files(tmp_path: Path, kind: str, capsys) -> None:
    path, reason = _specials(tmp_path, RESULTS_LIMIT)[kind]
    for argv in (["report", str(path)], ["compare", str(path), str(path)],
                 ["merge", str(path), "-o", str(tmp_path / "out.json")]):
        assert main(argv) == 2
        assert f"flexharness {argv[0]}: cannot read {path}: {reason}" in capsys.readouterr().err
    (tmp_path / "suite").mkdir()
    suite_path, suite_reason = _specials(tmp_path / "suite", SUITE_LIMIT)[kind]  # a suite's limit is smaller
    assert main(["validate", str(suite_path)]) == 1
    assert f"INVALID {suite_path}: cannot read the suite file ({suite_reason}" in capsys.readouterr().out


def test_a_special_baseline_is_a_usage_error_before_anything_runs(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text("tasks:\n  - {name: t, dataset: reviews, metric: accuracy}\n"))
    os.mkfifo(pytester.path / "base.json")
    result = pytester.runpytest("--flex-baseline=base.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--flex-baseline: cannot read baseline base.json: a FIFO (named pipe), "
                                 "not a regular file; give the path of a file"])
