"""A seeded SQLite database and a small app that mounts only the console, shared by the console tests.

The seed, at NOW = 12:30:20 (window 12:00 … 12:29, the minute in progress left out; recent minutes 12:25 … 12:29):

device classes  h100 $4.00/h, 1 slice per device, 80 GiB · l4 $0.80/h, 4 slices per device · cpu $0.20/h (no nodes)
nodes           gpu-a h100 ×8 healthy, device 0 unhealthy (XID 79) · gpu-b h100 ×8 unhealthy · l4-a l4 ×4 healthy
tenants         acme (workload support-bot: llm:llama-70b → embedding:bge, 4096 bytes per call)
                globex (research-agent: llm:qwen-32b)
placements      v1 at 11:50:20 applied: llama h100×1, qwen h100×1
                v2 at 12:20:20 applied: llama h100×2, bge l4×1 (2 slices), qwen h100×1          $12.40/h
                v3 at 12:25:20 proposed (base v2): llama h100×2, bge l4×2 (2 slices), qwen h100×3  $20.80/h
                  migrations awaiting approval: bge +1 on l4, qwen +2 on h100, each with its workload's reason
policies        fleet-careful (fleet, approval required) · acme-slow (tenant acme) · globex-research (research-agent)
usage           12:29 llama h100 alloc 120 busy 60 tokens 200k $0.40   (acme)
                12:29 bge   l4   alloc  30 busy 15 tokens  50k $0.10   (acme)
                12:29 qwen  h100 alloc  60 busy 45 tokens 100k $0.20   (globex)
                12:25 llama h100 alloc  60 busy 30 tokens  40k $0.20   (acme)
                12:30 llama h100 alloc  60 busy 60 tokens  50k $0.10   (acme, the minute in progress: never counted)
idle            12:29 h100 360 device-seconds $0.40 · l4 225 $0.05
                11:59 llama h100 $5.00                                  (before the window: never counted)
requests        support-bot 12:29 100 (95 within SLA), 12:28 50 (50), 11:59 10 (0, before the window)
                research-agent 12:29 200 (150)
profiles        llama on h100 at 12:29: 100 visits at 900 ms, 5 at 2500 ms; TTFT 150 ms · qwen on h100: 200 at 1700 ms
telemetry       gpu-a devices at 12:29: utilisation 10 % × index, 40960 MiB used, 100 W + 50 W × index; l4-a device 0: 50 %, 8192 MiB
tokens          admin (fleet) · operator (fleet) · acme viewer · acme operator · globex viewer · a revoked and an expired admin
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import select

from collectors.records import Series
from collectors.sketch import latency_bucket
from controlplane.composition import service_app
from controlplane.db import session_scope
from controlplane.inventory import sync_devices
from controlplane.models import (
    ApiToken,
    Device,
    DeviceClass,
    DeviceTelemetry,
    Edge,
    Fragment,
    FragmentKind,
    FragmentProfile,
    IdleRecord,
    Migration,
    MigrationPolicy,
    MigrationState,
    Node,
    Placement,
    PlacementChoice,
    PlacementItem,
    PlacementState,
    ProfileBucket,
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
    research_id: int
    operator_token: str = "hp_operator_secret"
    acme_operator_token: str = "hp_acme_operator_secret"
    globex_token: str = "hp_globex_viewer_secret"


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
        gpu_b = Node(name="gpu-b", device_class_id=h100.id, device_count=8, ready=False, healthy=False)
        l4_a = Node(name="l4-a", device_class_id=l4.id, device_count=4)
        bot = Workload(name="support-bot", tenant_id=acme.id)
        research = Workload(name="research-agent", tenant_id=globex.id)
        s.add_all([gpu_a, gpu_b, l4_a, bot, research])
        s.flush()
        for node in (gpu_a, gpu_b, l4_a):
            sync_devices(s, node)
        s.flush()
        broken = s.exec(select(Device).where(Device.node_id == gpu_a.id, Device.index == 0)).one()
        broken.xid_errors = 79
        broken.refresh_health()
        llama = Fragment(workload_id=bot.id, key="llm:llama-70b", kind=FragmentKind.llm, name="chat", model="llama-70b")
        bge = Fragment(workload_id=bot.id, key="embedding:bge", kind=FragmentKind.embedding, name="embed", model="bge")
        qwen = Fragment(workload_id=research.id, key="llm:qwen-32b", kind=FragmentKind.llm, name="chat", model="qwen-32b")
        applied = PlacementState.applied
        v1 = Placement(version=1, state=applied, created_at=NOW - timedelta(minutes=40),
                       applied_at=NOW - timedelta(minutes=40), usd_per_hour=8.0)
        v2 = Placement(version=2, state=applied, created_at=NOW - timedelta(minutes=10),
                       applied_at=NOW - timedelta(minutes=10), usd_per_hour=12.4)
        # A newer plan that never ran (dry run / awaiting approval): the console must not show it as current.
        v3 = Placement(version=3, state=PlacementState.proposed, created_at=NOW - timedelta(minutes=5), usd_per_hour=20.8,
                       base_version=2, reason="cheaper by 0% but demand grew: support-bot and research-agent need more replicas")
        s.add_all([llama, bge, qwen, v1, v2, v3,
                   Sla(workload_id=bot.id, p99_ms=2000, ttft_ms=200, attainment_target=0.99)])
        s.flush()
        s.add_all(
            [
                PlacementItem(placement_id=v1.id, fragment_id=llama.id, device_class_id=h100.id, replicas=1),
                PlacementItem(placement_id=v1.id, fragment_id=qwen.id, device_class_id=h100.id, replicas=1),
                PlacementItem(placement_id=v2.id, fragment_id=llama.id, device_class_id=h100.id, replicas=2),
                PlacementItem(placement_id=v2.id, fragment_id=bge.id, device_class_id=l4.id, replicas=1, slices=2),
                PlacementItem(placement_id=v2.id, fragment_id=qwen.id, device_class_id=h100.id, replicas=1),
                PlacementItem(placement_id=v3.id, fragment_id=llama.id, device_class_id=h100.id, replicas=2),
                PlacementItem(placement_id=v3.id, fragment_id=bge.id, device_class_id=l4.id, replicas=2, slices=2),
                PlacementItem(placement_id=v3.id, fragment_id=qwen.id, device_class_id=h100.id, replicas=3),
                PlacementChoice(placement_id=v2.id, fragment_id=llama.id, binding="latency bound of workload support-bot",
                                runner_up="l4", runner_up_delta_usd_per_hour=-1.6),
                PlacementChoice(placement_id=v2.id, fragment_id=qwen.id, binding="cheapest per throughput",
                                runner_up="l4", runner_up_delta_usd_per_hour=2.25),
                Migration(placement_id=v3.id, fragment_id=bge.id, to_device_class_id=l4.id, replicas=1,
                          state=MigrationState.awaiting_approval, reason="support-bot: demand 12 rps exceeds 9 rps served"),
                Migration(placement_id=v3.id, fragment_id=qwen.id, to_device_class_id=h100.id, replicas=2,
                          state=MigrationState.awaiting_approval, reason="research-agent: demand 31 rps exceeds 11 rps served"),
                MigrationPolicy(name="fleet-careful", approval_required=True, cooldown_s=600),
                MigrationPolicy(name="acme-slow", tenant_id=acme.id, min_improvement_pct=17.5),
                MigrationPolicy(name="globex-research", tenant_id=globex.id, workload_id=research.id, max_moves_per_cycle=3,
                                maintenance_windows=["Sat 02:00-04:00 UTC"]),
                Edge(workload_id=bot.id, parent_id=llama.id, child_id=bge.id, calls=100, bytes_total=409_600),
            ]
        )

        def profile(fragment, cls, minute, latencies: dict[float, int], ttft: dict[float, int] | None = None):
            visits = sum(latencies.values())
            rows = [FragmentProfile(fragment_id=fragment.id, device_class=cls, minute=minute, visits=visits,
                                    latency_ms_sum=sum(ms * n for ms, n in latencies.items()))]
            for series, values in ((Series.latency_ms, latencies), (Series.ttft_ms, ttft or {})):
                rows += [ProfileBucket(fragment_id=fragment.id, device_class=cls, minute=minute, series=series,
                                       bucket=latency_bucket(ms), count=n) for ms, n in values.items()]
            return rows

        s.add_all(profile(llama, "h100", _minute(12, 29), {900.0: 100, 2500.0: 5}, ttft={150.0: 105}))
        s.add_all(profile(qwen, "h100", _minute(12, 29), {1700.0: 200}))
        s.add_all(
            [DeviceTelemetry(minute=_minute(12, 29), hostname="gpu-a", index=i, utilisation=i / 10, memory_used_mib=40960,
                             xid=79 if i == 0 else 0, power_w=100.0 + 50 * i) for i in range(8)]
            + [DeviceTelemetry(minute=_minute(12, 29), hostname="l4-a", index=0, utilisation=0.5, memory_used_mib=8192)]
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
                IdleRecord(minute=_minute(12, 29), device_class_id=h100.id, device_seconds_healthy=720,
                           device_seconds_allocated=180, device_seconds_idle=360, cost_usd=0.40),
                IdleRecord(minute=_minute(12, 29), device_class_id=l4.id, device_seconds_healthy=240,
                           device_seconds_allocated=30, device_seconds_idle=225, cost_usd=0.05),
                RequestStat(workload_id=bot.id, minute=_minute(12, 29), requests=100, within_sla=95),
                RequestStat(workload_id=bot.id, minute=_minute(12, 28), requests=50, within_sla=50),
                RequestStat(workload_id=bot.id, minute=_minute(11, 59), requests=10, within_sla=0),
                RequestStat(workload_id=research.id, minute=_minute(12, 29), requests=200, within_sla=150),
                _token(admin, "ops-admin", Role.admin),
                _token(acme_viewer, "acme-viewer", Role.viewer, acme.id),
                _token("hp_operator_secret", "ops-operator", Role.operator),
                _token("hp_acme_operator_secret", "acme-operator", Role.operator, acme.id),
                _token("hp_globex_viewer_secret", "globex-viewer", Role.viewer, globex.id),
                _token(revoked, "old", Role.admin, revoked_at=NOW - timedelta(days=1)),
                _token(expired, "temp", Role.admin, expires_at=NOW - timedelta(minutes=1)),
            ]
        )
        return Seed(
            admin_token=admin, acme_token=acme_viewer, revoked_token=revoked, expired_token=expired, acme_id=acme.id, globex_id=globex.id, placement_v2_id=v2.id, bge_id=bge.id, h100_id=h100.id,
            l4_id=l4.id, bot_id=bot.id, research_id=research.id,
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


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_in(html: str) -> str:
    """The CSRF token a page's forms carry."""
    match = CSRF_FIELD.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def sign_in(client: TestClient, token: str) -> TestClient:
    """Sign `client` in through the form, as a browser does."""
    form = client.get("/ui/login").text
    response = client.post("/ui/login", data={"token": token, "csrf_token": csrf_in(form)}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client
