"""What ran: the actuator's reports of the replica sets running, the ground truth metering bills."""

from datetime import datetime

from sqlmodel import Field, SQLModel


class Observation(SQLModel, table=True):
    """What the actuator reported running at `observed_at`; recorded only when it differs from the
    observation before, so each one is in force until the next."""

    __tablename__ = "observation"
    id: int | None = Field(default=None, primary_key=True)
    observed_at: datetime = Field(index=True)
    version: int | None = Field(None, description="The placement version the actuator said it runs.")


class ObservationItem(SQLModel, table=True):
    """Replicas of one fragment running on one device class (and pool) in an observation."""

    __tablename__ = "observation_item"
    id: int | None = Field(default=None, primary_key=True)
    observation_id: int = Field(foreign_key="observation.id", index=True, ondelete="CASCADE")
    fragment_id: int = Field(foreign_key="fragment.id", index=True, ondelete="CASCADE")
    device_class_id: int = Field(foreign_key="device_class.id", ondelete="RESTRICT")
    phase: str = Field("", max_length=8)
    replicas: int = Field(ge=0)
    slices: int = Field(1, ge=1)
