"""Environments whose target roots live on a real S3 server (tests/s3_server.py), given
with storage options through the CLI, on the embedded registry and the registry service:
provisioning creates the bucket (the probe is gone), builds write there, ``--purge-data``
deletes exactly the recorded outputs, and credentials are never printed."""

from __future__ import annotations

import textwrap

from stardag_nb.environments import provision_target_root, purge_outputs
from stardag_nb.registry.wire import TargetRootIn
from tests.cli.test_admin_cli import DAG, Backend, backend, service, unique  # noqa: F401
from tests.s3_server import S3Server


def _option_args(server: S3Server) -> list[str]:
    return [arg for k, v in server.storage_options().items() for arg in ("--option", f"{k}={v}")]


def test_environment_on_s3_provision_build_and_purge(backend: Backend, s3_server: S3Server) -> None:
    name = unique("s3env")
    bucket = f"prov-{name}"
    uri = f"s3://{bucket}/outputs"
    backend.ok("environment", "create", name)
    backend.ok("config", "use", "environment", name)
    added = backend.ok("environment", "target-roots", "add", "default", uri,
                       *_option_args(s3_server))  # fmt: skip
    # provisioning created the bucket and removed its probe
    assert s3_server.has_bucket(bucket)
    assert s3_server.keys(bucket) == []
    assert "running" in added.out and s3_server.endpoint_url in added.out
    shown = backend.ok("environment", "show", name)
    as_json = backend.ok("environment", "show", name, "--json")
    for out in (added, shown, as_json):
        assert s3_server.secret not in out.out + out.err
        assert s3_server.key not in out.out + out.err
    (root,) = as_json.json()["target_roots"]
    assert root["storage_options"]["endpoint_url"] == s3_server.endpoint_url
    assert root["storage_options"]["secret"] == "**********"

    # a build in the environment writes its outputs to the bucket
    project = backend.root / "project"
    project.mkdir()
    (project / "dag.py").write_text(textwrap.dedent(DAG))
    built = backend.subprocess("build", "dag:result", cwd=project)
    assert built.code == 0, built.err
    assert s3_server.secret not in built.out + built.err
    recorded = s3_server.keys(bucket)
    assert len(recorded) == 2 and all(k.startswith("outputs/") for k in recorded), recorded
    rebuilt = backend.subprocess("build", "dag:result", "--json", cwd=project)
    assert rebuilt.code == 0, rebuilt.err
    assert s3_server.keys(bucket) == recorded

    # unrecorded objects (under the root and beside it) survive the purge
    fs = s3_server.fs()
    fs.pipe(f"{bucket}/outputs/notes.txt", b"mine")
    fs.pipe(f"{bucket}/elsewhere/x.json", b"1")
    deleted = backend.ok("environment", "delete", name, "--purge-data", "--yes")
    assert f"deleted 2 recorded output(s) under {uri}" in deleted.out
    assert s3_server.keys(bucket) == ["elsewhere/x.json", "outputs/notes.txt"]


def test_missing_bucket_without_create_names_the_root(s3_server: S3Server) -> None:
    root = TargetRootIn(name="data", uri="s3://absent-bucket/x", create=False,
                        storage_options=s3_server.storage_options())  # fmt: skip
    check = provision_target_root(root)
    assert not check.ok
    assert check.message.startswith("target root 'data' (s3://absent-bucket/x): bucket")
    assert "does not exist" in check.message
    assert not s3_server.has_bucket("absent-bucket")


def test_purge_outputs_on_s3_deletes_only_recorded_keys_under_the_root(
    s3_server: S3Server,
) -> None:
    bucket = s3_server.new_bucket()
    fs = s3_server.fs()
    for key in ("r/a.json", "r/b.json", "r/dir/1", "r/dir/2", "other/a.json"):
        fs.pipe(f"{bucket}/{key}", b"x")
    root = TargetRootIn(name="r", uri=f"s3://{bucket}/r",
                        storage_options=s3_server.storage_options())  # fmt: skip
    checks = purge_outputs(
        [root],
        [f"s3://{bucket}/r/a.json", f"s3://{bucket}/r/dir/", f"s3://{bucket}/other/a.json",
         f"s3://{bucket}/r/missing.json"],
    )  # fmt: skip
    assert s3_server.keys(bucket) == ["other/a.json", "r/b.json"]
    assert checks[0].ok, checks[0].message
    assert "deleted 2 recorded output(s)" in checks[0].message
    assert checks[1].name == "-" and "other/a.json" in checks[1].message


def test_an_embedded_registry_of_schema_3_gains_root_storage_options(
    tmp_path: object, s3_server: S3Server
) -> None:
    """A file written before storage options existed opens, upgrades, and stores them."""
    import sqlite3
    from pathlib import Path

    from stardag_nb.registry import EmbeddedAdmin
    from stardag_nb.registry.embedded import schema

    path = Path(str(tmp_path)) / "old.sqlite3"
    with EmbeddedAdmin(path, username="alice") as admin:
        admin.create_environment("default", "dev", {"default": str(Path(str(tmp_path)) / "o")})
    with sqlite3.connect(path) as conn:  # back to schema 3: no storage_options column
        conn.execute("ALTER TABLE environment_target_roots DROP COLUMN storage_options")
        conn.execute("PRAGMA user_version = 3")
    bucket = f"old-{unique('b')}"
    with EmbeddedAdmin(path, username="alice") as admin:
        env = admin.add_target_root("default", "dev", "data", f"s3://{bucket}/x",
                                    storage_options=s3_server.storage_options())  # fmt: skip
        assert env.state.value == "running", env.state_reason
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 4
    assert s3_server.has_bucket(bucket)
