"""Tests for stardag_nb.config: sources, priority, profiles, caches, errors and file helpers.

The autouse ``isolated_env`` fixture (tests/conftest.py) gives every test its own HOME and
working directory and removes all STARDAG_* variables, so each test writes the files it needs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest

from stardag_nb import config
from stardag_nb._config_files import load_toml_sources
from stardag_nb.config import (
    DEFAULT_API_TIMEOUT,
    DEFAULT_API_URL,
    DEFAULT_TARGET_ROOT_KEY,
    ContextConfig,
    IdCache,
    ProfileConfig,
    StardagConfig,
    StardagSettings,
    TargetConfig,
    TomlConfig,
    cache_environment_id,
    cache_workspace_id,
    clear_config_cache,
    config_provider,
    find_project_config,
    get_access_token_cache_path,
    get_cached_environment_id,
    get_cached_target_roots,
    get_cached_workspace_id,
    get_config,
    get_registry_credentials_path,
    get_stardag_dir,
    load_config,
    load_id_cache,
    load_json_file,
    load_target_root_cache,
    load_toml_file,
    save_json_file,
    save_toml_file,
    update_cached_target_roots,
)
from stardag_nb.exceptions import ConfigError
from tests.stardag_venv import stardag_python

USER_TOML = """
[registry.central]
url = "https://central.example.com"

[registry.staging]
url = "https://staging.example.com"

[profile.prod]
registry = "central"
user = "me@example.com"
workspace = "acme"
environment = "prod"

[profile.stage]
registry = "staging"
workspace = "acme"
environment = "stage"

[default]
profile = "prod"
"""


def write_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def write_user_config(home: Path, text: str) -> Path:
    return write_file(home / ".stardag" / "config.toml", text)


def write_project_config(project: Path, text: str) -> Path:
    return write_file(project / ".stardag" / "config.toml", text)


@pytest.fixture
def home(isolated_env: Path) -> Path:
    return isolated_env


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory outside HOME, used as the working directory."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


def default_root(home: Path) -> str:
    return str(home / ".stardag" / "local-target-roots" / "default" / "default")


# --------------------------------------------------------------------------------------------
# Defaults and import weight


def test_defaults_without_files_or_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("config must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)

    cfg = get_config()

    assert cfg.api.url == DEFAULT_API_URL == "http://localhost:8000"
    assert cfg.api.timeout == DEFAULT_API_TIMEOUT == 30.0
    assert cfg.target.roots == {DEFAULT_TARGET_ROOT_KEY: default_root(home)}
    assert cfg.context == ContextConfig()
    assert cfg.access_token is None
    assert cfg.api_key is None
    assert default_root(home) == config.DEFAULT_TARGET_ROOT


def test_import_is_light() -> None:
    heavy = ["IPython", "pandas", "fsspec", "httpx"]
    code = f"import sys, stardag_nb.config\nprint([m for m in {heavy!r} if m in sys.modules])\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_public_names() -> None:
    expected = {
        "APIConfig", "ConfigProvider", "ContextConfig", "DEFAULT_API_TIMEOUT", "DEFAULT_API_URL",
        "DEFAULT_TARGET_ROOT", "DEFAULT_TARGET_ROOT_KEY", "IdCache", "ProfileConfig",
        "RegistryConfig", "StardagConfig", "StardagSettings", "TargetConfig", "TargetRoots",
        "TomlConfig", "cache_environment_id", "cache_workspace_id", "clear_config_cache",
        "config_provider", "find_project_config", "get_access_token_cache_dir",
        "get_access_token_cache_path", "get_cached_environment_id", "get_cached_target_roots",
        "get_cached_workspace_id", "get_config", "get_credentials_dir", "get_id_cache_path",
        "get_local_target_roots_dir", "get_registry_credentials_path", "get_stardag_dir",
        "get_target_root_cache_path", "get_user_config_path", "load_config", "load_id_cache",
        "load_json_file", "load_target_root_cache", "load_toml_file", "save_id_cache",
        "save_json_file", "save_target_root_cache", "save_toml_file",
        "update_cached_target_roots",
    }  # fmt: skip
    assert set(config.__all__) == expected
    for name in expected:
        assert getattr(config, name) is not None


# --------------------------------------------------------------------------------------------
# One test per source


def test_env_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARDAG_API_TIMEOUT", "12.5")
    monkeypatch.setenv("STARDAG_API_KEY", "sk-test")
    monkeypatch.setenv("STARDAG_TARGET_ROOTS", '{"default": "/data/roots"}')

    cfg = load_config()

    assert cfg.api.timeout == 12.5
    assert cfg.api_key == "sk-test"
    assert cfg.target.roots == {"default": "/data/roots"}


def test_user_file_source(home: Path) -> None:
    write_user_config(home, USER_TOML)

    cfg = load_config()

    assert cfg.api.url == "https://central.example.com"
    assert cfg.context == ContextConfig(
        profile="prod",
        registry_name="central",
        user="me@example.com",
        workspace_id="acme",
        environment_id="prod",
    )


def test_project_file_source(project: Path) -> None:
    write_project_config(
        project,
        """
        [registry.team]
        url = "https://team.example.com"
        [profile.dev]
        registry = "team"
        workspace = "ws-1"
        environment = "env-1"
        [default]
        profile = "dev"
        """,
    )

    cfg = load_config()

    assert cfg.api.url == "https://team.example.com"
    assert cfg.context.profile == "dev"
    assert (cfg.context.workspace_id, cfg.context.environment_id) == ("ws-1", "env-1")


def test_project_file_found_from_nested_directory(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_project_config(
        project,
        """
        [registry.team]
        url = "https://team.example.com"
        [profile.dev]
        registry = "team"
        workspace = "w"
        environment = "e"
        [default]
        profile = "dev"
        """,
    )
    nested = project / "src" / "pkg" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)

    assert find_project_config() == path
    assert load_config().api.url == "https://team.example.com"
    assert load_config(use_project_config=False).api.url == DEFAULT_API_URL


def test_no_project_file(project: Path) -> None:
    assert find_project_config() is None


# --------------------------------------------------------------------------------------------
# Priority and merging


def test_precedence_env_over_project_over_user_over_defaults(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_user_config(home, USER_TOML)
    write_project_config(
        project,
        """
        [registry.central]
        url = "https://central-mirror.example.com"
        """,
    )

    # project [registry.central] replaces the user's; user [profile]/[default] still apply
    cfg = load_config()
    assert cfg.api.url == "https://central-mirror.example.com"
    assert cfg.context.profile == "prod"
    assert cfg.api.timeout == DEFAULT_API_TIMEOUT  # no source sets it: the default

    # the project's [default] wins over the user's
    write_project_config(
        project,
        """
        [registry.central]
        url = "https://central-mirror.example.com"
        [default]
        profile = "stage"
        """,
    )
    assert load_config().context.profile == "stage"
    assert load_config().api.url == "https://staging.example.com"

    # the environment wins over both files
    monkeypatch.setenv("STARDAG_PROFILE", "prod")
    assert load_config().context.profile == "prod"
    monkeypatch.setenv("STARDAG_REGISTRY_URL", "https://direct.example.com")
    cfg = load_config()
    assert cfg.api.url == "https://direct.example.com"
    assert cfg.context.profile is None


def test_merge_is_per_table_entry(home: Path, project: Path) -> None:
    write_user_config(home, USER_TOML)
    write_project_config(
        project,
        """
        [profile.prod]           # replaces the user's prod entry as a whole
        registry = "central"
        workspace = "project-ws"
        environment = "project-env"

        [profile.extra]          # added next to the user's entries
        registry = "staging"
        workspace = "x"
        environment = "y"

        [default]
        other_setting = "kept alongside the user's profile key"
        """,
    )

    cfg = load_config()
    assert cfg.context.profile == "prod"  # [default] merged: user's profile key survives
    assert cfg.context.workspace_id == "project-ws"
    assert cfg.context.user is None  # not inherited from the user's prod entry

    merged = load_toml_sources(True).config
    assert set(merged.profile) == {"prod", "stage", "extra"}
    assert set(merged.registry) == {"central", "staging"}


# --------------------------------------------------------------------------------------------
# Profiles


def test_stardag_profile_beats_default_profile(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_user_config(home, USER_TOML)
    monkeypatch.setenv("STARDAG_PROFILE", "stage")

    cfg = load_config()

    assert cfg.context.profile == "stage"
    assert cfg.context.registry_name == "staging"
    assert cfg.api.url == "https://staging.example.com"


def test_no_profile_selected_means_local_defaults(home: Path) -> None:
    write_user_config(home, USER_TOML.replace('[default]\nprofile = "prod"', ""))

    cfg = load_config()

    assert cfg.context == ContextConfig()
    assert cfg.api.url == DEFAULT_API_URL


def test_empty_stardag_profile_is_unset(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_user_config(home, USER_TOML)
    monkeypatch.setenv("STARDAG_PROFILE", "")

    assert load_config().context.profile == "prod"


def test_legacy_organization_key(home: Path) -> None:
    write_user_config(
        home,
        """
        [registry.central]
        url = "https://central.example.com"
        [profile.old]
        registry = "central"
        organization = "legacy-ws"
        environment = "e"
        [default]
        profile = "old"
        """,
    )

    assert load_config().context.workspace_id == "legacy-ws"
    parsed = TomlConfig.from_toml_dict(
        {"profile": {"p": {"registry": "r", "organization": "o", "environment": "e"}}}
    )
    assert parsed.profile["p"].workspace == "o"
    assert ProfileConfig(registry="r", organization="o", environment="e").workspace == "o"  # type: ignore[call-arg]


def test_direct_mode(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_user_config(home, USER_TOML)
    cache_workspace_id("central", "ws-direct", "should-not-be-used")
    monkeypatch.setenv("STARDAG_PROFILE", "stage")  # ignored in direct mode
    monkeypatch.setenv("STARDAG_REGISTRY_URL", "https://direct.example.com")
    monkeypatch.setenv("STARDAG_WORKSPACE_ID", "ws-direct")
    monkeypatch.setenv("STARDAG_ENVIRONMENT_ID", "env-direct")

    cfg = load_config()

    assert cfg.api.url == "https://direct.example.com"
    assert cfg.context == ContextConfig(workspace_id="ws-direct", environment_id="env-direct")
    assert cfg.access_token is None


def test_workspace_and_environment_ids_need_direct_mode(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARDAG_WORKSPACE_ID", "ws")
    monkeypatch.setenv("STARDAG_ENVIRONMENT_ID", "env")

    assert load_config().context == ContextConfig()


# --------------------------------------------------------------------------------------------
# Caches: ids, target roots, access tokens


def test_slugs_resolved_through_id_cache(home: Path) -> None:
    write_user_config(home, USER_TOML)
    cache_workspace_id("central", "acme", "ws-uuid")
    cache_environment_id("central", "ws-uuid", "prod", "env-uuid")

    cfg = load_config()

    assert cfg.context.workspace_id == "ws-uuid"
    assert cfg.context.environment_id == "env-uuid"
    cache = json.loads((home / ".stardag" / "id-cache.json").read_text())
    assert cache == {
        "workspaces": {"central": {"acme": "ws-uuid"}},
        "environments": {"central": {"ws-uuid": {"prod": "env-uuid"}}},
    }


def test_uncached_slugs_are_kept(home: Path) -> None:
    write_user_config(home, USER_TOML)
    cache_workspace_id("other-registry", "acme", "not-this-one")

    cfg = load_config()

    assert (cfg.context.workspace_id, cfg.context.environment_id) == ("acme", "prod")


def test_target_roots_from_cache_for_profile(home: Path) -> None:
    write_user_config(home, USER_TOML)
    cache_workspace_id("central", "acme", "ws-uuid")
    cache_environment_id("central", "ws-uuid", "prod", "env-uuid")
    update_cached_target_roots(
        "https://central.example.com", "ws-uuid", "env-uuid", {"default": "s3://b/prod/"}
    )
    update_cached_target_roots(
        "https://central.example.com", "ws-uuid", "other-env", {"default": "s3://b/other/"}
    )

    assert load_config().target.roots == {"default": "s3://b/prod/"}


def test_target_roots_cache_keyed_by_environment_slug_still_found(home: Path) -> None:
    write_user_config(home, USER_TOML)
    cache_workspace_id("central", "acme", "ws-uuid")
    cache_environment_id("central", "ws-uuid", "prod", "env-uuid")
    update_cached_target_roots("https://central.example.com", "ws-uuid", "prod", {"a": "/a"})

    assert load_config().target.roots == {"a": "/a"}


def test_target_roots_from_cache_in_direct_mode(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    update_cached_target_roots("https://d.example.com", "w", "e", {"default": "~/cached"})
    monkeypatch.setenv("STARDAG_REGISTRY_URL", "https://d.example.com")
    monkeypatch.setenv("STARDAG_WORKSPACE_ID", "w")
    monkeypatch.setenv("STARDAG_ENVIRONMENT_ID", "e")

    assert load_config().target.roots == {"default": str(home / "cached")}

    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DEFAULT", "/from/env")
    assert load_config().target.roots == {"default": "/from/env"}


def test_target_root_cache_helpers(home: Path) -> None:
    assert get_cached_target_roots("u", "w", "e") is None
    update_cached_target_roots("u", "w", "e", {"default": "/1"})
    update_cached_target_roots("u", "w", "e2", {"default": "/2"})
    update_cached_target_roots("u", "w", "e", {"default": "/3"})

    assert get_cached_target_roots("u", "w", "e") == {"default": "/3"}
    assert get_cached_target_roots("u", "w", "e2") == {"default": "/2"}
    assert len(load_target_root_cache()) == 2


def test_broken_caches_are_ignored_with_a_warning(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_file(home / ".stardag" / "id-cache.json", "{not json")
    write_file(home / ".stardag" / "target-root-cache.json", '{"not": "a list"}')

    with caplog.at_level(logging.WARNING):
        assert load_id_cache() == IdCache()
        assert load_target_root_cache() == []
        assert get_cached_workspace_id("r", "w") is None
        assert get_cached_environment_id("r", "w", "e") is None
        assert load_config().target.roots == {"default": default_root(home)}
    assert "id-cache.json" in caplog.text


def _write_token(home: Path, token: str, expires_at: object, user: str = "me@example.com") -> Path:
    path = get_access_token_cache_path("central", "ws-uuid", user)
    save_json_file(path, {"access_token": token, "expires_at": expires_at})
    return path


def test_access_token_loaded_while_valid(home: Path) -> None:
    write_user_config(home, USER_TOML)
    cache_workspace_id("central", "acme", "ws-uuid")
    path = _write_token(home, "tok-valid", time.time() + 3600)
    assert path.name == "central__me_at_example.com__ws-uuid.json"

    assert load_config().access_token == "tok-valid"

    _write_token(home, "tok-iso", "2999-01-01T00:00:00+00:00")
    assert load_config().access_token == "tok-iso"

    _write_token(home, "tok-expired", time.time() - 1)
    assert load_config().access_token is None

    _write_token(home, "tok-garbage", "not a date")
    assert load_config().access_token is None


def test_path_helpers(home: Path) -> None:
    base = home / ".stardag"
    assert get_stardag_dir() == base
    assert config.get_user_config_path() == base / "config.toml"
    assert config.get_id_cache_path() == base / "id-cache.json"
    assert config.get_target_root_cache_path() == base / "target-root-cache.json"
    assert config.get_local_target_roots_dir() == base / "local-target-roots"
    assert config.get_credentials_dir() == base / "credentials"
    assert config.get_access_token_cache_dir() == base / "access-token-cache"
    assert get_registry_credentials_path("central", "a@b.com") == (
        base / "credentials" / "central__a_at_b.com.json"
    )
    assert get_access_token_cache_path("central", "ws", "a@b.com") == (
        base / "access-token-cache" / "central__a_at_b.com__ws.json"
    )


# --------------------------------------------------------------------------------------------
# Target roots from the environment


def test_target_roots_json_keeps_key_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOTS", '{"Default": "/a", "other": "s3://b/"}')

    assert load_config().target.roots == {"Default": "/a", "other": "s3://b/"}


def test_target_roots_key_form_is_lower_cased(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DEFAULT", "/a")
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__MY_DATA", "s3://bucket/data")

    assert load_config().target.roots == {"default": "/a", "my_data": "s3://bucket/data"}


def test_target_roots_key_form_wins_over_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOTS", '{"default": "/json", "json_only": "/j"}')
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DEFAULT", "/key")

    assert load_config().target.roots == {"default": "/key", "json_only": "/j"}


def test_empty_target_roots_object_means_unset(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOTS", "{}")

    assert load_config().target.roots == {"default": default_root(home)}


def test_singular_target_root_form_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOT__DEFAULT", "/singular")

    assert load_config().target.roots == {"default": "/singular"}


def test_singular_form_has_lower_priority_than_plural(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOT__DEFAULT", "/singular-default")
    monkeypatch.setenv("STARDAG_TARGET_ROOT__EXTRA", "/singular-extra")
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DEFAULT", "/plural-key")
    monkeypatch.setenv("STARDAG_TARGET_ROOTS", '{"json": "/plural-json"}')

    assert load_config().target.roots == {
        "default": "/plural-key",
        "extra": "/singular-extra",
        "json": "/plural-json",
    }


def test_tilde_expansion(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOTS", '{"a": "~/outputs", "b": "s3://x/~/y", "c": "~"}')

    assert load_config().target.roots == {
        "a": str(home / "outputs"),
        "b": "s3://x/~/y",
        "c": str(home),
    }
    assert TargetConfig(roots={"k": "~/k"}).roots == {"k": str(home / "k")}


# --------------------------------------------------------------------------------------------
# STARDAG_HOME and HOME


def test_stardag_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = tmp_path / "custom-stardag"
    monkeypatch.setenv("STARDAG_HOME", str(custom))
    write_file(custom / "config.toml", USER_TOML)

    assert get_stardag_dir() == custom
    assert config.get_user_config_path() == custom / "config.toml"
    cfg = load_config()
    assert cfg.context.profile == "prod"
    assert cfg.target.roots == {
        "default": str(custom / "local-target-roots" / "default" / "default")
    }


def test_stardag_home_isolates_from_home_config(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_user_config(home, USER_TOML)
    monkeypatch.setenv("STARDAG_HOME", str(tmp_path / "isolated"))
    (home / "code").mkdir()
    monkeypatch.chdir(home / "code")  # ~/.stardag is now also "a parent's .stardag"

    assert load_config().context == ContextConfig()


def test_home_is_read_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other-home"
    monkeypatch.setenv("HOME", str(other))

    assert get_stardag_dir() == other / ".stardag"
    assert default_root(other) == config.DEFAULT_TARGET_ROOT
    assert TargetConfig().roots == {"default": default_root(other)}


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("where", ["user", "project"])
def test_malformed_toml(where: str, home: Path, project: Path) -> None:
    broken = "[registry.central]\nurl = \n"
    path = (
        write_user_config(home, broken)
        if where == "user"
        else write_project_config(project, broken)
    )

    with pytest.raises(ConfigError) as info:
        load_config()

    message = str(info.value)
    assert str(path) in message
    assert "line 2" in message and "column" in message
    assert "remove" in message
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)


def test_load_toml_file(tmp_path: Path) -> None:
    assert load_toml_file(tmp_path / "missing.toml") == {}
    path = write_file(tmp_path / "bad.toml", "a = [")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_toml_file(path)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not json", "not valid JSON"),
        ('["/a", "/b"]', "list"),
        ('{"default": 1}', "not strings"),
        ("", "not valid JSON"),
    ],
)
def test_bad_target_roots_variable(
    value: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOTS", value)

    with pytest.raises(ConfigError) as info:
        load_config()

    message = str(info.value)
    assert "STARDAG_TARGET_ROOTS" in message
    assert repr(value) in message
    assert problem in message
    assert '{"default": "s3://' in message  # an example of a correct value


def test_bad_api_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARDAG_API_TIMEOUT", "soon")

    with pytest.raises(ConfigError, match=r"STARDAG_API_TIMEOUT='soon'") as info:
        load_config()
    assert info.value.__cause__ is not None


def test_unknown_profile_from_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_user_config(home, USER_TOML)
    monkeypatch.setenv("STARDAG_PROFILE", "prdo")

    with pytest.raises(ConfigError) as info:
        load_config()

    message = str(info.value)
    assert "'prdo'" in message and "STARDAG_PROFILE" in message
    assert "prod, stage" in message


def test_unknown_default_profile(home: Path) -> None:
    write_user_config(
        home,
        """
        [profile.only]
        registry = "r"
        workspace = "w"
        environment = "e"
        [registry.r]
        url = "https://r.example.com"
        [default]
        profile = "gone"
        """,
    )

    with pytest.raises(ConfigError) as info:
        load_config()

    message = str(info.value)
    assert "'gone'" in message and "[default]" in message and "only" in message


def test_profile_with_undefined_registry(home: Path) -> None:
    write_user_config(
        home,
        """
        [registry.central]
        url = "https://central.example.com"
        [profile.p]
        registry = "centrall"
        workspace = "w"
        environment = "e"
        [default]
        profile = "p"
        """,
    )

    with pytest.raises(ConfigError) as info:
        load_config()

    message = str(info.value)
    assert "'centrall'" in message and "central" in message and "[registry.centrall]" in message


def test_invalid_profile_entry_names_entry_and_file(home: Path) -> None:
    path = write_user_config(
        home,
        """
        [profile.p]
        registry = "r"
        workspace = "w"
        """,
    )

    with pytest.raises(ConfigError) as info:
        load_config()

    message = str(info.value)
    assert "[profile.p]" in message and str(path) in message and "environment" in message


def test_non_table_section(home: Path) -> None:
    write_user_config(home, 'registry = "central"\n')

    with pytest.raises(ConfigError, match=r"\[registry\].*must be a table"):
        load_config()


def test_failed_load_is_not_cached(home: Path) -> None:
    path = write_user_config(home, "oops = \n")
    with pytest.raises(ConfigError):
        get_config()

    path.write_text(USER_TOML)
    assert get_config().context.profile == "prod"


# --------------------------------------------------------------------------------------------
# Secrets, caching and the provider


def test_secrets_not_in_repr() -> None:
    cfg = StardagConfig(api_key="sk-secret-123", access_token="jwt-secret-456")

    for text in (repr(cfg), str(cfg)):
        assert "sk-secret-123" not in text
        assert "jwt-secret-456" not in text
        assert "api_key" in text and "access_token" in text  # masked, not hidden
    assert cfg.api_key == "sk-secret-123"  # still a plain str
    assert cfg.access_token == "jwt-secret-456"
    assert cfg.model_dump()["api_key"] == "sk-secret-123"

    assert "sk-secret-123" not in repr(StardagSettings(api_key="sk-secret-123"))
    assert "api_key" not in repr(StardagConfig())


def test_get_config_is_cached_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_config()
    monkeypatch.setenv("STARDAG_API_TIMEOUT", "5")

    assert get_config() is first
    assert get_config().api.timeout == DEFAULT_API_TIMEOUT

    clear_config_cache()
    assert get_config() is not first
    assert get_config().api.timeout == 5.0


def test_config_provider_set_and_reset() -> None:
    loaded = get_config()
    assert config_provider.get() is loaded

    custom = StardagConfig(target=TargetConfig(roots={"default": "/custom"}))
    config_provider.set(custom)
    try:
        assert config_provider.get() is custom
        assert get_config() is loaded  # setting the provider does not touch the cache
    finally:
        config_provider.reset()
    assert config_provider.get() is loaded


# --------------------------------------------------------------------------------------------
# File helpers


def test_save_json_file_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "data.json"
    save_json_file(path, {"a": 1, "b": ["x"]})

    assert load_json_file(path) == {"a": 1, "b": ["x"]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["data.json"]
    assert load_json_file(tmp_path / "missing.json") == {}


def test_save_keeps_existing_permissions(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    path.write_text("{}")
    path.chmod(0o640)

    save_json_file(path, {"x": 1})

    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_failed_save_leaves_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out" / "data.json"
    save_json_file(path, {"version": 1})

    def fail(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_json_file(path, {"version": 2})

    assert load_json_file(path) == {"version": 1}
    assert [p.name for p in path.parent.iterdir()] == ["data.json"]


def test_save_toml_round_trip(tmp_path: Path) -> None:
    data = {
        "title": 'quote " backslash \\ newline \n tab \t bell \x07 unicode é',
        "count": 3,
        "ratio": 0.25,
        "big": 1e300,
        "enabled": False,
        "tags": ["a", 1, True],
        "skipped": None,
        "registry": {"central": {"url": "https://c.example.com"}, "empty": {}},
        "profile": {
            "my.profile": {"registry": "central", "user": None, "workspace": "w"},
            "plain": {"registry": "r"},
        },
        "default": {"profile": "plain"},
    }
    path = tmp_path / "out" / "config.toml"

    save_toml_file(path, data)

    expected = json.loads(json.dumps(data))
    del expected["skipped"]
    del expected["profile"]["my.profile"]["user"]
    assert tomllib.loads(path.read_text(encoding="utf-8")) == expected
    assert load_toml_file(path) == expected


def test_save_toml_rejects_unsupported_values(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"

    with pytest.raises(TypeError, match=r"profile\.p\.when"):
        save_toml_file(path, {"profile": {"p": {"when": object()}}})
    assert not path.exists()


def test_id_cache_helpers(home: Path) -> None:
    assert get_cached_workspace_id("r", "slug") is None
    cache_workspace_id("r", "slug", "id-1")
    cache_environment_id("r", "id-1", "env", "env-id")

    assert get_cached_workspace_id("r", "slug") == "id-1"
    assert get_cached_environment_id("r", "id-1", "env") == "env-id"
    assert get_cached_environment_id("r", "other", "env") is None
    assert load_id_cache().workspaces == {"r": {"slug": "id-1"}}


# --------------------------------------------------------------------------------------------
# Agreement with the reference stardag 0.1.0 (its own venv, built by tests/stardag_venv.py)

def _reference(code: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ["HOME"],
        **{k: v for k, v in os.environ.items() if k.startswith("STARDAG_")},
    }
    result = subprocess.run(
        [str(stardag_python()), "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=os.getcwd(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _reference_config() -> dict[str, object]:
    out = _reference("import stardag.config as c; print(c.load_config().model_dump_json())")
    return json.loads(out)


def _setup_defaults(home: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pass


def _setup_profile_with_caches(home: Path, project: Path, mp: pytest.MonkeyPatch) -> None:
    write_user_config(home, USER_TOML)
    cache_workspace_id("central", "acme", "ws-uuid")
    update_cached_target_roots(
        "https://central.example.com", "ws-uuid", "prod", {"default": "~/cached", "x": "s3://x/"}
    )
    _write_token(home, "tok", time.time() + 3600)


def _setup_project_merge(home: Path, project: Path, mp: pytest.MonkeyPatch) -> None:
    write_user_config(home, USER_TOML)
    write_project_config(
        project,
        """
        [registry.central]
        url = "https://mirror.example.com"
        [profile.local]
        registry = "central"
        organization = "legacy-ws"
        environment = "dev"
        [default]
        profile = "local"
        """,
    )
    nested = project / "a" / "b"
    nested.mkdir(parents=True)
    mp.chdir(nested)


def _setup_env_profile(home: Path, project: Path, mp: pytest.MonkeyPatch) -> None:
    write_user_config(home, USER_TOML)
    mp.setenv("STARDAG_PROFILE", "stage")
    mp.setenv("STARDAG_API_TIMEOUT", "7")
    mp.setenv("STARDAG_API_KEY", "sk-1")


def _setup_direct(home: Path, project: Path, mp: pytest.MonkeyPatch) -> None:
    write_user_config(home, USER_TOML)
    update_cached_target_roots("https://d.example.com", "w", "e", {"default": "/cached/d"})
    mp.setenv("STARDAG_REGISTRY_URL", "https://d.example.com")
    mp.setenv("STARDAG_WORKSPACE_ID", "w")
    mp.setenv("STARDAG_ENVIRONMENT_ID", "e")


def _setup_env_roots(home: Path, project: Path, mp: pytest.MonkeyPatch) -> None:
    mp.setenv("STARDAG_TARGET_ROOTS", '{"Default": "~/json", "keep": "/k"}')
    mp.setenv("STARDAG_TARGET_ROOTS__EXTRA", "~/extra")
    mp.setenv("STARDAG_TARGET_ROOTS__KEEP", "/overridden")


@pytest.mark.parametrize(
    "setup",
    [
        _setup_defaults,
        _setup_profile_with_caches,
        _setup_project_merge,
        _setup_env_profile,
        _setup_direct,
        _setup_env_roots,
    ],
)
def test_matches_reference_stardag(
    setup: object, home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup(home, project, monkeypatch)  # type: ignore[operator]

    ours = json.loads(load_config().model_dump_json())

    assert ours == _reference_config()
    if setup is not _setup_defaults:  # the scenario really exercised something
        assert ours != json.loads(StardagConfig().model_dump_json())


def test_reads_caches_written_by_reference(home: Path) -> None:
    _reference(
        "import stardag.config as c\n"
        "c.cache_workspace_id('central', 'acme', 'ws-ref')\n"
        "c.cache_environment_id('central', 'ws-ref', 'prod', 'env-ref')\n"
        "c.update_cached_target_roots('https://u', 'ws-ref', 'env-ref', {'default': '/r'})\n"
    )

    assert get_cached_workspace_id("central", "acme") == "ws-ref"
    assert get_cached_environment_id("central", "ws-ref", "prod") == "env-ref"
    assert get_cached_target_roots("https://u", "ws-ref", "env-ref") == {"default": "/r"}


def test_save_toml_keeps_the_users_comments_and_layout(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "# my settings: keep this line\n"
        "[target_roots]\n"
        'default = "/data/outputs"  # the big disk\n'
        'scratch = "/tmp/scratch"\n'
        "\n"
        "# profiles I use at work\n"
        "[profile.work]\n"
        'registry = "central"\n',
        encoding="utf-8",
    )
    data = load_toml_file(path)
    data["profile"]["work"]["workspace"] = "team"  # added
    data["target_roots"]["scratch"] = None  # removed
    data["default"] = {"profile": "work"}  # a new table

    save_toml_file(path, data)

    text = path.read_text(encoding="utf-8")
    assert "# my settings: keep this line" in text
    assert 'default = "/data/outputs"  # the big disk' in text
    assert "# profiles I use at work" in text
    assert load_toml_file(path) == {
        "target_roots": {"default": "/data/outputs"},
        "profile": {"work": {"registry": "central", "workspace": "team"}},
        "default": {"profile": "work"},
    }
