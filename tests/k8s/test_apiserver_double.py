"""The API server double behaves like a Kubernetes API server as the official client sees it.

Every test drives the double only through `kubernetes.client` (plus the double's cluster-state helpers), so
what passes here is what an actuator using that client can rely on.
"""

import json
import time

import kubernetes_validate
import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from tests.k8s.apiserver_double import APPLY, ApiServerDouble

NAMESPACE = "default"


def deployment(name: str = "web", *, replicas: int = 2, image: str = "nginx:1.27", labels: dict | None = None) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


def apply_deployment(apps: client.AppsV1Api, body: dict, manager: str = "heteroplane", force: bool = True):
    return apps.patch_namespaced_deployment(
        body["metadata"]["name"], NAMESPACE, body, field_manager=manager, force=force, _content_type=APPLY
    )


def status_of(error: ApiException) -> dict:
    return json.loads(error.body)


@pytest.fixture
def apps(k8s_api_client: ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(k8s_api_client)


@pytest.fixture
def core(k8s_api_client: ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(k8s_api_client)


def test_nodes_are_listed_by_label_selector_and_read_by_name(apiserver_double: ApiServerDouble, core):
    apiserver_double.add_node("h100-a", labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                                                "heteroplane.io/device-class": "h100"},
                              allocatable={"nvidia.com/gpu": "8"})
    apiserver_double.add_node("mi300-a", labels={"heteroplane.io/device-class": "mi300x"},
                              allocatable={"amd.com/gpu": "8"}, ready=False)

    h100s = core.list_node(label_selector="heteroplane.io/device-class=h100")
    some = core.list_node(label_selector="heteroplane.io/device-class in (h100,mi300x),!missing")
    node = core.read_node("mi300-a")

    assert [n.metadata.name for n in h100s.items] == ["h100-a"]
    assert [n.metadata.name for n in some.items] == ["h100-a", "mi300-a"]
    assert int(h100s.metadata.resource_version) >= 2
    assert node.status.allocatable["amd.com/gpu"] == "8"
    assert [(c.type, c.status) for c in node.status.conditions] == [("Ready", "False")]
    with pytest.raises(ApiException) as missing:
        core.read_node("nope")
    assert missing.value.status == 404
    assert status_of(missing.value)["reason"] == "NotFound"


def test_server_side_apply_creates_then_a_repeat_is_a_no_op_and_a_change_bumps_generation(apps):
    created = apply_deployment(apps, deployment())
    repeated = apply_deployment(apps, deployment())
    changed = apply_deployment(apps, deployment(image="nginx:1.28"))

    assert created.metadata.generation == 1
    assert created.spec.replicas == 2
    assert [(m.manager, m.operation) for m in created.metadata.managed_fields] == [("heteroplane", "Apply")]
    assert repeated.metadata.resource_version == created.metadata.resource_version
    assert int(changed.metadata.resource_version) > int(created.metadata.resource_version)
    assert changed.metadata.generation == 2
    assert changed.metadata.uid == created.metadata.uid
    assert apps.read_namespaced_deployment("web", NAMESPACE).spec.template.spec.containers[0].image == "nginx:1.28"


def test_a_field_dropped_from_the_applied_configuration_is_removed(apps):
    apply_deployment(apps, deployment(labels={"app": "web", "team": "ml"}))

    updated = apply_deployment(apps, deployment(labels={"app": "web"}))

    assert updated.metadata.labels == {"app": "web"}


def test_a_conflicting_manager_is_refused_without_force_and_wins_with_it(apps):
    apply_deployment(apps, deployment(replicas=2), manager="heteroplane")

    with pytest.raises(ApiException) as refused:
        apply_deployment(apps, deployment(replicas=5), manager="kubectl", force=False)
    forced = apply_deployment(apps, deployment(replicas=5), manager="kubectl", force=True)

    assert refused.value.status == 409
    assert status_of(refused.value)["reason"] == "Conflict"
    assert '"heteroplane": .spec.replicas' in status_of(refused.value)["message"]
    assert forced.spec.replicas == 5
    assert {m.manager for m in forced.metadata.managed_fields} == {"heteroplane", "kubectl"}


def test_merge_patch_and_delete(apps):
    apply_deployment(apps, deployment())

    patched = apps.patch_namespaced_deployment("web", NAMESPACE, {"spec": {"replicas": 4}})
    apps.delete_namespaced_deployment("web", NAMESPACE)

    assert patched.spec.replicas == 4
    assert patched.metadata.generation == 2
    with pytest.raises(ApiException) as gone:
        apps.read_namespaced_deployment("web", NAMESPACE)
    assert gone.value.status == 404


def test_an_invalid_body_is_422_and_a_wrong_kind_is_400(apps):
    # Apply, because the client validates typed bodies (create, replace) before sending them.
    no_template = deployment()
    del no_template["spec"]["template"]
    wrong_kind = deployment() | {"kind": "StatefulSet"}

    with pytest.raises(ApiException) as invalid:
        apply_deployment(apps, no_template)
    with pytest.raises(ApiException) as bad:
        apply_deployment(apps, wrong_kind)

    assert (invalid.value.status, status_of(invalid.value)["reason"]) == (422, "Invalid")
    assert status_of(invalid.value)["details"]["causes"][0]["field"] == "spec.template"
    assert (bad.value.status, status_of(bad.value)["kind"]) == (400, "Status")


def test_watch_streams_added_modified_deleted_after_a_resource_version(apps):
    apply_deployment(apps, deployment("before"))
    start = apps.list_namespaced_deployment(NAMESPACE).metadata.resource_version
    apply_deployment(apps, deployment())
    apply_deployment(apps, deployment(replicas=3))
    apps.delete_namespaced_deployment("web", NAMESPACE)

    stream = watch.Watch().stream(apps.list_namespaced_deployment, NAMESPACE, resource_version=start,
                                  timeout_seconds=1, allow_watch_bookmarks=True)
    events = [(e["type"], e["raw_object"]["metadata"].get("name"), e["raw_object"]["metadata"]["resourceVersion"])
              for e in stream]

    assert [(kind, name) for kind, name, _ in events] == [
        ("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "web"), ("BOOKMARK", None)]
    versions = [int(rv) for _, _, rv in events]
    assert versions == sorted(versions) and versions[0] > int(start)


def test_watch_from_a_resource_version_older_than_the_history_raises_410():
    double = ApiServerDouble(history=3).start()
    try:
        with ApiClient(double.client_configuration()) as api_client:
            apps = client.AppsV1Api(api_client)
            for replicas in range(1, 6):
                apply_deployment(apps, deployment(replicas=replicas))
            recent = apps.list_namespaced_deployment(NAMESPACE).metadata.resource_version

            # Without timeout_seconds the client retries once after a 410, as against a real cluster, then raises.
            with pytest.raises(ApiException) as expired:
                for _ in watch.Watch().stream(apps.list_namespaced_deployment, NAMESPACE, resource_version="1"):
                    pass
            still_served = watch.Watch().stream(apps.list_namespaced_deployment, NAMESPACE,
                                                resource_version=str(int(recent) - 2), timeout_seconds=1)
            replayed = [e["object"].spec.replicas for e in still_served]
    finally:
        double.close()

    assert expired.value.status == 410
    assert "Expired" in expired.value.reason
    assert [r.query.get("resourceVersion") for r in double.requests if r.verb == "watch"][:2] == ["1", "1"]
    assert replayed == [4, 5]


def test_lease_replace_with_a_stale_resource_version_is_a_conflict(k8s_api_client):
    leases = client.CoordinationV1Api(k8s_api_client)
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="leader"),
                           spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15))
    created = leases.create_namespaced_lease(NAMESPACE, lease)
    created.spec.holder_identity = "b"
    renewed = leases.replace_namespaced_lease("leader", NAMESPACE, created)
    created.spec.holder_identity = "c"  # still carries the first resourceVersion

    with pytest.raises(ApiException) as stale:
        leases.replace_namespaced_lease("leader", NAMESPACE, created)
    with pytest.raises(ApiException) as duplicate:
        leases.create_namespaced_lease(NAMESPACE, lease)

    assert renewed.spec.holder_identity == "b"
    assert (stale.value.status, status_of(stale.value)["reason"]) == (409, "Conflict")
    assert (duplicate.value.status, status_of(duplicate.value)["reason"]) == (409, "AlreadyExists")
    assert leases.read_namespaced_lease("leader", NAMESPACE).spec.holder_identity == "b"


def test_an_injected_429_carries_retry_after_and_then_requests_succeed(apiserver_double: ApiServerDouble, apps):
    apiserver_double.inject(429, count=1, retry_after=1, verbs=("patch",), resource="deployments")

    with pytest.raises(ApiException) as throttled:
        apply_deployment(apps, deployment())
    applied = apply_deployment(apps, deployment())

    assert throttled.value.status == 429
    assert throttled.value.headers["Retry-After"] == "1"
    assert status_of(throttled.value)["details"]["retryAfterSeconds"] == 1
    assert applied.metadata.name == "web"


def test_urllib3_retries_a_throttled_read_by_itself(apiserver_double: ApiServerDouble, apps):
    # urllib3's default Retry honours Retry-After on 429/503 for idempotent methods, so a GET never surfaces it.
    apiserver_double.inject(503, count=2, retry_after=0, verbs=("list",))

    listed = apps.list_namespaced_deployment(NAMESPACE)

    assert listed.items == []
    assert [r.verb for r in apiserver_double.requests] == ["list", "list", "list"]


def test_a_dropped_connection_is_a_connection_error_in_the_client(apiserver_double: ApiServerDouble, apps):
    apiserver_double.drop_connections(count=10)  # more than urllib3's default retries

    with pytest.raises(urllib3.exceptions.HTTPError):
        apply_deployment(apps, deployment())


def test_an_outage_and_return_on_the_same_port(apiserver_double: ApiServerDouble, core):
    apiserver_double.add_node("n1")
    core.list_node()  # leaves a pooled keep-alive connection behind

    apiserver_double.stop()
    with pytest.raises(urllib3.exceptions.HTTPError):
        core.list_node(_request_timeout=1)
    apiserver_double.start()

    assert [n.metadata.name for n in core.list_node().items] == ["n1"]


def test_rollout_and_fail_rollout_drive_deployment_status(apiserver_double: ApiServerDouble, apps):
    apply_deployment(apps, deployment("good", replicas=3))
    apply_deployment(apps, deployment("bad", replicas=3))

    apiserver_double.fail_rollout("bad")
    apiserver_double.rollout()
    good = apps.read_namespaced_deployment_status("good", NAMESPACE).status
    bad = apps.read_namespaced_deployment_status("bad", NAMESPACE).status

    assert (good.replicas, good.ready_replicas, good.available_replicas, good.updated_replicas) == (3, 3, 3, 3)
    assert good.observed_generation == 1
    assert bad.ready_replicas == 2
    assert {c.type: c.reason for c in bad.conditions}["Progressing"] == "ProgressDeadlineExceeded"


def test_auto_rollout_follows_each_spec_change(apiserver_double: ApiServerDouble, apps):
    apiserver_double.auto_rollout(delay=0.2)
    apply_deployment(apps, deployment(replicas=2))
    pending = apps.read_namespaced_deployment("web", NAMESPACE).status

    time.sleep(0.5)
    ready = apps.read_namespaced_deployment("web", NAMESPACE).status

    assert (pending.ready_replicas, pending.observed_generation) == (None, None)
    assert (ready.ready_replicas, ready.observed_generation) == (2, 1)


def test_status_writes_touch_only_status_and_spec_writes_never_status(apiserver_double: ApiServerDouble, apps):
    apply_deployment(apps, deployment(replicas=2))

    apps.patch_namespaced_deployment_status("web", NAMESPACE, {"status": {"readyReplicas": 1}, "spec": {"replicas": 9}},
                                            _content_type="application/merge-patch+json")
    apply_deployment(apps, deployment(replicas=2) | {"status": {"readyReplicas": 7}})
    stored = apps.read_namespaced_deployment("web", NAMESPACE)

    assert (stored.spec.replicas, stored.status.ready_replicas) == (2, 1)


def test_resource_slices_and_claim_templates(apiserver_double: ApiServerDouble, k8s_api_client):
    resource = client.ResourceV1Api(k8s_api_client)
    apiserver_double.add_resource_slice("h100-a-gpus", driver="gpu.nvidia.com", pool="h100-a", node_name="h100-a",
                                        devices=[{"name": "gpu-0", "attributes": {"productName": "H100", "index": 0},
                                                  "capacity": {"memory": "80Gi"}}])
    template = {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": "one-gpu"},
        "spec": {"spec": {"devices": {"requests": [
            {"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]}}},
    }

    slices = resource.list_resource_slice()
    applied = resource.patch_namespaced_resource_claim_template("one-gpu", NAMESPACE, template,
                                                               field_manager="heteroplane", _content_type=APPLY)
    listed = resource.list_namespaced_resource_claim_template(NAMESPACE)
    resource.delete_namespaced_resource_claim_template("one-gpu", NAMESPACE)

    device = slices.items[0].spec.devices[0]
    assert (device.name, device.attributes["productName"].string, device.capacity["memory"].value) == (
        "gpu-0", "H100", "80Gi")
    assert applied.metadata.generation == 1
    assert [t.metadata.name for t in listed.items] == ["one-gpu"]
    assert resource.list_namespaced_resource_claim_template(NAMESPACE).items == []


def test_requests_without_the_bearer_token_are_401(apiserver_double: ApiServerDouble):
    with ApiClient(apiserver_double.client_configuration(token="wrong")) as anonymous:
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(anonymous).list_node()

    assert (refused.value.status, status_of(refused.value)["reason"]) == (401, "Unauthorized")


def test_requests_are_recorded_with_verb_content_type_and_field_manager(apiserver_double: ApiServerDouble, apps):
    apply_deployment(apps, deployment())
    apps.read_namespaced_deployment("web", NAMESPACE)

    recorded = [(r.verb, r.resource, r.content_type, r.field_manager) for r in apiserver_double.requests]

    assert recorded == [("patch", "deployments", APPLY, "heteroplane"), ("get", "deployments", None, None)]


def test_a_stored_deployment_validates_against_the_kubernetes_schema(apiserver_double: ApiServerDouble, apps):
    apply_deployment(apps, deployment())
    apiserver_double.rollout("web")

    stored = apiserver_double.get("deployments", "web", NAMESPACE)

    kubernetes_validate.validate(stored, "1.34", strict=True)
