"""Regenerate tests/resources/stardag_surface.json: stardag 0.1.0's public names and the
parameter names of its public functions and methods, per public module.

    /tmp/sdref/bin/python tools/gen_stardag_surface.py
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

MODULES = [
    "stardag",
    "stardag.build",
    "stardag.target",
    "stardag.target.serialize",
    "stardag.registry",
    "stardag.registry_asset",
    "stardag.polymorphic",
    "stardag.base_model",
    "stardag.config",
    "stardag.exceptions",
    "stardag.utils.resource_provider",
]
SKIP_IMPORTED = {"annotations", "TYPE_CHECKING"}


def params(obj: object) -> list[str] | None:
    try:
        return [p for p in inspect.signature(obj).parameters]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def public_names(mod: object) -> list[str]:
    names = getattr(mod, "__all__", None)
    if names is not None:
        return sorted(names)
    out = []
    for name, value in vars(mod).items():
        if name.startswith("_") or name in SKIP_IMPORTED or inspect.ismodule(value):
            continue
        owner = getattr(value, "__module__", None)
        if owner is not None and not str(owner).startswith("stardag"):
            continue  # re-exported third-party names (Path, BaseModel...)
        out.append(name)
    return sorted(out)


def main() -> None:
    surface: dict[str, dict[str, object]] = {}
    for modname in MODULES:
        mod = importlib.import_module(modname)
        entries: dict[str, object] = {}
        for name in public_names(mod):
            value = getattr(mod, name, None)
            entry: dict[str, object] = {"kind": type(value).__name__}
            if inspect.isfunction(value):
                entry["params"] = params(value)
            elif inspect.isclass(value):
                entry["kind"] = "class"
                methods = {}
                for attr, member in vars(value).items():
                    if attr.startswith("_") and attr != "__init__":
                        continue
                    func = (
                        member.__func__
                        if isinstance(member, (classmethod, staticmethod))
                        else member
                    )
                    if inspect.isfunction(func):
                        methods[attr] = params(func)
                entry["methods"] = methods
            entries[name] = entry
        surface[modname.replace("stardag", "stardag_nb", 1)] = entries
    out = Path(__file__).resolve().parent.parent / "tests" / "resources" / "stardag_surface.json"
    out.write_text(json.dumps(surface, indent=1, sort_keys=True) + "\n")
    print(f"wrote {sum(len(v) for v in surface.values())} names to {out}")


if __name__ == "__main__":
    main()
