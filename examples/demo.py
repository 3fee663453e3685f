"""The demo: define a small DAG with both APIs, build it, print the result and what the
embedded registry recorded.

    python examples/demo.py

Outputs go under the default target root (~/.stardag/local-target-roots/default/default
unless STARDAG_TARGET_ROOTS says otherwise) and the build is recorded in
~/.stardag/registry.sqlite3 (STARDAG_REGISTRY); a second run finds everything complete.
"""

from __future__ import annotations

import stardag_nb as sd
import stardag_nb.registry_asset
from stardag_nb.registry import SQLiteRegistry


@sd.task
def get_range(limit: int) -> list[int]:
    """The integers below ``limit``."""
    return list(range(limit))


@sd.task(version="1")
def get_sum(integers: sd.Depends[list[int]]) -> int:
    """Their sum."""
    return sum(integers)


class Report(sd.AutoTask[str]):
    """A one-line report on a sum (the class API)."""

    total: sd.TaskLoads[int]
    label: str = "sum"

    def requires(self) -> sd.TaskStruct:
        return self.total

    def run(self) -> None:
        self.output().save(f"{self.label} = {self.total.output().load()}")

    def registry_assets(self) -> list[sd.registry_asset.RegistryAsset]:
        return [sd.registry_asset.MarkdownRegistryAsset(name="report", body=f"**{self.result()}**")]


def main() -> None:
    report = Report(total=get_sum(integers=get_range(limit=10)))
    summary = sd.build(report)
    print(summary)
    print(f"Report id: {report.id}")
    print(f"Output:    {report.output().uri}")
    print(f"Result:    {report.result()}")

    registry = sd.registry_provider.get()
    if isinstance(registry, SQLiteRegistry):
        print(f"\nRecorded in {registry.path} (build {summary.build_id}):")
        for record in registry.list_build_tasks(summary.build_id):
            print(f"  {record.name:<10} {record.status:<17} {record.task_id}")
        for asset in registry.get_assets(report.id):
            print(f"  asset {asset.name!r} ({asset.type}): {asset.body}")
        print(f"Also: stardag-nb registry tasks {str(summary.build_id)[:8]}")


if __name__ == "__main__":
    main()
