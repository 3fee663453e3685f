"""Public surface and import lightness of stardag_nb.target."""

from __future__ import annotations

import subprocess
import sys

import stardag_nb.target as target_module
import stardag_nb.target.serialize as serialize_module

STARDAG_TARGET_ALL = [
    "CachedRemoteFileSystem",
    "CachedRemoteFileSystemConfig",
    "DirectoryTarget",
    "FileSystemTarget",
    "get_target",
    "get_directory_target",
    "InMemoryFileSystemTarget",
    "InMemoryRemoteFileSystem",
    "InMemoryTarget",
    "LoadableSaveableTarget",
    "LoadableSaveableFileSystemTarget",
    "LoadableTarget",
    "LoadedT",
    "LocalTarget",
    "RemoteFileSystemABC",
    "RemoteFileSystemTarget",
    "SaveableTarget",
    "Serializable",
    "Target",
    "TargetFactory",
    "target_factory_provider",
]

SERIALIZE_NAMES = [
    "Serializer",
    "PlainTextSerializer",
    "JSONSerializer",
    "PickleSerializer",
    "PandasDataFrameCSVSerializer",
    "SelfSerializer",
    "SelfSerializing",
    "Serializable",
    "SerializerFactory",
    "serializer_factory_provider",
    "get_serializer",
    "get_explicitly_annotated_serializer",
    "strip_annotation",
]

HEAVY = ["pandas", "fsspec", "httpx", "IPython"]


def test_target_all_is_stardag_all_plus_extras() -> None:
    assert target_module.__all__[: len(STARDAG_TARGET_ALL)] == STARDAG_TARGET_ALL
    assert target_module.__all__[len(STARDAG_TARGET_ALL) :] == ["FsspecRemoteFileSystem"]
    for name in target_module.__all__:
        assert getattr(target_module, name) is not None


def test_serialize_public_names() -> None:
    for name in SERIALIZE_NAMES:
        assert name in serialize_module.__all__
        assert hasattr(serialize_module, name)
    assert serialize_module.Serializable is target_module.Serializable
    # stardag exposes these from serialize too
    for name in ("FileSystemTarget", "FileSystemTargetHandle", "resource_provider"):
        assert hasattr(serialize_module, name)


def test_lazy_dataframe_attribute() -> None:
    import pandas as pd

    assert serialize_module.DataFrame is pd.DataFrame


def test_import_does_not_pull_heavy_modules() -> None:
    code = (
        "import sys, stardag_nb.target, stardag_nb.target.serialize\n"
        "from typing import Annotated\n"
        "from stardag_nb.target.serialize import get_serializer, PickleSerializer\n"
        "from stardag_nb.target import LocalTarget, TargetFactory, InMemoryTarget\n"
        "# choosing serializers and local/in-memory targets stays light too\n"
        "for t in (str, int, dict[str, int], object, Annotated[int, PickleSerializer()]):\n"
        "    get_serializer(t)\n"
        "TargetFactory(target_roots={'default': '/tmp/x', 'm': 'in-memory://r'}).get_target('a')\n"
        "TargetFactory(target_roots={'m': 'in-memory://r'}).get_target('a', 'm').exists()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"
