"""LocalTarget: paths, open modes, proxy paths and atomic writes (including a SIGKILL test)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from stardag_nb.target import FileSystemTarget, LocalTarget, Target


@pytest.fixture
def out(tmp_path: Path) -> Path:
    directory = tmp_path / "out"
    directory.mkdir()
    return directory


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if ".tmp-" in p.name)


def test_tilde_expansion(isolated_env: Path) -> None:
    target = LocalTarget("~/outputs/x.txt")
    assert target.uri == str(isolated_env / "outputs" / "x.txt")
    assert target.path == isolated_env / "outputs" / "x.txt"
    with target.open("w") as handle:
        handle.write("home")
    assert (isolated_env / "outputs" / "x.txt").read_text() == "home"


def test_protocols_and_identity(out: Path) -> None:
    target = LocalTarget(str(out / "a.txt"))
    assert isinstance(target, Target)
    assert isinstance(target, FileSystemTarget)
    assert target == LocalTarget(str(out / "a.txt"))
    assert len({target, LocalTarget(str(out / "a.txt"))}) == 1
    assert repr(target) == f"LocalTarget({str(out / 'a.txt')!r})"
    relative = LocalTarget("rel/path.txt")
    assert relative.uri == "rel/path.txt"


def test_exists_and_parent_dirs_created(out: Path) -> None:
    target = LocalTarget(str(out / "deep" / "er" / "file.bin"))
    assert not target.exists()
    assert not asyncio.run(target.exists_aio())
    with target.open("wb") as handle:
        handle.write(b"\x00\x01")
    assert target.exists()
    assert asyncio.run(target.exists_aio())
    assert target.path.read_bytes() == b"\x00\x01"


def test_open_modes(out: Path) -> None:
    target = LocalTarget(str(out / "m.txt"))
    with target.open("w") as handle:
        handle.write("tëxt\n")
    with target.open("r") as handle:
        assert handle.read() == "tëxt\n"
    with target.open("rb") as handle:
        assert handle.read() == "tëxt\n".encode()
    with target.open("wb") as handle:
        handle.write(b"bytes")
    with target.open("r") as handle:
        assert handle.read(2) == "by"
    for mode in ("a", "r+", "x", "rt"):
        with pytest.raises(ValueError, match="Invalid mode"):
            target.open(mode)  # type: ignore[arg-type]


def test_handle_close_without_with_commits(out: Path) -> None:
    target = LocalTarget(str(out / "c.txt"))
    handle = target.open("w")
    handle.write("a")
    handle.writelines(["b", "c"])  # delegated to the underlying file
    assert not target.exists()  # nothing visible before close
    handle.close()
    handle.close()  # idempotent
    assert target.path.read_text() == "abc"
    assert _leftovers(out) == []


def test_dropped_handle_publishes_nothing(out: Path) -> None:
    import gc

    target = LocalTarget(str(out / "dropped.txt"))
    handle = target.open("w")
    handle.write("never closed")
    del handle
    gc.collect()
    assert not target.exists()
    assert _leftovers(out) == []


def test_open_missing_file_raises(out: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalTarget(str(out / "missing")).open("r")


def test_atomic_write_exception_leaves_old_content(out: Path) -> None:
    target = LocalTarget(str(out / "keep.txt"))
    with target.open("w") as handle:
        handle.write("old")
    with pytest.raises(RuntimeError, match="boom"):
        with target.open("w") as handle:
            handle.write("new partial")
            temp_files = _leftovers(out)
            assert len(temp_files) == 1 and temp_files[0].startswith("keep.txt.tmp-")
            raise RuntimeError("boom")
    assert target.path.read_text() == "old"
    assert _leftovers(out) == []


def test_atomic_write_exception_without_previous_file(out: Path) -> None:
    target = LocalTarget(str(out / "new.bin"))
    with pytest.raises(KeyError):
        with target.open("wb") as handle:
            handle.write(b"x" * 1000)
            raise KeyError("fail")
    assert not target.exists()
    assert list(out.iterdir()) == []


def test_async_open_atomic(out: Path) -> None:
    target = LocalTarget(str(out / "aio.txt"))

    async def go() -> str:
        async with target.open_aio("w") as handle:
            await handle.write("first")
        with pytest.raises(RuntimeError):
            async with target.open_aio("w") as handle:
                await handle.write("second")
                raise RuntimeError
        async with target.open_aio("rb") as handle:
            assert await handle.read() == b"first"
        async with target.open_aio("r") as handle:
            return str(await handle.read())

    assert asyncio.run(go()) == "first"
    assert _leftovers(out) == []


def test_proxy_path_read_and_write(out: Path) -> None:
    target = LocalTarget(str(out / "sub" / "data.npy"))
    with target.proxy_path("w") as path:
        assert path.parent == out / "sub"
        assert path.name.startswith("data.npy.tmp-")
        assert path.suffix == ".npy"  # tools that append/infer extensions behave
        assert not target.exists()
        path.write_bytes(b"payload")
    assert target.path.read_bytes() == b"payload"
    with target.proxy_path("r") as path:
        assert path == target.path
        assert path.read_bytes() == b"payload"
    with pytest.raises(ValueError):
        with target.proxy_path("rb"):  # type: ignore[arg-type]
            pass


def test_proxy_path_write_exception_and_nothing_written(out: Path) -> None:
    target = LocalTarget(str(out / "p.txt"))
    target.path.write_text("old")
    with pytest.raises(RuntimeError):
        with target.proxy_path("w") as path:
            path.write_text("new")
            raise RuntimeError
    assert target.path.read_text() == "old"
    with pytest.raises(FileNotFoundError, match="Nothing was written"):
        with target.proxy_path("w"):
            pass
    assert target.path.read_text() == "old"
    assert _leftovers(out) == []
    with pytest.raises(FileNotFoundError):
        with LocalTarget(str(out / "absent")).proxy_path("r"):
            pass


def test_proxy_path_aio(out: Path) -> None:
    target = LocalTarget(str(out / "q.txt"))

    async def go() -> str:
        async with target.proxy_path_aio("w") as path:
            path.write_text("async proxy")
        async with target.proxy_path_aio("r") as path:
            return path.read_text()

    assert asyncio.run(go()) == "async proxy"


# --------------------------------------------------------------------------------------
# crash safety: SIGKILL a real writer process at random moments

_WRITER = textwrap.dedent(
    """
    import sys
    from stardag_nb.target import LocalTarget

    path, size = sys.argv[1], int(sys.argv[2])
    contents = [b"A" * size, b"B" * size]
    chunk = 1 << 20
    target = LocalTarget(path)
    print("ready", flush=True)
    i = 0
    while True:
        data = contents[i % 2]
        with target.open("wb") as handle:
            for offset in range(0, size, chunk):  # many write() calls: wide crash window
                handle.write(data[offset : offset + chunk])
        i += 1
        print("saved", i, flush=True)
    """
)

_SIZE = 20 * 1024 * 1024


def _run_and_kill(
    script: Path, path: Path, delay: float, after_first_save: bool, results: dict[str, object]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(_SIZE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            stderr = proc.stderr.read() if proc.stderr is not None else ""
            results["error"] = f"writer did not start: {line!r} {stderr!r}"
            return
        if after_first_save:
            proc.stdout.readline()  # "saved 1": the final file now exists
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        results["returncode"] = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.slow
def test_sigkill_never_leaves_partial_or_mixed_file(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    rng = random.Random()
    # varied delays: before the first write ends, mid-write, after several saves
    runs = [
        (rng.uniform(0.0, 0.05), False),
        (rng.uniform(0.05, 0.15), False),
        (rng.uniform(0.15, 0.3), False),
        (rng.uniform(0.3, 0.5), False),
        (rng.uniform(0.0, 0.02), True),
        (rng.uniform(0.02, 0.06), True),
        (rng.uniform(0.06, 0.12), True),
        (rng.uniform(0.12, 0.25), True),
        (rng.uniform(0.25, 0.4), True),
        (rng.uniform(0.4, 0.6), True),
    ]
    outcomes: list[dict[str, object]] = [{} for _ in runs]
    paths = []
    threads = []
    for index, (delay, after_first_save) in enumerate(runs):
        run_dir = tmp_path / f"run{index}"
        run_dir.mkdir()
        path = run_dir / "big.bin"
        paths.append(path)
        thread = threading.Thread(
            target=_run_and_kill, args=(script, path, delay, after_first_save, outcomes[index])
        )
        threads.append(thread)
    # two waves of five writers, to bound memory and disk load
    for wave in (threads[:5], threads[5:]):
        for thread in wave:
            thread.start()
        for thread in wave:
            thread.join(timeout=60)

    expected = {b"A" * _SIZE, b"B" * _SIZE}
    interrupted_mid_write = 0
    present = 0
    for index, (path, outcome) in enumerate(zip(paths, outcomes)):
        assert "error" not in outcome, outcome["error"]
        assert outcome.get("returncode") == -signal.SIGKILL, f"run {index}: {outcome}"
        if path.exists():
            present += 1
            data = path.read_bytes()
            assert len(data) == _SIZE, f"run {index}: partial file of {len(data)} bytes"
            assert data in expected, f"run {index}: mixed content"
        else:
            assert not runs[index][1], f"run {index}: file vanished after a completed save"
        leftovers = [p.name for p in path.parent.iterdir() if p != path]
        assert all(name.startswith("big.bin.tmp-") for name in leftovers), leftovers
        interrupted_mid_write += bool(leftovers)
    assert present >= 5  # every run killed after a completed save has a full file
    assert interrupted_mid_write >= 1  # the kills did land during writes
