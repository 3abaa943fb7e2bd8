"""Kernel selection: which kernel each (op, device class, dtype, shape bucket) runs, with the evidence
it was chosen on (kernels.registry, `heteroplane kernels verify|bench`)."""

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel


class KernelSelection(SQLModel, table=True):
    """One selection: the chosen candidate ('reference' when the eager reference was kept), its
    speedup over the reference (1.0 when kept), the spread (IQR / median) the margin had to beat, the
    verifier's tolerances and seeds, and the torch version and device it was measured with. A
    bucket is floor(log2(elements of the op's shape)); `shape` is the shape measured for it."""

    __tablename__ = "kernel_selection"
    __table_args__ = (
        UniqueConstraint("op", "device_class", "dtype", "shape_bucket", name="uq_kernel_selection"),
    )
    id: int | None = Field(default=None, primary_key=True)
    op: str = Field(max_length=64)
    device_class: str = Field(max_length=128, index=True)
    dtype: str = Field(max_length=16)
    shape_bucket: int
    shape: str = Field(max_length=128)
    chosen: str = Field(max_length=128)
    speedup: float
    spread: float
    reference_s: float
    atol: float
    rtol: float
    seeds: str = Field(max_length=128)
    torch_version: str = Field(max_length=64)
    device: str = Field(max_length=64)
    measured_at: datetime
