"""The Kubernetes actuator through the official client against the API server test double
(tests/k8s/apiserver_double.py: a double of the API server's HTTP interface, not a cluster), and its
manifests against the Kubernetes 1.34 schemas (kubernetes-validate)."""

import re

import kubernetes_validate
import pytest
from kubernetes.client.exceptions import ApiException

from controlplane.actuators.base import DesiredPlacement, ReplicaSet
from controlplane.actuators.kubernetes import FIELD_MANAGER, KubernetesActuator, device_class_of
from controlplane.actuators.kubernetes_manifests import (
    VERSION_ANNOTATION,
    ClassShape,
    NoContainer,
    deployment_name,
    manifests,
)
from controlplane.containers import from_template, vllm
from controlplane.models.runtime_templates import RuntimeTemplateIn
from optimizer.types import Phase
from tests.k8s.conftest import apiserver_double, k8s_api_client  # noqa: F401 - fixtures

NS = "heteroplane-workloads"
SHAPES = {"H100-SXM": ClassShape("nvidia", 7), "L40S": ClassShape("nvidia", 1), "MI300X": ClassShape("amd", 1),
          "CPU-EPYC-64C": ClassShape("amd", 8, 64)}
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
TOOL = from_template(RuntimeTemplateIn(image="registry.example/search:2", ports=[8080],
                                       secret_env={"KEY": "search-keys/api"}, memory_mib=512), Phase.whole)


def llm(cls: str, replicas: int, slices: int = 7, phase: Phase = Phase.whole, tenant: str = "acme") -> ReplicaSet:
    return ReplicaSet(tenant, "rag", f"llm:{LLAMA}", cls, replicas, slices, phase, container=vllm(LLAMA, phase))


def tool(replicas: int = 1) -> ReplicaSet:
    return ReplicaSet("acme", "rag", "tool:search", "CPU-EPYC-64C", replicas, 1, container=TOOL)


def test_every_manifest_is_valid_kubernetes_1_34():
    desired = DesiredPlacement(3, (llm("H100-SXM", 2, 7, Phase.prefill), llm("H100-SXM", 3, 2, Phase.decode),
                                   llm("MI300X", 1, 1), tool()))
    objects = manifests(desired, SHAPES, NS)
    assert [o["kind"] for o in objects] == ["Deployment", "ResourceClaimTemplate", "Deployment", "Deployment",
                                            "Deployment"]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.34", strict=True)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", obj["metadata"]["name"]), obj["metadata"]["name"]
    whole, claim, split, amd, cpu = objects
    assert whole["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert claim["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] == 2  # 2 of 7 MIG slices
    assert split["spec"]["template"]["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] == \
        claim["metadata"]["name"]
    assert amd["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"amd.com/gpu": "1"}
    assert cpu["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "8"  # 64 / 8
    env = {e["name"]: e for e in cpu["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KEY"]["valueFrom"] == {"secretKeyRef": {"name": "search-keys", "key": "api"}}
    assert {o["metadata"]["annotations"][VERSION_ANNOTATION] for o in objects if o["kind"] == "Deployment"} == {"3"}


def test_names_differ_wherever_identities_do():
    """Two tenants' workloads of one name, the two pools of a split fragment: distinct objects."""
    sets = [llm("H100-SXM", 1, tenant="acme"), llm("H100-SXM", 1, tenant="globex"),
            llm("H100-SXM", 1, phase=Phase.prefill), llm("H100-SXM", 1, phase=Phase.decode), llm("L40S", 1, 1)]
    assert len({deployment_name(rs) for rs in sets}) == len(sets)


def test_a_fragment_without_a_container_is_named_not_guessed():
    bare = ReplicaSet("acme", "rag", "tool:search", "CPU-EPYC-64C", 1)
    with pytest.raises(NoContainer, match="acme/rag fragment 'tool:search'"):
        manifests(DesiredPlacement(1, (bare,)), SHAPES, NS)


def test_inventory_reads_device_classes_devices_and_readiness_from_nodes(apiserver_double, k8s_api_client):  # noqa: F811
    d = apiserver_double
    d.add_node("gpu-a", labels={"heteroplane.io/device-class": "L40S"}, allocatable={"nvidia.com/gpu": "4"})
    d.add_node("gpu-b", labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, allocatable={"nvidia.com/gpu": "8"})
    d.add_node("gpu-c", labels={"amd.com/gpu.product-name": "AMD_Instinct_MI300X"}, allocatable={"amd.com/gpu": "8"},
               ready=False)
    d.add_node("plain", allocatable={"cpu": "16"})  # no device class: not heteroplane's
    sick = d.get("nodes", "gpu-b")
    sick["status"]["allocatable"] = {**sick["status"]["allocatable"], "nvidia.com/gpu": "7"}  # one GPU withdrawn
    d.put(sick)
    nodes = {n.name: n for n in KubernetesActuator(k8s_api_client, NS, SHAPES).inventory()}
    assert set(nodes) == {"gpu-a", "gpu-b", "gpu-c"}
    assert (nodes["gpu-a"].device_class, nodes["gpu-a"].devices, nodes["gpu-a"].healthy_devices) == ("L40S", 4, 4)
    assert (nodes["gpu-b"].device_class, nodes["gpu-b"].devices, nodes["gpu-b"].healthy_devices) == ("H100-SXM", 8, 7)
    assert nodes["gpu-c"].device_class == "MI300X" and not nodes["gpu-c"].ready and nodes["gpu-a"].ready


def test_inventory_counts_the_gpus_a_dra_driver_publishes(apiserver_double, k8s_api_client):  # noqa: F811
    d = apiserver_double
    d.add_node("dra-0", labels={"heteroplane.io/device-class": "H100-SXM"})  # no nvidia.com/gpu resource
    gpus = [{"name": f"gpu-{i}", "attributes": {"type": "gpu", "productName": "NVIDIA H100 80GB HBM3"}}
            for i in range(4)]
    migs = [{"name": f"gpu-0-mig-1g-{i}", "attributes": {"type": "mig"}} for i in range(7)]
    d.add_resource_slice("dra-0-gpus", driver="gpu.nvidia.com", pool="dra-0", node_name="dra-0", devices=gpus + migs)
    d.add_resource_slice("dra-0-nics", driver="rdma.example.com", pool="dra-0", node_name="dra-0",
                         devices=[{"name": "nic-0"}])
    (node,) = KubernetesActuator(k8s_api_client, NS, SHAPES).inventory()
    assert (node.name, node.device_class, node.devices, node.healthy_devices) == ("dra-0", "H100-SXM", 4, 4)


def test_product_labels_map_to_catalog_classes():
    for product, cls in (("NVIDIA-L40S", "L40S"), ("NVIDIA-L4", "L4"), ("NVIDIA-H200", "H200"),
                         ("NVIDIA-A100-SXM4-80GB", "A100-80GB"), ("NVIDIA-A10G", "A10G")):
        assert device_class_of({"nvidia.com/gpu.product": product}) == cls
    assert device_class_of({"nvidia.com/gpu.product": "NVIDIA-H100", "heteroplane.io/device-class": "X"}) == "X"


def actuator(client, **kwargs) -> KubernetesActuator:
    slept: list[float] = []
    act = KubernetesActuator(client, NS, SHAPES, sleep=slept.append, **kwargs)
    act.slept = slept
    return act


def test_apply_is_server_side_make_before_break_and_idempotent(apiserver_double, k8s_api_client):  # noqa: F811
    d = apiserver_double
    act = actuator(k8s_api_client)
    first = DesiredPlacement(1, (llm("L40S", 2, 1), tool()))
    started = act.apply(first)
    assert started.pending and not started.ok  # written, not ready: never waited for
    writes = [r for r in d.requests if r.method == "PATCH" and r.resource == "deployments"]
    assert writes and {(r.content_type, r.field_manager) for r in writes} == {("application/apply-patch+yaml",
                                                                               FIELD_MANAGER)}
    d.rollout(namespace=NS)
    assert act.apply(first).ok
    observed = act.observe()
    assert observed.version == 1 and {(rs.device_class, rs.replicas) for rs in observed.replica_sets} == \
        {("L40S", 2), ("CPU-EPYC-64C", 1)}
    old = deployment_name(llm("L40S", 2, 1))
    version = d.get("deployments", old, NS)["metadata"]["resourceVersion"]
    assert act.apply(first).ok  # the same placement again changes nothing
    assert d.get("deployments", old, NS)["metadata"]["resourceVersion"] == version

    moved = DesiredPlacement(2, (llm("H100-SXM", 1, 7), tool()))
    assert act.apply(moved).pending
    assert d.get("deployments", old, NS)["spec"]["replicas"] == 2  # the old replicas serve meanwhile
    d.rollout(namespace=NS)
    assert act.apply(moved).ok
    assert d.get("deployments", old, NS) is None  # retired once its successor was ready
    assert d.get("deployments", deployment_name(llm("H100-SXM", 1, 7)), NS)["spec"]["replicas"] == 1


def test_scale_downs_wait_for_the_whole_placement(apiserver_double, k8s_api_client):  # noqa: F811
    d = apiserver_double
    act = actuator(k8s_api_client)
    act.apply(DesiredPlacement(1, (tool(3),)))
    d.rollout(namespace=NS)
    assert act.apply(DesiredPlacement(1, (tool(3),))).ok
    smaller = DesiredPlacement(2, (tool(1), llm("L40S", 1, 1)))
    assert act.apply(smaller).pending
    assert d.get("deployments", deployment_name(tool()), NS)["spec"]["replicas"] == 3  # kept until all is ready
    d.rollout(namespace=NS)
    assert act.apply(smaller).ok
    assert d.get("deployments", deployment_name(tool()), NS)["spec"]["replicas"] == 1


def test_a_successor_that_never_gets_ready_fails_and_the_old_placement_comes_back(apiserver_double,  # noqa: F811
                                                                                   k8s_api_client):  # noqa: F811
    d = apiserver_double
    act = actuator(k8s_api_client, ready_timeout_s=0.2)
    old = DesiredPlacement(1, (llm("L40S", 2, 1), tool(1)))
    act.apply(old)
    d.rollout(namespace=NS)
    assert act.apply(old).ok
    new = deployment_name(llm("H100-SXM", 1, 7))
    d.fail_rollout(new, NS)
    moved = DesiredPlacement(2, (llm("H100-SXM", 1, 7), tool(3)))
    assert act.apply(moved).pending
    d.rollout(deployment_name(tool()), NS)
    __import__("time").sleep(0.3)
    failed = act.apply(moved)
    assert not failed.ok and not failed.pending and new in failed.message
    assert d.get("deployments", deployment_name(llm("L40S", 2, 1)), NS)["spec"]["replicas"] == 2  # still serving
    # The reconciler's drift repair re-applies the placement in force: what the failed one added goes.
    assert act.apply(old).ok
    assert d.get("deployments", new, NS) is None
    assert d.get("deployments", deployment_name(tool()), NS)["spec"]["replicas"] == 1


def test_throttled_writes_are_retried_after_the_servers_retry_after(apiserver_double, k8s_api_client):  # noqa: F811
    d = apiserver_double
    d.auto_rollout(0)
    act = actuator(k8s_api_client)
    d.inject(429, count=2, retry_after=1, verbs=("patch",), resource="deployments")
    assert act.apply(DesiredPlacement(1, (tool(),))).ok
    assert act.slept[:2] == [1.0, 1.0]
    d.inject(400, count=1, verbs=("patch",), resource="deployments")  # not transient: raised to the reconciler
    with pytest.raises(ApiException, match="400"):
        act.apply(DesiredPlacement(2, (tool(2),)))


def test_a_lost_api_server_pauses_a_migration_which_resumes_when_it_is_back(apiserver_double,  # noqa: F811
                                                                             k8s_api_client):  # noqa: F811
    d = apiserver_double
    act = actuator(k8s_api_client)
    placement = DesiredPlacement(1, (llm("L40S", 2, 1), tool()))
    assert act.apply(placement).pending
    d.stop()
    lost = act.apply(placement)
    assert lost.pending and "unavailable" in lost.message
    d.start()
    d.rollout(namespace=NS)
    assert act.apply(placement).ok
    for rs in placement.replica_sets:  # each written once, at its size: nothing lost or doubled
        assert d.get("deployments", deployment_name(rs), NS)["spec"]["replicas"] == rs.replicas


def test_a_server_lost_past_the_timeout_fails_the_apply(apiserver_double, k8s_api_client):  # noqa: F811
    d = apiserver_double
    act = actuator(k8s_api_client, ready_timeout_s=0.0)
    d.stop()
    with pytest.raises(Exception):  # noqa: B017 - whichever transport error: the reconciler records it
        act.apply(DesiredPlacement(1, (tool(),)))


def test_nodes_that_fail_or_leave_the_cluster_stop_being_planned_on(apiserver_double, k8s_api_client,  # noqa: F811
                                                                     engine):
    """What exists comes from the cluster (issue 6's ownership): a node whose Ready condition goes
    false, or that is deleted, is not healthy in heteroplane's inventory after the next sync."""
    from sqlmodel import Session, select

    from controlplane.inventory import sync_inventory
    from controlplane.models import Node
    from controlplane.seed import seed_catalog

    d = apiserver_double
    for name in ("gpu-a", "gpu-b"):
        d.add_node(name, labels={"heteroplane.io/device-class": "L40S"}, allocatable={"nvidia.com/gpu": "4"})
    act = KubernetesActuator(k8s_api_client, NS, SHAPES)

    def healthy() -> dict[str, bool]:
        with Session(engine) as session:
            seed_catalog(session)
            sync_inventory(session, act.inventory())
            session.commit()
            return {n.name: n.healthy for n in session.exec(select(Node)).all()}

    assert healthy() == {"gpu-a": True, "gpu-b": True}
    d.set_node_ready("gpu-a", False)
    d.remove("nodes", "gpu-b")
    assert healthy() == {"gpu-a": False, "gpu-b": False}
