"""First-start data: the device catalog, so a new installation can plan at once."""

from sqlmodel import Session, select

from controlplane.models import DeviceClass
from optimizer.catalog import CATALOG, DeviceClassSpec


def seed_catalog(session: Session) -> int:
    """Insert catalog classes that are missing by name; an operator's edits to existing rows are kept."""
    existing = set(session.exec(select(DeviceClass.name)).all())
    added = 0
    for spec in CATALOG:
        if spec.name not in existing:
            session.add(DeviceClass(**spec_fields(spec)))
            added += 1
    return added


def spec_fields(spec: DeviceClassSpec) -> dict:
    return {
        "name": spec.name,
        "vendor": spec.vendor,
        "bf16_tflops": spec.bf16_tflops,
        "memory_gib": spec.memory_gib,
        "memory_gbps": spec.memory_gbps,
        "fabric": spec.fabric,
        "usd_per_hour": spec.usd_per_hour,
        "slices_per_device": spec.slices_per_device,
        "price_source": spec.price_source,
        "cores": spec.cores,
        "sold_by_slice": spec.sold_by_slice,
    }


def spec_of(row: DeviceClass) -> DeviceClassSpec:
    """The optimizer's view of a stored class (the database row wins over the packaged catalog)."""
    return DeviceClassSpec(
        name=row.name,
        vendor=row.vendor,
        bf16_tflops=row.bf16_tflops,
        memory_gib=row.memory_gib,
        memory_gbps=row.memory_gbps,
        fabric=row.fabric,
        usd_per_hour=row.usd_per_hour,
        slices_per_device=row.slices_per_device,
        price_source=row.price_source,
        cores=row.cores,
        sold_by_slice=row.sold_by_slice,
    )
