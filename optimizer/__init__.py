"""Pure placement optimisation: a `Problem` in, a `Plan` out. No database, no HTTP, no clock."""

from optimizer.types import (
    Assignment,
    ClassCapacity,
    FragmentDemand,
    Plan,
    PlanStatus,
    Problem,
    ServiceProfile,
)

__all__ = ["Assignment", "ClassCapacity", "FragmentDemand", "Plan", "PlanStatus", "Problem", "ServiceProfile"]
