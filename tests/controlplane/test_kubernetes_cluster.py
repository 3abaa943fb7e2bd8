"""The Kubernetes actuator against a real cluster, when one is configured (KUBECONFIG set): the one
documented exception to 'under CI=true a skipped real-component test fails', since no cluster can be
had on the machines CI runs on. It works in a namespace of its own, deleted at the end."""

import os
import time
import uuid

import pytest

from controlplane.actuators.base import DesiredPlacement, ReplicaSet
from controlplane.actuators.kubernetes import KubernetesActuator
from controlplane.actuators.kubernetes_manifests import ClassShape
from controlplane.containers import from_template
from controlplane.models.runtime_templates import RuntimeTemplateIn
from optimizer.catalog import CATALOG
from optimizer.types import Phase

pytestmark = pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="no cluster: KUBECONFIG is not set")


def test_inventory_and_a_make_before_break_apply_on_a_real_cluster():
    from kubernetes import client, config

    config.load_kube_config()
    api = client.ApiClient()
    namespace = f"heteroplane-test-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        shapes = {c.name: ClassShape(c.vendor, c.slices_per_device, c.cores) for c in CATALOG}
        actuator = KubernetesActuator(api, namespace, shapes, ready_timeout_s=300)
        nodes = actuator.inventory()
        usable = [n for n in nodes if n.ready and n.healthy_devices > 0]
        if not usable:
            pytest.skip("no node carries a heteroplane.io/device-class (or GPU product) label with a free device")
        cls = usable[0].device_class
        sleeper = from_template(RuntimeTemplateIn(image="busybox:1.36", command=["sleep", "3600"],
                                                  cpu_millicores=10, memory_mib=16), Phase.whole)
        slices = shapes[cls].slices_per_device
        first = DesiredPlacement(1, (ReplicaSet("test", "sleeper", "tool:sleep", cls, 1, slices, container=sleeper),))
        assert settle(actuator, first).ok
        assert [rs.replicas for rs in actuator.observe().replica_sets] == [1]
        assert settle(actuator, DesiredPlacement(2, ())).ok
        assert actuator.observe().replica_sets == ()
    finally:
        core.delete_namespace(namespace)


def settle(actuator: KubernetesActuator, desired: DesiredPlacement):
    """Apply until the answer is no longer pending, as the reconciler does once a cycle."""
    while (result := actuator.apply(desired)).pending:
        time.sleep(2)
    return result
