"""Costs from metered usage, grouped the way chargeback needs them."""

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import select

from controlplane.api.routing import OneHopRoute
from controlplane.db import int_sum
from controlplane.deps import SessionDep, Viewer
from controlplane.errors import ApiError
from controlplane.models import DeviceClass, Fragment, Tenant, UsageRecord, Workload
from controlplane.models._common import Instant, to_utc, utcnow

router = APIRouter(tags=["costs"], route_class=OneHopRoute)


class GroupBy(StrEnum):
    tenant = "tenant"
    workload = "workload"
    device_class = "device_class"
    fragment = "fragment"


class CostLine(BaseModel):
    id: int
    name: str
    cost_usd: float
    tokens: int
    device_seconds_allocated: float
    device_seconds_busy: float
    usd_per_1m_tokens: float | None
    efficiency: float | None  # busy / allocated


class CostReport(BaseModel):
    since: datetime
    until: datetime
    group_by: GroupBy
    total_cost_usd: float
    total_tokens: int
    items: list[CostLine]


_GROUPS = {
    GroupBy.tenant: (UsageRecord.tenant_id, Tenant, Tenant.name),
    GroupBy.workload: (UsageRecord.workload_id, Workload, Workload.name),
    GroupBy.device_class: (UsageRecord.device_class_id, DeviceClass, DeviceClass.name),
    GroupBy.fragment: (UsageRecord.fragment_id, Fragment, Fragment.key),
}


@router.get("/costs", response_model=CostReport)
def costs(
    session: SessionDep,
    principal: Viewer,
    group_by: GroupBy = GroupBy.workload,
    since: Annotated[Instant | None, Query(description="Start (UTC, 2000-01-01 to 2200-01-01); default one hour before `until`.")] = None,
    until: Annotated[Instant | None, Query(description="End (UTC, 2000-01-01 to 2200-01-01), exclusive; default now.")] = None,
):
    until = to_utc(until) if until else utcnow()
    since = to_utc(since) if since else until - timedelta(hours=1)
    if since >= until:
        raise ApiError("since must be before until", field="since")
    key, model, name = _GROUPS[group_by]
    statement = (
        select(
            key,
            name,
            func.sum(UsageRecord.cost_usd),
            int_sum(UsageRecord.tokens),
            func.sum(UsageRecord.device_seconds_allocated),
            func.sum(UsageRecord.device_seconds_busy),
        )
        .join(model, model.id == key)
        .where(UsageRecord.minute >= since, UsageRecord.minute < until)
        .group_by(key, name)
        .order_by(func.sum(UsageRecord.cost_usd).desc(), key)
    )
    if principal.tenant_id is not None:
        statement = statement.where(UsageRecord.tenant_id == principal.tenant_id)
    items = []
    for row_id, row_name, cost, tokens, allocated, busy in session.exec(statement).all():
        cost, tokens, allocated, busy = float(cost or 0), int(tokens or 0), float(allocated or 0), float(busy or 0)
        items.append(
            CostLine(
                id=row_id,
                name=row_name,
                cost_usd=cost,
                tokens=tokens,
                device_seconds_allocated=allocated,
                device_seconds_busy=busy,
                usd_per_1m_tokens=cost / tokens * 1e6 if tokens else None,
                efficiency=busy / allocated if allocated else None,
            )
        )
    return CostReport(
        since=since,
        until=until,
        group_by=group_by,
        total_cost_usd=sum(i.cost_usd for i in items),
        total_tokens=sum(i.tokens for i in items),
        items=items,
    )
