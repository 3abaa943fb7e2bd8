"""The composition root from outside: `heteroplane serve` with the simulated fleet as its actuator, on
PostgreSQL, with API worker processes, reconciles and shows it through the API; an actuator it cannot
have is refused at start, naming the setting; a component that fails to start stops the others."""

import os
import socket
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlmodel import Session

from controlplane.auth import mint_token
from controlplane.composition import StartupError, build
from controlplane.db import make_engine, upgrade
from controlplane.models import (
    Fragment,
    FragmentKind,
    FragmentProfile,
    Role,
    RuntimeTemplate,
    Sla,
    Tenant,
    Workload,
)
from controlplane.models._common import minute_of, utcnow
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from tests.conftest import fresh_postgres_database
from tests.controlplane.test_workers import free_port
from tests.k8s.apiserver_double import ApiServerDouble
from tests.support import wait_until


def wait_for(condition, polls_of_200_ms: int, what: str):
    """wait_until at 0.2 s between polls: `polls_of_200_ms` / 5 is roughly the seconds it waits."""
    return wait_until(condition, what, polls=polls_of_200_ms * 5, interval=0.2)


@pytest.fixture
def serve_env():
    with fresh_postgres_database() as url:
        upgrade(url)
        engine = make_engine(url)
        with Session(engine) as session:
            _, token = mint_token(session, "test", Role.viewer)
            session.commit()
        engine.dispose()
        port = free_port()
        env = {**os.environ, "HETEROPLANE_DATABASE_URL": url, "HETEROPLANE_API_PORT": str(port),
               "HETEROPLANE_OTLP_PORT": str(free_port()), "HETEROPLANE_SIM_METRICS_PORT": str(free_port()),
               "HETEROPLANE_API_WORKERS": "2", "HETEROPLANE_API_CONCURRENCY": "4",
               "HETEROPLANE_RECONCILE_PERIOD_S": "1", "HETEROPLANE_SIM_SPEEDUP": "60",
               "HETEROPLANE_LOG_LEVEL": "WARNING"}
        yield env, f"http://127.0.0.1:{port}/api/v1", {"Authorization": f"Bearer {token}"}


def test_serve_with_the_simulated_fleet_reconciles_and_its_workers_report_it(serve_env):
    env, base, headers = serve_env
    server = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "serve"], env={**env, "HETEROPLANE_ACTUATOR": "sim"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def current() -> dict | None:
            try:
                answer = httpx.get(f"{base}/placements/current", headers=headers, timeout=5)
            except httpx.HTTPError:
                return None
            return answer.json() if answer.status_code == 200 else None

        placement = wait_for(current, 90, "a placement written by serve's reconciler")
        assert placement["version"] >= 1 and placement["items"]
        # The reconciler runs in the main process; a worker's /health shows its state from there.
        health = httpx.get(f"{base}/health", headers=headers, timeout=5).json()
        assert health["components"]["reconciler"] == "ok", health
        # And its metrics: the cycles it ran and that it leads, through a worker's /metrics.
        scrape = httpx.get(base.removesuffix("/api/v1") + "/metrics", headers=headers, timeout=5).text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(scrape) for s in family.samples}
        assert samples[("heteroplane_leader", ())] == 1
        cycles = sum(v for (name, labels), v in samples.items() if name == "heteroplane_reconcile_cycles_total"
                     and ("outcome", "ok") in labels)
        assert cycles >= 1
    finally:
        server.terminate()
        server.wait(30)


def test_serve_refuses_an_actuator_it_cannot_have(serve_env, tmp_path):
    env, _, _ = serve_env
    clusterless = {**env, "HETEROPLANE_ACTUATOR": "kubernetes", "KUBECONFIG": str(tmp_path / "absent")}
    clusterless.pop("KUBERNETES_SERVICE_HOST", None)
    done = subprocess.run([sys.executable, "-m", "controlplane.cli", "serve"], env=clusterless,
                          capture_output=True, text=True, timeout=120)
    said = " ".join(done.stdout.split())
    assert done.returncode == 2 and "HETEROPLANE_ACTUATOR=kubernetes needs a cluster" in said, said
    bad = subprocess.run([sys.executable, "-m", "controlplane.cli", "serve"], env={**env, "HETEROPLANE_ACTUATOR": "k8s"},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "actuator" in (bad.stdout + bad.stderr)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn's failed bind
def test_a_component_that_fails_to_start_stops_those_started_before_it(tmp_path):
    busy = free_port()
    settings = Settings(data_dir=tmp_path, api_workers=1, api_port=free_port(), otlp_port=busy)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", busy))
        taken.listen()
        plane = build(settings)
        with pytest.raises(StartupError, match="otlp failed to start"):
            plane.start()
    assert not plane.stoppers  # everything that started was stopped
    assert plane.ingest._thread is None  # its writer thread stopped
    with pytest.raises(httpx.HTTPError):  # the API server that had started is gone again
        httpx.get(f"http://127.0.0.1:{settings.api_port}/api/v1/ready", timeout=2)


def test_of_two_serves_on_one_database_one_reconciles_and_the_other_takes_over_when_it_is_killed(serve_env):
    """Two `serve` replicas on one PostgreSQL, each with its own simulated fleet: one leads (writes
    placements), the other stands by; SIGKILL the leader and the other leads, and across both no
    placement version is written twice or skipped."""
    env, _, headers = serve_env
    url = env["HETEROPLANE_DATABASE_URL"]
    replicas = []
    for _ in range(2):
        port = free_port()
        replica_env = {**env, "HETEROPLANE_ACTUATOR": "sim", "HETEROPLANE_API_WORKERS": "1",
                       "HETEROPLANE_API_PORT": str(port), "HETEROPLANE_OTLP_PORT": str(free_port()),
                       "HETEROPLANE_SIM_METRICS_PORT": str(free_port()), "HETEROPLANE_LEADER_PERIOD_S": "1"}
        process = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "serve"], env=replica_env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        replicas.append((process, f"http://127.0.0.1:{port}/api/v1/health"))
    try:
        def states() -> list[str] | None:
            try:
                return [httpx.get(health, headers=headers, timeout=5).json()["components"].get("reconciler", "")
                        for _, health in replicas]
            except httpx.HTTPError:
                return None

        settled = wait_for(lambda: (s := states()) and sorted(x[:7] for x in s) == ["ok", "standby"] and s, 90,
                           "one replica leading, the other standing by")
        leader, follower = (0, 1) if settled[0] == "ok" else (1, 0)
        wait_for(lambda: versions(url), 90, "a placement written by the leader")
        replicas[leader][0].kill()
        replicas[leader][0].wait(10)
        written = len(versions(url))

        def follower_writes() -> bool:
            try:
                state = httpx.get(replicas[follower][1], headers=headers, timeout=5).json()["components"]["reconciler"]
            except httpx.HTTPError:
                return False
            return state == "ok" and len(versions(url)) > written

        wait_for(follower_writes, 90, "the follower leading and writing placements")
    finally:
        for process, _ in replicas:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
    all_versions = versions(url)
    assert all_versions == list(range(1, len(all_versions) + 1))
    engine = make_engine(url)
    with Session(engine) as session:
        recorded = session.exec(text("SELECT count(*) FROM audit_event WHERE action = 'placement.record'")).one()[0]
    engine.dispose()
    assert recorded == len(all_versions)  # each version recorded once


def versions(url: str) -> list[int]:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return [row[0] for row in session.exec(text("SELECT version FROM placement ORDER BY version")).all()]
    finally:
        engine.dispose()


def test_serve_drives_a_cluster_through_kubeconfig(serve_env, tmp_path):
    """serve with the Kubernetes actuator, configured by a KUBECONFIG that points at the API server
    double (tests/k8s): its reconciler reads the cluster's nodes into the fleet inventory."""
    env, base, headers = serve_env
    double = ApiServerDouble().start()
    try:
        double.add_node("gpu-a", labels={"nvidia.com/gpu.product": "NVIDIA-L40S"}, allocatable={"nvidia.com/gpu": "4"})
        double.add_node("gpu-b", labels={"heteroplane.io/device-class": "H100-SXM"}, allocatable={"nvidia.com/gpu": "8"})
        cluster_env = driving(double, env, tmp_path)
        server = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "serve"], env=cluster_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def nodes() -> dict[str, str] | None:
                try:
                    answer = httpx.get(f"{base}/nodes", headers=headers, timeout=5)
                except httpx.HTTPError:
                    return None
                found = {n["name"]: n for n in answer.json()["items"]} if answer.status_code == 200 else {}
                return found if {"gpu-a", "gpu-b"} <= set(found) else None

            found = wait_for(nodes, 90, "the cluster's nodes in heteroplane's inventory")
            assert any(r.resource == "nodes" and r.verb == "list" for r in double.requests)
            assert {name: found[name]["device_count"] for name in ("gpu-a", "gpu-b")} == {"gpu-a": 4, "gpu-b": 8}
        finally:
            server.terminate()
            server.wait(30)
    finally:
        double.close()


def test_serve_places_a_workload_on_the_cluster_make_before_break(serve_env, tmp_path):
    """End to end through a kubeconfig to the API server double: a workload with observed demand and
    a runtime template; serve's reconciler plans it, writes its Deployments (the placement stays
    applying while they come up: the double runs no pods until told), and once they are ready (seen
    through its watch) the placement is in force."""
    env, base, headers = serve_env
    url = env["HETEROPLANE_DATABASE_URL"]
    seed_demand(url)
    double = ApiServerDouble().start()
    try:
        double.add_node("l40s-0", labels={"nvidia.com/gpu.product": "NVIDIA-L40S"}, allocatable={"nvidia.com/gpu": "8"})
        double.add_node("cpu-0", labels={"heteroplane.io/device-class": "CPU-EPYC-64C"}, allocatable={"cpu": "128"})
        cluster_env = {**driving(double, env, tmp_path), "HETEROPLANE_KUBERNETES_NAMESPACE": "ml"}
        server = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "serve"], env=cluster_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def deployments() -> list[dict] | None:
                found = [d for d in (double.get("deployments", name, "ml") for name in written_names(double))
                         if d is not None]
                keys = {d["metadata"]["annotations"]["heteroplane.io/fragment-key"] for d in found}
                return found if keys == {"llm:llama-3.1-8b-instruct", "tool:search"} else None

            written = wait_for(deployments, 120, "Deployments of both fragments written in the cluster")
            placement = httpx.get(f"{base}/placements", headers=headers, timeout=5).json()["items"][0]
            assert placement["state"] == "applying"  # its replicas are not ready: make before break
            images = {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in written}
            assert "vllm/vllm-openai:v0.11.0" in images and "search:1" in images
            double.auto_rollout(0)
            double.rollout(namespace="ml")

            def in_force() -> dict | None:
                answer = httpx.get(f"{base}/placements/current", headers=headers, timeout=5)
                return answer.json() if answer.status_code == 200 else None

            current = wait_for(in_force, 120, "the placement in force once its replicas are ready")
            wanted = {(i["fragment_key"], i["replicas"]) for i in current["items"]}
            running = {(d["metadata"]["annotations"]["heteroplane.io/fragment-key"], d["spec"]["replicas"])
                       for d in (double.get("deployments", n, "ml") for n in written_names(double)) if d}
            assert running == wanted
            # serve watches the Deployments it manages (controlplane/actuators/kubernetes_watch.py)
            assert any(r.resource == "deployments" and r.verb == "watch" for r in double.requests)
        finally:
            server.terminate()
            server.wait(30)
    finally:
        double.close()


def driving(double: ApiServerDouble, env: dict[str, str], tmp_path) -> dict[str, str]:
    """serve's environment for the Kubernetes actuator on `double`, through a kubeconfig file."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "double",
        "clusters": [{"name": "double", "cluster": {"server": double.url}}],
        "users": [{"name": "test", "user": {"token": double.token}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "test"}}],
    }))
    cluster_env = {**env, "HETEROPLANE_ACTUATOR": "kubernetes", "KUBECONFIG": str(kubeconfig),
                   "HETEROPLANE_API_WORKERS": "1"}
    cluster_env.pop("KUBERNETES_SERVICE_HOST", None)
    return cluster_env


def written_names(double: ApiServerDouble) -> set[str]:
    """Names of the Deployments clients applied to the double (from its request log)."""
    return {r.path.rsplit("/", 1)[-1] for r in double.requests
            if r.method == "PATCH" and r.resource == "deployments" and not r.path.endswith("/status")}


def seed_demand(url: str) -> None:
    """A workload whose LLM and tool fragments were seen for ten minutes, with an SLA and a runtime
    template for the tool (the LLM gets vLLM's default)."""
    engine = make_engine(url)
    now = minute_of(utcnow())
    with Session(engine) as session:
        seed_catalog(session)
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        workload = Workload(name="rag", tenant_id=tenant.id)
        session.add(workload)
        session.flush()
        session.add(Sla(workload_id=workload.id, p99_ms=20_000))
        llm = Fragment(workload_id=workload.id, key="llm:llama-3.1-8b-instruct", kind=FragmentKind.llm,
                       name="llama-3.1-8b-instruct", model="llama-3.1-8b-instruct", first_seen=now - timedelta(minutes=10))
        tool = Fragment(workload_id=workload.id, key="tool:search", kind=FragmentKind.tool, name="search",
                        first_seen=now - timedelta(minutes=10))
        session.add_all([llm, tool])
        session.flush()
        session.add(RuntimeTemplate(workload_id=workload.id, fragment_id=tool.id, image="search:1"))
        for fragment, tokens in ((llm, (500, 100)), (tool, (0, 0))):
            for k in range(10):
                session.add(FragmentProfile(fragment_id=fragment.id, minute=now - timedelta(minutes=k), visits=300,
                                            latency_ms_sum=300 * 50.0, tokens_in=300 * tokens[0],
                                            tokens_out=300 * tokens[1]))
        session.commit()
    engine.dispose()
