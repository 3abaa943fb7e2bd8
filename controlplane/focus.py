"""Cost exports: FOCUS 1.0 rows and plain CSV from chargeback lines. Pure: no database, no I/O.

A `ChargeLine` is what one (period, tenant, workload, fragment, device class) cost, a device
class's idle capacity in a period (no tenant), or the share of idle capacity a fragment was given
(`share_idle` weighted or even: no unit price, since idle of several classes may make it up). FOCUS (FinOps Open Cost and Usage Specification) 1.0
reads it as a usage charge of an internal provider, heteroplane, to its tenants:

| FOCUS column                       | from a line                                                      |
|------------------------------------|------------------------------------------------------------------|
| BilledCost = EffectiveCost = ListCost = ContractedCost | cost_usd (on-demand list prices: no discounts, no commitments) |
| ListUnitPrice = ContractedUnitPrice | usd_per_device_hour (empty on an idle share)                     |
| ConsumedQuantity = PricingQuantity | device_hours (allocated device-seconds / 3600), unit "Hours"     |
| ChargePeriodStart / End            | the line's period (a whole hour or day of UTC)                   |
| BillingPeriodStart / End           | the calendar month (UTC) holding the charge period               |
| ChargeCategory / ChargeFrequency   | "Usage" / "Usage-Based"                                           |
| ResourceId / ResourceName          | tenant/workload/fragment@class / fragment key; idle: idle@class;  |
|                                    | an idle share: tenant/workload/fragment@idle-share                |
| SkuId / SkuPriceId                 | the device class / class at its price                            |
| SubAccountId / SubAccountName      | "tenant-<id>" / tenant name; empty for idle                      |
| ServiceName / ServiceCategory      | the workload (idle: "idle capacity") / "AI and Machine Learning" |
| Tags                               | JSON: tenant, workload, fragment, device_class (idle: idle=true) |

Numbers are written as decimals ("3.0", never "3"): FOCUS's decimal columns must read as decimals.
"""

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

PROVIDER = "heteroplane"
SERVICE_CATEGORY = "AI and Machine Learning"

FOCUS_COLUMNS = (
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription",
    "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart", "CommitmentDiscountCategory",
    "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountStatus", "CommitmentDiscountType",
    "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "ContractedUnitPrice", "EffectiveCost",
    "InvoiceIssuer", "ListCost", "ListUnitPrice", "PricingCategory", "PricingQuantity", "PricingUnit",
    "Provider", "Publisher", "RegionId", "RegionName",
    "ResourceID",  # FOCUS 1.0 spells it ResourceId; focus-validator 1.0.0 requires this spelling
    "ResourceName", "ResourceType", "ServiceCategory", "ServiceName", "SkuId", "SkuPriceId", "SubAccountId",
    "SubAccountName", "Tags",
)
CSV_COLUMNS = ("period_start", "period_end", "tenant", "workload", "fragment", "device_class", "line",
               "device_hours", "usd_per_device_hour", "cost_usd")


@dataclass(frozen=True)
class ChargeLine:
    """What one fragment on one device class cost its tenant in [start, end); with `tenant` None,
    the class's healthy capacity nobody was allocated (idle) in that period."""

    start: datetime
    end: datetime
    device_class: str
    device_seconds: float
    usd_per_device_hour: float | None
    cost_usd: float
    tenant_id: int | None = None
    tenant: str | None = None
    workload: str | None = None
    fragment: str | None = None
    idle_share: bool = False  # idle capacity given to this fragment: device_class is 'idle-share'

    @property
    def idle(self) -> bool:
        return self.tenant is None


def instant(at: datetime) -> str:
    """ISO 8601 in UTC with a Z, as FOCUS's date-time columns want it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decimal(value: float) -> str:
    """A decimal that reads back as one: repr keeps every digit, and a whole number gets its '.0'."""
    text = repr(float(value))
    return text if any(c in text for c in ".en") else text + ".0"


def billing_month(at: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding `at`: [first instant, first instant of the next)."""
    at = at.astimezone(UTC)
    start = datetime(at.year, at.month, 1, tzinfo=UTC)
    end = datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def focus_row(line: ChargeLine, account: str) -> dict[str, str]:
    """One FOCUS 1.0 row (every column, empty where null) for `line`; `account` names the fleet."""
    period_start, period_end = billing_month(line.start)
    hours = line.device_seconds / 3600
    if line.idle:
        resource_id, resource_name, service = f"idle@{line.device_class}", f"idle {line.device_class}", "idle capacity"
        tags = {"device_class": line.device_class, "idle": "true"}
        description = f"healthy {line.device_class} capacity allocated to no workload"
    else:
        resource_id = f"{line.tenant}/{line.workload}/{line.fragment}@{line.device_class}"
        resource_name, service = line.fragment or "", line.workload or ""
        tags = {"tenant": line.tenant, "workload": line.workload, "fragment": line.fragment,
                "device_class": line.device_class}
        description = (f"{line.fragment} of {line.workload}: its share of idle capacity" if line.idle_share
                       else f"{line.fragment} of {line.workload} on {line.device_class}")
        if line.idle_share:
            tags["idle_share"] = "true"
    cost = decimal(line.cost_usd)
    price = decimal(line.usd_per_device_hour) if line.usd_per_device_hour is not None else ""
    row = dict.fromkeys(FOCUS_COLUMNS, "")
    row.update(
        BilledCost=cost, EffectiveCost=cost, ListCost=cost, ContractedCost=cost,
        ListUnitPrice=price, ContractedUnitPrice=price,
        ConsumedQuantity=decimal(hours), ConsumedUnit="Hours",
        PricingQuantity=decimal(hours) if price else "", PricingUnit="Hours" if price else "",
        BillingAccountId=account, BillingAccountName=account, BillingCurrency="USD",
        BillingPeriodStart=instant(period_start), BillingPeriodEnd=instant(period_end),
        ChargePeriodStart=instant(line.start), ChargePeriodEnd=instant(line.end),
        ChargeCategory="Usage", ChargeFrequency="Usage-Based", ChargeDescription=description,
        InvoiceIssuer=PROVIDER, Provider=PROVIDER, Publisher=PROVIDER, PricingCategory="Standard",
        ResourceID=resource_id, ResourceName=resource_name, ResourceType="Accelerator time",
        ServiceCategory=SERVICE_CATEGORY, ServiceName=service,
        SkuId=line.device_class, SkuPriceId=f"{line.device_class}@{price}/h" if price else line.device_class,
        SubAccountId="" if line.idle else f"tenant-{line.tenant_id}", SubAccountName=line.tenant or "",
        Tags=json.dumps(tags, sort_keys=True),
    )
    return row


def csv_row(line: ChargeLine) -> dict[str, str]:
    return {"period_start": instant(line.start), "period_end": instant(line.end), "tenant": line.tenant or "",
            "workload": line.workload or "", "fragment": line.fragment or "", "device_class": line.device_class,
            "line": "idle" if line.idle else "idle share" if line.idle_share else "usage",
            "device_hours": decimal(line.device_seconds / 3600),
            "usd_per_device_hour": decimal(line.usd_per_device_hour) if line.usd_per_device_hour is not None else "",
            "cost_usd": decimal(line.cost_usd)}


def write_csv(lines: Iterable[ChargeLine], focus: bool, account: str = PROVIDER) -> str:
    """The export as CSV text: FOCUS 1.0 columns with `focus`, else the plain chargeback columns.
    Text cells that a spreadsheet would run as a formula (=, +, -, @ first) are quoted with a
    leading apostrophe: names come from users."""
    out = io.StringIO()
    columns = FOCUS_COLUMNS if focus else CSV_COLUMNS
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for line in lines:
        row = focus_row(line, account) if focus else csv_row(line)
        writer.writerow({k: defused(v) for k, v in row.items()})
    return out.getvalue()


def defused(value: str) -> str:
    """`value`, with a leading apostrophe where a spreadsheet would read it as a formula; numbers
    (which may start with '-') are written by `decimal` and never start with = + @."""
    if value and value[0] in "=+@\t\r" or (value.startswith("-") and not _is_number(value)):
        return "'" + value
    return value


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
