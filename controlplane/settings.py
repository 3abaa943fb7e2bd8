"""Every setting heteroplane reads, in one place (environment prefix HETEROPLANE_)."""

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of one heteroplane process; see the README's table."""

    model_config = SettingsConfigDict(env_prefix="HETEROPLANE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Where the embedded SQLite database and other local state live.")
    database_url: str = Field(
        "",
        description="SQLAlchemy URL; empty means a SQLite file in data_dir. PostgreSQL: postgresql+psycopg://user@host/db",
    )
    api_host: str = Field("127.0.0.1", description="Interface the REST API and console listen on.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port of the REST API and console.")
    api_concurrency: int = Field(
        16, ge=1, le=256,
        description="Requests one process serves at once: its worker threads, and (plus its loops') its database "
                    "connections; up to 4x as many more wait, and beyond that it answers 503 with Retry-After.")
    api_workers: int = Field(
        default_factory=lambda: max(1, min(os.cpu_count() or 1, 3)), ge=1, le=16,
        description="Processes serving the REST API and console on api_port (default: the CPUs, at most 3); 1 "
                    "serves it from the main process. Each has api_concurrency threads and as many database "
                    "connections plus one; `serve` refuses to start when PostgreSQL allows fewer than all need.")
    actuator: Literal["none", "sim", "kubernetes"] = Field(
        "none",
        description="What `serve` drives: 'none' observes and plans nothing; 'sim' the simulated fleet; "
                    "'kubernetes' a cluster (in-cluster config or KUBECONFIG). `demo` always uses 'sim'.")
    kubernetes_namespace: str = Field(
        "heteroplane-workloads", min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Kubernetes actuator: the namespace of the workloads' Deployments and claim templates.")
    kubernetes_ready_timeout_s: float = Field(
        600.0, gt=0,
        description="Kubernetes actuator: how long a placement's new replicas may take to be ready before its "
                    "migration fails (the previous replicas keep serving throughout).")
    otlp_host: str = Field("127.0.0.1", description="Interface the OTLP/HTTP receiver listens on.")
    otlp_port: int = Field(4318, ge=1, le=65535, description="Port of the OTLP/HTTP receiver.")
    otlp_max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, description="Largest decompressed OTLP body accepted.")
    max_fragments_per_workload: int = Field(
        500, ge=1, le=100_000,
        description="Fragments one workload may hold; names past it fold into one overflow fragment per kind "
                    "('<kind>:~overflow'), counted in the workload's fragments_folded and in /health.")
    reconcile_period_s: float = Field(10.0, gt=0, description="Seconds between reconciler cycles.")
    solver_time_limit_s: float = Field(5.0, gt=0, description="CP-SAT time limit per solve.")
    demand_headroom: float = Field(1.2, ge=1.0, description="Capacity planned per unit of observed demand.")
    migration_cost_usd: float = Field(
        0.05, ge=0, description="$/hour the optimizer charges per replica moved (a move's one-off cost, amortised)."
    )
    rollback_after_minutes: int = Field(
        3, ge=0, le=60,
        description="Automatic rollback: a migration is undone when its workload met its SLA target in this many "
        "minutes before it and missed it in every one of this many minutes after it; 0 turns it off.",
    )
    sim_metrics_port: int = Field(9400, ge=1, le=65535, description="Port of the simulated fleet's Prometheus /metrics.")
    sim_speedup: float = Field(1.0, gt=0, description="Simulated fleet: trace seconds replayed per wall second.")
    sim_seed: int = Field(7, description="Simulated fleet: random seed.")
    prometheus_url: str = Field("", description="Prometheus to pull DCGM and vLLM metrics from; empty turns the puller off.")
    prometheus_interval_s: float = Field(15.0, gt=0, description="Seconds between Prometheus pulls.")
    prometheus_window: str = Field(
        "1m", pattern=r"^([0-9]+(ms|s|m|h|d|w|y))+$", description="PromQL range of the latency histograms' rate()."
    )
    forecast_enabled: bool = Field(True, description="Plan each workload's demand at a forecast's upper quantile.")
    forecast_horizon_s: float = Field(
        300.0, ge=0, description="Seconds a migration takes to settle: the forecast covers now to now + this."
    )
    forecast_quantile: float = Field(0.9, ge=0.5, lt=1.0, description="Upper quantile of the forecast rate planned for.")
    forecast_periods_s: tuple[float, ...] = Field(
        (86_400.0, 604_800.0),
        description="Seasonal periods (seconds) the forecast fits once history covers two of them: daily, weekly.",
    )
    fast_path_period_s: float = Field(
        2.0, gt=0, description="Seconds between fast-path checks (queue depth, KV-cache use) inside a reconcile period."
    )
    fast_path_queue_per_replica: float = Field(
        4.0, gt=0, description="Fast path: requests waiting per replica of a model on a class that add a replica."
    )
    fast_path_kv_usage: float = Field(
        0.9, gt=0, le=1.0, description="Fast path: KV-cache use (0..1, vLLM kv_cache_usage_perc) that adds a replica."
    )
    metrics_public: bool = Field(
        False,
        description="Serve GET /metrics without a token (for a scraper inside the cluster); otherwise it needs a "
                    "fleet-wide token of any role, since its desired-replicas metric names every tenant's workloads.")
    leader_period_s: float = Field(
        5.0, gt=0,
        description="PostgreSQL: seconds between a replica's tries to become the reconciler's leader (an advisory "
                    "lock); a killed leader is replaced within about this long.")
    leader_idle_timeout_s: float = Field(
        120.0, ge=10,
        description="PostgreSQL: a leader that sends nothing on its lock connection this long (frozen, or stuck in "
                    "a cycle) loses the lock to another replica; must exceed the longest reconcile cycle.")
    log_level: str = Field("INFO", description="Python logging level.")

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("database_url must be a sqlite:/// or postgresql+psycopg:// URL")
        return value

    @field_validator("forecast_periods_s")
    @classmethod
    def _positive_periods(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(p <= 0 for p in value):
            raise ValueError("every forecast period must be > 0 seconds")
        return value

    @property
    def effective_database_url(self) -> str:
        """The URL actually used: the configured one, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'heteroplane.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
