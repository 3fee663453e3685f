"""Serializers: round trips, extensions, factory order and error messages."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import pytest
from pydantic import BaseModel, Field

from stardag_nb.exceptions import SerializationError
from stardag_nb.target import (
    InMemoryFileSystemTarget,
    LocalTarget,
    Serializable,
)
from stardag_nb.target.serialize import (
    JSONSerializer,
    PandasDataFrameCSVSerializer,
    PickleSerializer,
    PlainTextSerializer,
    SelfSerializer,
    SelfSerializing,
    Serializer,
    SerializerFactory,
    get_explicitly_annotated_serializer,
    get_serializer,
    serializer_factory_provider,
    strip_annotation,
)


class Point(BaseModel):
    x: int
    y: float


class Opaque:
    """Not pydantic-compatible: falls back to pickle."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value == self.value


class Report:
    """Self-serializing, with an extension."""

    default_serialized_extension = "report"

    def __init__(self, text: str) -> None:
        self.text = text

    def dump(self, target: Any) -> None:
        with target.open("w") as handle:
            handle.write("REPORT:" + self.text)

    @classmethod
    def load(cls, target: Any) -> Report:
        with target.open("r") as handle:
            return cls(handle.read().removeprefix("REPORT:"))


class Bare:
    """Self-serializing, no extension."""

    def dump(self, target: Any) -> None:
        with target.open("wb") as handle:
            handle.write(b"bare")

    @classmethod
    def load(cls, target: Any) -> Bare:
        return cls()


# --------------------------------------------------------------------------------------
# factory order and extensions


@pytest.mark.parametrize(
    ("annotation", "expected_type", "extension"),
    [
        (str, PlainTextSerializer, "txt"),
        (int, JSONSerializer, "json"),
        (float, JSONSerializer, "json"),
        (dict, JSONSerializer, "json"),
        (list, JSONSerializer, "json"),
        (dict[str, int], JSONSerializer, "json"),
        (list[Point], JSONSerializer, "json"),
        (Point, JSONSerializer, "json"),
        (set[int], JSONSerializer, "json"),
        (str | None, JSONSerializer, "json"),
        (Opaque, PickleSerializer, "pkl"),
        (Report, SelfSerializer, "report"),
        (Bare, SelfSerializer, None),
        (pd.DataFrame, PandasDataFrameCSVSerializer, "csv"),
        (Annotated[str, "metadata only"], PlainTextSerializer, "txt"),
    ],
)
def test_factory_picks_serializer_and_extension(
    annotation: Any, expected_type: type, extension: str | None
) -> None:
    serializer = get_serializer(annotation)
    assert type(serializer) is expected_type
    assert serializer.get_default_extension() == extension


def test_explicit_annotation_wins_over_everything() -> None:
    assert type(get_serializer(Annotated[int, PickleSerializer()])) is PickleSerializer
    assert type(get_serializer(Annotated[str, PickleSerializer()])) is PickleSerializer
    assert type(get_serializer(Annotated[Report, PickleSerializer()])) is PickleSerializer
    assert type(get_serializer(Annotated[pd.DataFrame, PickleSerializer()])) is PickleSerializer
    # the first serializer in the metadata is used
    chosen = get_serializer(Annotated[int, PlainTextSerializer(), PickleSerializer()])
    assert type(chosen) is PlainTextSerializer
    # an explicit JSON serializer keeps its own annotation
    explicit = JSONSerializer(list[int])
    assert get_serializer(Annotated[Opaque, explicit]) == explicit


def test_self_serializing_wins_over_json() -> None:
    class Model(BaseModel):
        a: int

        def dump(self, target: Any) -> None:  # pragma: no cover - not called
            pass

        @classmethod
        def load(cls, target: Any) -> Model:  # pragma: no cover - not called
            raise NotImplementedError

    assert type(get_serializer(Model)) is SelfSerializer
    assert isinstance(Report("x"), SelfSerializing)


def test_explicitly_annotated_and_strip_annotation() -> None:
    with pytest.raises(ValueError, match="No explicit serializer"):
        get_explicitly_annotated_serializer(int)
    with pytest.raises(ValueError, match="No explicit serializer"):
        get_explicitly_annotated_serializer(Annotated[int, "x"])
    # (typing caches Annotated[...] by equality, so an equal instance may come back)
    assert get_explicitly_annotated_serializer(Annotated[int, PickleSerializer()]) == (
        PickleSerializer()
    )
    assert strip_annotation(Annotated[int, "x"]) is int
    assert strip_annotation(Annotated[Annotated[int, "x"], "y"]) is int
    assert strip_annotation(dict[str, int]) == dict[str, int]


def test_type_checked_init_rejects_with_value_error() -> None:
    with pytest.raises(ValueError, match="must be str"):
        PlainTextSerializer.type_checked_init(int)
    with pytest.raises(ValueError, match="must be DataFrame"):
        PandasDataFrameCSVSerializer.type_checked_init(int)
    with pytest.raises(ValueError, match="SelfSerializing"):
        SelfSerializer.type_checked_init(int)
    with pytest.raises(ValueError, match="schema"):
        JSONSerializer.type_checked_init(Opaque)
    assert type(PickleSerializer.type_checked_init(Opaque)) is PickleSerializer


def test_duck_typed_explicit_serializer_is_completed() -> None:
    class Upper:
        def dump(self, obj: str, target: Any) -> None:
            with target.open("w") as handle:
                handle.write(obj.upper())

        def load(self, target: Any) -> str:
            with target.open("r") as handle:
                return str(handle.read())

    serializer = get_serializer(Annotated[str, Upper()])
    assert isinstance(serializer, Serializer)
    assert serializer.get_default_extension() is None
    with InMemoryFileSystemTarget.cleared():
        target = Serializable(InMemoryFileSystemTarget("in-memory://u"), serializer)
        asyncio.run(target.save_aio("abc"))
        assert target.load() == "ABC"
        assert asyncio.run(target.load_aio()) == "ABC"


def test_serializers_compare_by_type_and_schema() -> None:
    assert PickleSerializer() == PickleSerializer()
    assert PlainTextSerializer() != PickleSerializer()
    assert hash(PickleSerializer()) == hash(PickleSerializer())
    assert JSONSerializer(int) == JSONSerializer(int)
    assert JSONSerializer(int) == JSONSerializer(Annotated[int, "same schema"])
    assert JSONSerializer(int) != JSONSerializer(str)
    assert JSONSerializer(dict[str, int]) == JSONSerializer(dict[str, int])
    assert SelfSerializer(Report) == SelfSerializer(Report)
    assert SelfSerializer(Report) != SelfSerializer(Bare)
    assert Annotated[int, PickleSerializer()] == Annotated[int, PickleSerializer()]


def test_factory_is_overridable_and_cached() -> None:
    only_pickle = SerializerFactory(candidates=[PickleSerializer.type_checked_init])
    with serializer_factory_provider.override(only_pickle):
        assert type(get_serializer(int)) is PickleSerializer
    assert type(get_serializer(int)) is JSONSerializer
    factory = SerializerFactory()
    assert factory(dict[str, int]) is factory(dict[str, int])
    # unhashable metadata is fine, just not cached
    unhashable = Annotated[int, {"unhashable": []}]
    assert type(factory(unhashable)) is JSONSerializer


def test_no_candidate_raises_serialization_error() -> None:
    factory = SerializerFactory(candidates=[PlainTextSerializer.type_checked_init])
    with pytest.raises(SerializationError, match="No serializer"):
        factory(int)


# --------------------------------------------------------------------------------------
# round trips


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [0.5, 1.5, 2.5]},
        index=pd.Index(["r1", "r2", "r3"]),
    )


ROUND_TRIPS: list[tuple[Any, Any, str]] = [
    (str, "héllo\r\nwörld\n", "txt"),
    (int, 42, "json"),
    (float, 2.5, "json"),
    (dict[str, int], {"a": 1, "b": 2}, "json"),
    (list[int], [1, 2, 3], "json"),
    (Point, Point(x=1, y=2.5), "json"),
    (list[Point], [Point(x=1, y=2.0)], "json"),
    (Opaque, Opaque(7), "pkl"),
    (Annotated[dict[str, int], PickleSerializer()], {"a": 1}, "pkl"),
]


@pytest.mark.parametrize(("annotation", "value", "ext"), ROUND_TRIPS)
def test_round_trip_local_sync_and_async(
    tmp_path: Path, annotation: Any, value: Any, ext: str
) -> None:
    serializer = get_serializer(annotation)
    target = Serializable(LocalTarget(str(tmp_path / f"out.{ext}")), serializer)
    assert not target.exists()
    target.save(value)
    assert target.exists()
    assert target.load() == value

    async_target = Serializable(LocalTarget(str(tmp_path / f"aio.{ext}")), serializer)
    asyncio.run(async_target.save_aio(value))
    assert asyncio.run(async_target.exists_aio())
    assert asyncio.run(async_target.load_aio()) == value
    assert (tmp_path / f"out.{ext}").read_bytes() == (tmp_path / f"aio.{ext}").read_bytes()


@pytest.mark.parametrize(("annotation", "value", "ext"), ROUND_TRIPS)
def test_round_trip_in_memory(annotation: Any, value: Any, ext: str) -> None:
    with InMemoryFileSystemTarget.cleared():
        target = Serializable(
            InMemoryFileSystemTarget(f"in-memory://x.{ext}"), get_serializer(annotation)
        )
        target.save(value)
        assert target.load() == value
        asyncio.run(target.save_aio(value))
        assert asyncio.run(target.load_aio()) == value


def test_dataframe_round_trip_sync_and_async(tmp_path: Path) -> None:
    frame = _frame()
    serializer = get_serializer(pd.DataFrame)
    target = Serializable(LocalTarget(str(tmp_path / "df.csv")), serializer)
    target.save(frame)
    pd.testing.assert_frame_equal(target.load(), frame)
    assert (tmp_path / "df.csv").read_text().splitlines()[0] == ",a,b,c"
    asyncio.run(target.save_aio(frame))
    pd.testing.assert_frame_equal(asyncio.run(target.load_aio()), frame)


def test_self_serializer_round_trip(tmp_path: Path) -> None:
    target = Serializable(LocalTarget(str(tmp_path / "r.report")), get_serializer(Report))
    target.save(Report("quarterly"))
    assert (tmp_path / "r.report").read_text() == "REPORT:quarterly"
    assert target.load().text == "quarterly"
    asyncio.run(target.save_aio(Report("async")))
    assert asyncio.run(target.load_aio()).text == "async"


def test_self_serializer_uses_async_methods_when_defined(tmp_path: Path) -> None:
    calls: list[str] = []

    class AsyncReport(Report):
        async def dump_aio(self, target: Any) -> None:
            calls.append("dump_aio")
            self.dump(target)

        @classmethod
        async def load_aio(cls, target: Any) -> AsyncReport:
            calls.append("load_aio")
            return cls(Report.load(target).text)

    target = Serializable(LocalTarget(str(tmp_path / "a.report")), get_serializer(AsyncReport))
    asyncio.run(target.save_aio(AsyncReport("v")))
    assert asyncio.run(target.load_aio()).text == "v"
    assert calls == ["dump_aio", "load_aio"]


def test_dumps_loads_formats() -> None:
    assert JSONSerializer(dict[str, int]).dumps({"a": 1}) == b'{"a":1}'
    assert JSONSerializer(dict[str, int]).loads(b'{"a":1}') == {"a": 1}
    assert PlainTextSerializer().dumps("x") == "x"
    assert PickleSerializer().loads(PickleSerializer().dumps([1, 2])) == [1, 2]
    assert pickle.loads(PickleSerializer().dumps({"k": 1})) == {"k": 1}
    text = PandasDataFrameCSVSerializer().dumps(_frame())
    pd.testing.assert_frame_equal(PandasDataFrameCSVSerializer().loads(text), _frame())


def test_json_coerces_compatible_values(tmp_path: Path) -> None:
    target = Serializable(LocalTarget(str(tmp_path / "t.json")), get_serializer(list[int]))
    target.save((1, 2, 3))  # a tuple for list[int]: validated, then stored
    assert target.load() == [1, 2, 3]
    model = Serializable(LocalTarget(str(tmp_path / "m.json")), get_serializer(Point))
    model.save({"x": 1, "y": 2})  # a dict for a model
    assert model.load() == Point(x=1, y=2.0)


def test_json_keeps_annotated_constraints() -> None:
    serializer = get_serializer(Annotated[int, Field(gt=0)])
    assert serializer.loads(b"3") == 3
    with pytest.raises(SerializationError):
        serializer.loads(b"-1")


# --------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("value", "offending"),
    [
        ({"a": {1, 2}}, "set"),
        ({"a": object()}, "object"),
        (object(), "object"),
        ({"a": "not a number"}, "str"),
    ],
)
def test_json_save_mismatch_names_uri_types_and_fix(
    tmp_path: Path, value: Any, offending: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    path = out / "out.json"
    target = Serializable(LocalTarget(str(path)), get_serializer(dict[str, int]))
    with pytest.raises(SerializationError) as info:
        target.save(value)
    message = str(info.value)
    assert str(path) in message
    assert "dict[str, int]" in message
    assert offending in message
    assert "PickleSerializer()" in message
    assert "Annotated[dict[str, int], PickleSerializer()]" in message
    assert info.value.__cause__ is not None
    assert not path.exists()
    assert list(out.iterdir()) == []  # no temp file either


def test_json_unserializable_inside_any_names_type(tmp_path: Path) -> None:
    path = tmp_path / "any.json"
    target = Serializable(LocalTarget(str(path)), get_serializer(dict[str, Any]))
    with pytest.raises(SerializationError) as info:
        target.save({"a": Opaque(1)})
    assert str(path) in str(info.value)
    assert "Opaque" in str(info.value)
    # the async path raises the same error
    with pytest.raises(SerializationError):
        asyncio.run(target.save_aio({"a": Opaque(1)}))
    assert not path.exists()


def test_failed_save_keeps_previous_content(tmp_path: Path) -> None:
    path = tmp_path / "keep.json"
    target = Serializable(LocalTarget(str(path)), get_serializer(dict[str, int]))
    target.save({"a": 1})
    with pytest.raises(SerializationError):
        target.save({"a": {1}})
    assert target.load() == {"a": 1}


def test_corrupt_json_load_names_uri(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    target = Serializable(LocalTarget(str(path)), get_serializer(dict[str, int]))
    with pytest.raises(SerializationError) as info:
        target.load()
    assert str(path) in str(info.value)
    assert "dict[str, int]" in str(info.value)
    assert info.value.__cause__ is not None
    with pytest.raises(SerializationError, match="bad.json"):
        asyncio.run(target.load_aio())


def test_pickle_errors_name_uri(tmp_path: Path) -> None:
    path = tmp_path / "f.pkl"
    target = Serializable(LocalTarget(str(path)), PickleSerializer())
    with pytest.raises(SerializationError, match="lambda|pickle") as info:
        target.save(lambda: 1)
    assert str(path) in str(info.value)
    assert not path.exists()
    path.write_bytes(b"not a pickle")
    with pytest.raises(SerializationError) as load_info:
        target.load()
    assert str(path) in str(load_info.value)


def test_text_serializer_rejects_non_str(tmp_path: Path) -> None:
    target = Serializable(LocalTarget(str(tmp_path / "t.txt")), PlainTextSerializer())
    with pytest.raises(SerializationError, match="t.txt"):
        target.save(123)  # type: ignore[arg-type]


def test_serialization_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        JSONSerializer(int).dumps("nope")  # type: ignore[arg-type]


def test_missing_file_load_raises_file_not_found(tmp_path: Path) -> None:
    target = Serializable(LocalTarget(str(tmp_path / "missing.json")), JSONSerializer(int))
    with pytest.raises(FileNotFoundError):
        target.load()


# --------------------------------------------------------------------------------------
# Serializable delegation


def test_serializable_delegates_to_wrapped(tmp_path: Path) -> None:
    local = LocalTarget(str(tmp_path / "d.txt"))
    target = Serializable(local, PlainTextSerializer())
    assert target.uri == local.uri
    with target.open("w") as handle:
        handle.write("via open")
    assert target.load() == "via open"
    with target.proxy_path("r") as path:
        assert path.read_text() == "via open"
    with target.proxy_path("w") as path:
        path.write_text("via proxy")
    assert target.load() == "via proxy"

    async def go() -> str:
        async with target.proxy_path_aio("w") as path:
            path.write_text("via async proxy")
        async with target.open_aio("r") as handle:
            return str(await handle.read())

    assert asyncio.run(go()) == "via async proxy"
    assert target == Serializable(LocalTarget(str(tmp_path / "d.txt")), PlainTextSerializer())
    assert "Serializable" in repr(target)
