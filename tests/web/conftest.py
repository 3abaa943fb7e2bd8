"""A seeded SQLite database and a small app that mounts only the console, shared by the console tests.

The seed, at NOW = 12:30:20 (window 12:01 … 12:30, recent minutes 12:25 … 12:29):

device classes  h100 $4.00/h, 1 slice per device · l4 $0.80/h, 4 slices per device · cpu $0.20/h (no nodes)
nodes           gpu-a h100 ×8 healthy, device 0 unhealthy · gpu-b h100 ×8 unhealthy · l4-a l4 ×4 healthy
tenants         acme (workload support-bot: llm:llama-70b, embedding:bge) · globex (research-agent: llm:qwen-32b)
placements      v1 at 11:50:20: llama h100×1, qwen h100×1
                v2 at 12:20:20: llama h100×2, bge l4×1 (2 slices), qwen h100×1
usage           12:29 llama h100 alloc 120 busy 60 tokens 200k $0.40   (acme)
                12:29 bge   l4   alloc  30 busy 15 tokens  50k $0.10   (acme)
                12:29 qwen  h100 alloc  60 busy 45 tokens 100k $0.20   (globex)
                12:25 llama h100 alloc  60 busy 30 tokens  40k $0.20   (acme)
                12:30 llama h100 alloc  60 busy 60 tokens  50k $0.10   (acme, the current minute)
                11:59 llama h100 $5.00                                  (before the window: never counted)
requests        support-bot 12:29 100 (95 within SLA), 12:28 50 (50), 12:00 10 (0, before the window)
                research-agent 12:29 200 (150)
"""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from controlplane.composition import service_app
from controlplane.db import session_scope
from controlplane.models import (
    ApiToken,
    Device,
    DeviceClass,
    Fragment,
    FragmentKind,
    Node,
    Placement,
    PlacementItem,
    PlacementState,
    RequestStat,
    Role,
    Sla,
    Tenant,
    UsageRecord,
    Workload,
)
from controlplane.ratelimit import FailureLimiter
from controlplane.settings import Settings
from web.console import create_console_router

NOW = datetime(2026, 5, 1, 12, 30, 20, tzinfo=UTC)


@dataclass(frozen=True)
class Seed:
    """Raw secrets of the seeded tokens, and ids tests need to add rows of their own."""

    admin_token: str
    acme_token: str
    revoked_token: str
    expired_token: str
    acme_id: int
    globex_id: int
    placement_v2_id: int
    bge_id: int
    h100_id: int
    l4_id: int
    bot_id: int


def _minute(hh: int, mm: int) -> datetime:
    return datetime(2026, 5, 1, hh, mm, tzinfo=UTC)


def _token(raw: str, name: str, role: Role, tenant_id: int | None = None, **extra) -> ApiToken:
    return ApiToken(
        name=name, prefix=raw[:10], token_hash=hashlib.sha256(raw.encode()).hexdigest(), role=role, tenant_id=tenant_id, **extra
    )


def seed(engine: Engine) -> Seed:
    admin, acme_viewer, revoked, expired = "hp_admin_secret", "hp_acme_viewer_secret", "hp_revoked_secret", "hp_expired_secret"
    with session_scope(engine) as s:
        h100 = DeviceClass(name="h100", vendor="nvidia", bf16_tflops=989, memory_gib=80, memory_gbps=3350, fabric="nvlink", usd_per_hour=4.0)
        l4 = DeviceClass(name="l4", vendor="nvidia", bf16_tflops=121, memory_gib=24, memory_gbps=300, fabric="pcie", usd_per_hour=0.8, slices_per_device=4)
        cpu = DeviceClass(name="cpu", vendor="intel", bf16_tflops=2, memory_gib=512, memory_gbps=300, fabric="ethernet", usd_per_hour=0.2)
        acme, globex = Tenant(name="acme"), Tenant(name="globex")
        s.add_all([h100, l4, cpu, acme, globex])
        s.flush()
        gpu_a = Node(name="gpu-a", device_class_id=h100.id, device_count=8)
        gpu_b = Node(name="gpu-b", device_class_id=h100.id, device_count=8, healthy=False)
        l4_a = Node(name="l4-a", device_class_id=l4.id, device_count=4)
        bot = Workload(name="support-bot", tenant_id=acme.id)
        research = Workload(name="research-agent", tenant_id=globex.id)
        s.add_all([gpu_a, gpu_b, l4_a, bot, research])
        s.flush()
        s.add(Device(node_id=gpu_a.id, index=0, healthy=False))
        llama = Fragment(workload_id=bot.id, key="llm:llama-70b", kind=FragmentKind.llm, name="chat", model="llama-70b")
        bge = Fragment(workload_id=bot.id, key="embedding:bge", kind=FragmentKind.embedding, name="embed", model="bge")
        qwen = Fragment(workload_id=research.id, key="llm:qwen-32b", kind=FragmentKind.llm, name="chat", model="qwen-32b")
        applied = PlacementState.applied
        v1 = Placement(version=1, state=applied, created_at=NOW - timedelta(minutes=40),
                       applied_at=NOW - timedelta(minutes=40), usd_per_hour=8.0)
        v2 = Placement(version=2, state=applied, created_at=NOW - timedelta(minutes=10),
                       applied_at=NOW - timedelta(minutes=10), usd_per_hour=12.4)
        # A newer plan that never ran (dry run / awaiting approval): the console must not show it as current.
        v3 = Placement(version=3, state=PlacementState.proposed, created_at=NOW - timedelta(minutes=5), usd_per_hour=99.0)
        s.add_all([llama, bge, qwen, v1, v2, v3, Sla(workload_id=bot.id, p99_ms=2000, attainment_target=0.99)])
        s.flush()
        s.add_all(
            [
                PlacementItem(placement_id=v1.id, fragment_id=llama.id, device_class_id=h100.id, replicas=1),
                PlacementItem(placement_id=v1.id, fragment_id=qwen.id, device_class_id=h100.id, replicas=1),
                PlacementItem(placement_id=v2.id, fragment_id=llama.id, device_class_id=h100.id, replicas=2),
                PlacementItem(placement_id=v2.id, fragment_id=bge.id, device_class_id=l4.id, replicas=1, slices=2),
                PlacementItem(placement_id=v2.id, fragment_id=qwen.id, device_class_id=h100.id, replicas=1),
                PlacementItem(placement_id=v3.id, fragment_id=qwen.id, device_class_id=h100.id, replicas=9),
            ]
        )

        def usage(minute, tenant, workload, fragment, dc, alloc, busy, tokens, cost):
            return UsageRecord(
                minute=minute, tenant_id=tenant.id, workload_id=workload.id, fragment_id=fragment.id, device_class_id=dc.id,
                device_seconds_allocated=alloc, device_seconds_busy=busy, tokens=tokens, cost_usd=cost,
            )

        s.add_all(
            [
                usage(_minute(12, 29), acme, bot, llama, h100, 120, 60, 200_000, 0.40),
                usage(_minute(12, 29), acme, bot, bge, l4, 30, 15, 50_000, 0.10),
                usage(_minute(12, 29), globex, research, qwen, h100, 60, 45, 100_000, 0.20),
                usage(_minute(12, 25), acme, bot, llama, h100, 60, 30, 40_000, 0.20),
                usage(_minute(12, 30), acme, bot, llama, h100, 60, 60, 50_000, 0.10),
                usage(_minute(11, 59), acme, bot, llama, h100, 60, 60, 1, 5.00),
                RequestStat(workload_id=bot.id, minute=_minute(12, 29), requests=100, within_sla=95),
                RequestStat(workload_id=bot.id, minute=_minute(12, 28), requests=50, within_sla=50),
                RequestStat(workload_id=bot.id, minute=_minute(12, 0), requests=10, within_sla=0),
                RequestStat(workload_id=research.id, minute=_minute(12, 29), requests=200, within_sla=150),
                _token(admin, "ops-admin", Role.admin),
                _token(acme_viewer, "acme-viewer", Role.viewer, acme.id),
                _token(revoked, "old", Role.admin, revoked_at=NOW - timedelta(days=1)),
                _token(expired, "temp", Role.admin, expires_at=NOW - timedelta(minutes=1)),
            ]
        )
        return Seed(
            admin_token=admin, acme_token=acme_viewer, revoked_token=revoked, expired_token=expired, acme_id=acme.id, globex_id=globex.id, placement_v2_id=v2.id, bge_id=bge.id, h100_id=h100.id,
            l4_id=l4.id, bot_id=bot.id,
        )


class Pinned:
    """A clock that stands still until a test moves it (`clock.value += step`)."""

    def __init__(self, value) -> None:
        self.value = value

    def __call__(self):
        return self.value


@pytest.fixture
def now() -> datetime:
    """The console's pinned clock."""
    return NOW


@pytest.fixture
def clock() -> Pinned:
    """The console's clock, at NOW until a test moves it."""
    return Pinned(NOW)


@pytest.fixture
def failures() -> FailureLimiter:
    """The console's failed sign-ins, on a monotonic clock pinned at 0 s (`failures.clock.value`)."""
    return FailureLimiter(clock=Pinned(0.0))


@pytest.fixture
def seeded(engine) -> Seed:
    return seed(engine)


@pytest.fixture
def console_app(engine, seeded, clock, failures) -> FastAPI:
    """The console alone, mounted as the main app mounts it, over the seeded database, its clock pinned at NOW."""
    app = FastAPI()
    app.include_router(create_console_router(engine, failures, clock=clock, poll_ms=1000))
    return app


@pytest.fixture
def client(console_app) -> TestClient:
    with TestClient(console_app) as client:
        yield client


@pytest.fixture
def full_client(engine, seeded) -> TestClient:
    """The whole app (API and console) over the seeded database, on the real clock, as `serve` runs it."""
    with TestClient(service_app(engine, Settings())) as client:
        yield client
