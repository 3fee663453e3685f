"""Target roots on a real S3 server (tests/s3_server.py): per-root storage options, errors
that name the root, concurrent existence checks, and builds writing to S3."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.config import clear_config_cache, get_config
from stardag_nb.exceptions import TargetError
from stardag_nb.target import TargetFactory, get_target, target_factory_provider
from tests.s3_server import S3Root, S3Server


def _toml_options(options: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k} = "{v}"' for k, v in options.items()) + "}"


def write_text(target: object, text: str) -> None:
    with target.open("w") as handle:  # type: ignore[attr-defined]
        handle.write(text)


def write_config(home: Path, text: str) -> None:
    (home / ".stardag").mkdir(exist_ok=True)
    (home / ".stardag" / "config.toml").write_text(text)
    clear_config_cache()
    target_factory_provider.reset()


@pytest.fixture
def second_server() -> S3Server:
    server = S3Server().start()
    yield server
    server.stop()


def test_two_roots_reach_two_s3_endpoints_from_config_toml(
    isolated_env: Path, s3_root: S3Root, second_server: S3Server
) -> None:
    other_bucket = second_server.new_bucket()
    write_config(
        isolated_env,
        f"""
[target_roots.data]
uri = "{s3_root.uri}"
storage_options = {_toml_options(s3_root.storage_options)}

[target_roots.archive]
uri = "s3://{other_bucket}/arch"
storage_options = {_toml_options(second_server.storage_options())}
""",
    )
    write_text(get_target("x/one.txt", "data"), "one")
    with get_target("y/two.txt", "archive").open("w") as handle:
        handle.write("two")
    assert s3_root.keys() == ["stardag/x/one.txt"]
    assert second_server.keys(other_bucket) == ["arch/y/two.txt"]
    assert second_server.read(other_bucket, "arch/y/two.txt") == b"two"
    # each root's objects exist only on its own endpoint
    assert get_target("x/one.txt", "data").exists()
    assert not second_server.fs().exists(f"{other_bucket}/arch/x/one.txt")


def test_plain_uri_form_in_config_toml_keeps_working(isolated_env: Path, tmp_path: Path) -> None:
    write_config(isolated_env, f'[target_roots]\ndefault = "{tmp_path}/plain"\n')
    assert get_config().target.roots == {"default": f"{tmp_path}/plain"}
    assert get_config().target.storage_options == {}
    with get_target("a.txt").open("w") as handle:
        handle.write("x")
    assert (tmp_path / "plain" / "a.txt").read_text() == "x"


def test_options_without_uri_apply_to_a_root_from_the_environment_variables(
    isolated_env: Path, s3_root: S3Root, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DATA", s3_root.uri)
    write_config(isolated_env, f"[target_roots.data]\nstorage_options = "
                 f"{_toml_options(s3_root.storage_options)}\n")  # fmt: skip
    with get_target("k.txt", "data").open("w") as handle:
        handle.write("k")
    assert s3_root.keys() == ["stardag/k.txt"]


def test_options_with_another_uri_do_not_follow_the_root(
    isolated_env: Path, s3_root: S3Root, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DATA", s3_root.uri)
    write_config(isolated_env, f'[target_roots.data]\nuri = "s3://elsewhere/x"\nstorage_options = '
                 f"{_toml_options(s3_root.storage_options)}\n")  # fmt: skip
    assert get_config().target.storage_options == {}


def test_secrets_are_masked_in_the_config_repr(isolated_env: Path, s3_root: S3Root) -> None:
    write_config(isolated_env, f'[target_roots.data]\nuri = "{s3_root.uri}"\nstorage_options = '
                 f"{_toml_options(s3_root.storage_options)}\n")  # fmt: skip
    config = get_config()
    assert config.target.storage_options["data"]["secret"] == s3_root.server.secret
    shown = repr(config)
    assert s3_root.server.secret not in shown and s3_root.server.key not in shown
    assert s3_root.server.endpoint_url in shown


def test_missing_bucket_error_names_the_root_and_uri(s3_server: S3Server) -> None:
    factory = TargetFactory(
        target_roots={"data": "s3://nobucket/x"},
        storage_options={"data": s3_server.storage_options()},
    )
    target = factory.get_target("out.txt", "data")
    assert not target.exists()
    with pytest.raises(TargetError) as info:
        with target.open("w") as handle:
            handle.write("x")
    message = str(info.value)
    assert "target root 'data' (s3://nobucket/x)" in message
    assert "bucket 'nobucket' does not exist" in message
    assert "stardag-nb environment provision" in message
    assert not s3_server.has_bucket("nobucket")


def test_wrong_secret_error_names_the_root_and_the_fix(s3_root: S3Root) -> None:
    options = {**s3_root.storage_options, "secret": "wrong"}
    factory = TargetFactory(target_roots={"data": s3_root.uri}, storage_options={"data": options})
    with pytest.raises(TargetError) as info:
        factory.get_target("a.txt", "data").exists()
    message = str(info.value)
    assert f"target root 'data' ({s3_root.uri})" in message
    assert "access denied" in message and "storage_options" in message
    assert "wrong" not in message


def test_exists_checks_do_not_queue_behind_the_thread_pool(s3_root: S3Root) -> None:
    """200 existence checks at once run on fsspec's loop: they complete even while the
    event loop's only worker thread is busy (a thread per check would wait for it)."""
    factory = TargetFactory(
        target_roots={"data": s3_root.uri}, storage_options={"data": s3_root.storage_options}
    )
    for n in range(0, 200, 2):
        write_text(factory.get_target(f"t/{n}.txt", "data"), str(n))
    targets = [factory.get_target(f"t/{n}.txt", "data") for n in range(200)]

    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        release = threading.Event()
        blocker = loop.run_in_executor(None, release.wait, 30)
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(t.exists_aio() for t in targets)), timeout=10
            )
        finally:
            release.set()
            await blocker

    assert asyncio.run(main()) == [n % 2 == 0 for n in range(200)]


class Square(sd.AutoTask[int]):
    n: int

    @property
    def _target_root_key(self) -> str:
        return "data"

    def run(self) -> None:
        self.output().save(self.n * self.n)


class Total(sd.AutoTask[int]):
    count: int

    @property
    def _target_root_key(self) -> str:
        return "data"

    def requires(self):  # type: ignore[no-untyped-def]
        return [Square(n=n) for n in range(self.count)]

    def run(self) -> None:
        self.output().save(sum(d.output().load() for d in self.requires()))


def test_a_build_writes_to_s3_and_a_rebuild_finds_everything_complete(
    isolated_env: Path, s3_root: S3Root
) -> None:
    write_config(isolated_env, f'[target_roots.data]\nuri = "{s3_root.uri}"\nstorage_options = '
                 f"{_toml_options(s3_root.storage_options)}\n")  # fmt: skip
    first = sd.build(Total(count=30))
    assert first.task_count.succeeded == 31, first
    assert len([k for k in s3_root.keys() if k.startswith("stardag/")]) == 31
    assert Total(count=30).output().load() == sum(n * n for n in range(30))
    # a fresh process view: the listings cache must not hide objects written meanwhile
    target_factory_provider.reset()
    started = time.perf_counter()
    second = sd.build(Total(count=30))
    assert second.task_count.succeeded == 0
    assert second.task_count.previously_completed == 1
    assert time.perf_counter() - started < 30


def test_config_show_masks_credentials(
    isolated_env: Path, s3_root: S3Root, capsys: pytest.CaptureFixture[str]
) -> None:
    from stardag_nb.cli import main

    write_config(isolated_env, f'[target_roots.data]\nuri = "{s3_root.uri}"\nstorage_options = '
                 f"{_toml_options(s3_root.storage_options)}\n")  # fmt: skip
    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    assert main(["config", "show", "--json"]) == 0
    data = __import__("json").loads(capsys.readouterr().out)
    assert s3_root.uri in text and s3_root.server.endpoint_url in text
    assert data["target_storage_options"]["data"] == {
        "endpoint_url": s3_root.server.endpoint_url,
        "key": "**********",
        "secret": "**********",
    }
    for shown in (text, str(data)):
        assert s3_root.server.secret not in shown and s3_root.server.key not in shown
