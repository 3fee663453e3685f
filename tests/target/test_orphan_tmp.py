"""Temporary files left next to local targets by killed writers are removed by the next
write of the same target; live writers' files and anything else are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.registry import NoOpRegistry
from stardag_nb.target import LocalTarget
from stardag_nb.utils.testing import target_roots_override
from tests.target.orphan_tasks import HalfWritten

REPO = Path(__file__).parents[2]
TWO_HOURS = 2 * 3600

_BUILDER = textwrap.dedent(
    """
    import sys
    import stardag_nb as sd
    from stardag_nb.registry import NoOpRegistry
    from tests.target.orphan_tasks import HalfWritten

    summary = sd.build(HalfWritten(label=sys.argv[1]), registry=NoOpRegistry(), progress=False)
    print(summary.status.value, summary.errors, flush=True)
    sys.exit(0 if summary.status.value == "success" else 1)
    """
)


def _temp_siblings(final: Path) -> list[Path]:
    return sorted(final.parent.glob(final.name + ".tmp-*"))


def _start_builder(tmp_path: Path, label: str, resume: Path | None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
    env.update(
        STARDAG_TARGET_ROOTS__DEFAULT=str(tmp_path / "out"),
        ORPHAN_SIGNAL=str(tmp_path / f"{label}.signal"),
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    if resume is not None:
        env["ORPHAN_RESUME"] = str(resume)
    return subprocess.Popen(
        [sys.executable, "-c", _BUILDER, label],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def _wait_mid_write(proc: subprocess.Popen[str], signal_file: Path) -> Path:
    """Wait until the builder has written half of its output; return the output path."""
    deadline = time.monotonic() + 60
    while not signal_file.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"builder exited early ({proc.returncode}): {err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail("builder did not reach the middle of its write within 60 s")
        time.sleep(0.01)
    return Path(signal_file.read_text())


@pytest.fixture
def builders() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _build_here(tmp_path: Path, task: HalfWritten) -> None:
    with target_roots_override({"default": str(tmp_path / "out")}):
        summary = sd.build(task, registry=NoOpRegistry(), progress=False)
    assert summary.status.value == "success", summary.errors


def _output_path(tmp_path: Path, task: HalfWritten) -> Path:
    with target_roots_override({"default": str(tmp_path / "out")}):
        return Path(task.output().uri)


def _result(tmp_path: Path, task: HalfWritten) -> str:
    with target_roots_override({"default": str(tmp_path / "out")}):
        return task.result()


def test_killed_builders_temp_file_is_removed_by_the_next_build(
    tmp_path: Path, builders: list[subprocess.Popen[str]]
) -> None:
    proc = _start_builder(tmp_path, "killed", resume=None)
    builders.append(proc)
    final = _wait_mid_write(proc, tmp_path / "killed.signal")
    task = HalfWritten(label="killed")
    assert final == _output_path(tmp_path, task)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists()
    assert len(_temp_siblings(final)) == 1  # the half-written file the kill left behind

    _build_here(tmp_path, task)

    assert _result(tmp_path, task) == "killed done"
    assert _temp_siblings(final) == []


def test_live_builder_in_another_process_keeps_its_temp_file_and_succeeds(
    tmp_path: Path, builders: list[subprocess.Popen[str]]
) -> None:
    resume = tmp_path / "resume"
    proc = _start_builder(tmp_path, "live", resume=resume)
    builders.append(proc)
    final = _wait_mid_write(proc, tmp_path / "live.signal")
    (live_temp,) = _temp_siblings(final)
    task = HalfWritten(label="live")

    _build_here(tmp_path, task)  # the same task, concurrently and without locks

    assert _result(tmp_path, task) == "live done"
    assert live_temp.exists()  # the other builder is alive: its file stays
    resume.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err[-3000:])
    assert _result(tmp_path, task) == "live done"
    assert _temp_siblings(final) == []


def test_writer_in_another_thread_keeps_its_temp_file(tmp_path: Path) -> None:
    target = LocalTarget(str(tmp_path / "t" / "shared.txt"))
    opened, resume = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with target.open("w") as handle:
                handle.write("slow ")
                handle.flush()
                opened.set()
                resume.wait(30)
                handle.write("writer")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
            opened.set()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    try:
        assert opened.wait(30)
        (slow_temp,) = _temp_siblings(target.path)
        with target.open("w") as handle:
            handle.write("fast writer")
        with target.proxy_path("w") as path:
            path.write_text("proxy writer")
        assert target.path.read_text() == "proxy writer"
        assert slow_temp.exists()
    finally:
        resume.set()
        thread.join(30)
    assert errors == []
    assert target.path.read_text() == "slow writer"
    assert _temp_siblings(target.path) == []


_DYING_WRITER = textwrap.dedent(
    """
    import os, sys
    from stardag_nb.target import LocalTarget

    directory = sys.argv[1]
    x, other = LocalTarget(directory + "/x.json"), LocalTarget(directory + "/other.json")
    handles = [x.open("w") for _ in range(4)] + [other.open("w")]
    for handle in handles:
        handle.write("partial")
        handle.flush()
    x.proxy_path("w").__enter__().write_text("partial")
    os._exit(1)  # dies mid-write: no cleanup runs
    """
)


def _old(path: Path) -> None:
    then = time.time() - TWO_HOURS
    os.utime(path, (then, then), follow_symlinks=False)


def test_only_orphans_of_the_written_target_are_removed(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (outside / "linked.txt").write_text("linked")
    proc = subprocess.Popen([sys.executable, "-c", _DYING_WRITER, str(out)])
    try:
        if hasattr(os, "waitid"):  # exited but not reaped: a zombie counts as gone too
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        else:
            proc.wait(timeout=60)
        names = sorted(p.name for p in out.iterdir())
        plain = [n for n in names if n.startswith("x.json.tmp-") and not n.endswith(".json")]
        proxied = [n for n in names if n.startswith("x.json.tmp-") and n.endswith(".json")]
        (other_orphan,) = [n for n in names if n.startswith("other.json.tmp-")]
        assert len(plain) == 4 and len(proxied) == 1, names
        symlinked, as_dir, hard_linked, orphan = plain

        # the same names, but not regular files of their own: never removed
        (out / symlinked).unlink()
        (out / symlinked).symlink_to(outside / "secret.txt")
        (out / as_dir).unlink()
        (out / as_dir).mkdir()
        (out / as_dir / "keep.txt").write_text("keep")
        (out / hard_linked).unlink()
        os.link(outside / "linked.txt", out / hard_linked)
        (out / "x.json.tmp-aaaaaaaaaaaa").symlink_to(outside)  # old name format, to a dir
        # names from other hosts and older versions count by age
        # <host>-<pid>-<start>-<random>, hex (see stardag_nb.target._temp_files)
        fields = orphan[len("x.json.tmp-") :].split("-")
        host, pid, start, rand = fields if len(fields) == 4 else ("deadbeef", "1", "0", "0" * 8)
        foreign = "00000000" if host != "00000000" else "11111111"
        (out / f"x.json.tmp-{foreign}-{pid}-{start}-{rand}").write_text("fresh")
        (out / f"x.json.tmp-{foreign}-{pid}-{start}-0{rand[1:]}").write_text("stale")
        (out / "x.json.tmp-0123456789ab").write_text("fresh")
        (out / "x.json.tmp-abcdefabcdef").write_text("stale")
        (out / "x.json.tmp-x").write_text("not our name format")
        for name in (
            symlinked,
            as_dir,
            "x.json.tmp-aaaaaaaaaaaa",
            f"x.json.tmp-{foreign}-{pid}-{start}-0{rand[1:]}",
            "x.json.tmp-abcdefabcdef",
            "x.json.tmp-x",
            other_orphan,
        ):
            _old(out / name)
        # this host, but the pid now belongs to another process (ours, other start time): gone
        reused = f"x.json.tmp-{host}-{os.getpid():x}-{start}-{rand}"
        if start != "0":
            (out / reused).write_text("pid reused")

        with LocalTarget(str(out / "x.json")).open("w") as handle:
            handle.write("{}")
    finally:
        proc.wait(timeout=60)

    kept = {
        "x.json",
        symlinked,
        as_dir,
        hard_linked,
        "x.json.tmp-aaaaaaaaaaaa",
        f"x.json.tmp-{foreign}-{pid}-{start}-{rand}",
        "x.json.tmp-0123456789ab",
        "x.json.tmp-x",
        other_orphan,
    }
    assert {p.name for p in out.iterdir()} == kept
    assert (out / "x.json").read_text() == "{}"
    assert (out / symlinked).is_symlink()
    assert (outside / "secret.txt").read_text() == "secret"
    assert (outside / "linked.txt").read_text() == "linked"
    assert (out / as_dir / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in outside.iterdir()) == ["linked.txt", "secret.txt"]
