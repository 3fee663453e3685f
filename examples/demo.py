"""The demo: define a small DAG with both APIs, build it, print the result.

    python examples/demo.py

Outputs go under the default target root (~/.stardag/local-target-roots/default/default
unless STARDAG_TARGET_ROOTS says otherwise); a second run finds them complete.
"""

from __future__ import annotations

import stardag_nb as sd


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


def main() -> None:
    report = Report(total=get_sum(integers=get_range(limit=10)))
    summary = sd.build(report)
    print(summary)
    print(f"Report id: {report.id}")
    print(f"Output:    {report.output().uri}")
    print(f"Result:    {report.result()}")


if __name__ == "__main__":
    main()
