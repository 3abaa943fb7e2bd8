"""Runtime templates: what a replica of a workload's fragments runs (image, command, env, ports,
resources, model), as an operator sets it through the API. A workload's template applies to each
of its fragments that has none of its own; `controlplane.containers` resolves them, with a vLLM
default for LLM fragments, into the `Container` a `ReplicaSet` carries."""

from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints, WithJsonSchema, field_validator
from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel
from sqlmodel._compat import SQLModelConfig

from controlplane.models._common import Input, utcnow

IMAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$"
ENV_NAME_PATTERN = r"^(?!HETEROPLANE_)[A-Za-z_][A-Za-z0-9_]*$"  # HETEROPLANE_* are heteroplane's own
SECRET_REF_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+$"
RESERVED_ENV_PREFIX = "HETEROPLANE_"

Word = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
EnvName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ENV_NAME_PATTERN)]
EnvValue = Annotated[str, StringConstraints(max_length=4096)]
SecretRef = Annotated[str, StringConstraints(min_length=3, max_length=317, pattern=SECRET_REF_PATTERN)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _names_to(value: dict) -> dict:
    """The JSON Schema of a map from environment variable names to `value` (pydantic's own says the
    names' pattern as patternProperties, which lets any other name through)."""
    return {"type": "object", "maxProperties": 128, "additionalProperties": value,
            "propertyNames": {"minLength": 1, "maxLength": 128, "pattern": ENV_NAME_PATTERN}}


class RuntimeTemplateBase(Input):
    model_config = SQLModelConfig(allow_inf_nan=False, regex_engine="python-re")  # ENV_NAME_PATTERN looks ahead
    image: str = Field(min_length=1, max_length=512, schema_extra={"pattern": IMAGE_PATTERN},
                       description="Container image, e.g. `vllm/vllm-openai:v0.11.0` or `registry/app@sha256:…`.")
    command: list[Word] = Field(default_factory=list, max_length=32, sa_column=Column(JSON, nullable=False),
                                description="Entrypoint; empty keeps the image's.")
    args: list[Word] = Field(default_factory=list, max_length=128, sa_column=Column(JSON, nullable=False),
                             description="Arguments; empty keeps the image's.")
    env: Annotated[dict[EnvName, EnvValue], WithJsonSchema(_names_to({"type": "string", "maxLength": 4096}))] = Field(
        default_factory=dict, max_length=128, sa_column=Column(JSON, nullable=False),
        description="Environment variables by name. Not for secrets: every reader of the workload sees "
                    "them; use `secret_env`. Names starting HETEROPLANE_ are heteroplane's own.")
    secret_env: Annotated[dict[EnvName, SecretRef], WithJsonSchema(_names_to(
        {"type": "string", "minLength": 3, "maxLength": 317, "pattern": SECRET_REF_PATTERN}))] = Field(
        default_factory=dict, max_length=128, sa_column=Column(JSON, nullable=False),
        description="Environment variables from Kubernetes Secrets: name → `secret-name/key`. Only the "
                    "reference is stored; the value never passes through heteroplane.")
    ports: Annotated[list[Port], WithJsonSchema({"type": "array", "items": {"type": "integer", "minimum": 1,
                                                  "maximum": 65535}, "maxItems": 16, "uniqueItems": True})] = Field(
        default_factory=list, max_length=16, sa_column=Column(JSON, nullable=False), description="Container ports the replica listens on (distinct).")
    cpu_millicores: int | None = Field(None, ge=1, le=1_000_000, description="CPU requested per replica.")
    memory_mib: int | None = Field(None, ge=1, le=16_777_216, description="Memory requested per replica, MiB.")
    model: str | None = Field(None, min_length=1, max_length=200,
                              description="The model the replica serves, where the fragment's own name is not "
                                          "the one to load (e.g. a local path or a quantised variant).")

    @field_validator("env", "secret_env", mode="before")
    @classmethod
    def _not_reserved(cls, value: object) -> object:
        """Said before the names' pattern is checked, so the refusal says why."""
        if not isinstance(value, dict):
            return value
        reserved = sorted(name for name in value if isinstance(name, str) and name.startswith(RESERVED_ENV_PREFIX))
        if reserved:
            raise ValueError(f"{reserved[0]} is heteroplane's own: names starting {RESERVED_ENV_PREFIX} are set by it")
        return value

    @field_validator("ports")
    @classmethod
    def _distinct_ports(cls, value: list[int]) -> list[int]:  # documented as uniqueItems
        if len(set(value)) != len(value):
            raise ValueError("each port may be listed once")
        return value


class RuntimeTemplate(RuntimeTemplateBase, table=True):
    """One workload's template (fragment_id null) or one fragment's, which replaces the workload's."""

    __tablename__ = "runtime_template"
    __table_args__ = (
        UniqueConstraint("workload_id", "fragment_id", name="uq_runtime_template_fragment"),
        Index("uq_runtime_template_workload", "workload_id", unique=True,
              sqlite_where=sql_text("fragment_id IS NULL"), postgresql_where=sql_text("fragment_id IS NULL")),
    )
    id: int | None = Field(default=None, primary_key=True)
    workload_id: int = Field(foreign_key="workload.id", index=True, ondelete="CASCADE")
    fragment_id: int | None = Field(default=None, foreign_key="fragment.id", ondelete="CASCADE")
    updated_at: datetime = Field(default_factory=utcnow)


class RuntimeTemplateIn(RuntimeTemplateBase):
    """A template as a client sets it (PUT replaces the whole of it)."""


class RuntimeTemplatePublic(RuntimeTemplateBase):
    id: int
    workload_id: int
    fragment_id: int | None
    updated_at: datetime


class ContainerPublic(SQLModel):
    """What one fragment's replicas run, resolved: its own template, else its workload's, else the
    built-in default for its kind (vLLM for LLM fragments), else nothing (`source` 'none')."""

    fragment_id: int
    fragment_key: str
    source: str = Field(description="'fragment', 'workload', 'default' or 'none' (no template applies: "
                                    "the Kubernetes actuator cannot run this fragment until one is set).")
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, str] = Field(default_factory=dict)
    ports: list[int] = Field(default_factory=list)
    cpu_millicores: int | None = None
    memory_mib: int | None = None
    model: str | None = None
