"""The Kubernetes actuator's watched Deployments (controlplane/actuators/kubernetes_watch.py), through the
official client against the API server test double (tests/k8s/apiserver_double.py, a double of the API
server's HTTP interface, not a cluster): list then watch, 410 Gone as an answer and as an ERROR event,
404, a lost server, and the actuator reading from the watch instead of listing every cycle."""

import time
from collections.abc import Callable

import pytest
from kubernetes.client import AppsV1Api
from kubernetes.client.exceptions import ApiException

from controlplane.actuators.base import DesiredPlacement
from controlplane.actuators.kubernetes import MANAGED_SELECTOR, KubernetesActuator
from controlplane.actuators.kubernetes_manifests import MANAGED_BY, deployment_name
from controlplane.actuators.kubernetes_watch import WatchedList, newer
from tests.controlplane.test_kubernetes_actuator import NS, SHAPES, llm, tool
from tests.k8s.apiserver_double import ApiServerDouble
from tests.k8s.conftest import apiserver_double, k8s_api_client  # noqa: F401 - fixtures
from tests.support import wait_until


def eventually(check: Callable[[], bool], what: str, polls: int = 500) -> None:
    wait_until(check, what, polls=polls, interval=0.02)


def deployment(name: str, replicas: int = 1, managed: bool = True) -> dict:
    labels = dict(MANAGED_BY) if managed else {"app": "someone-else"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"d": name}},
                     "template": {"metadata": {"labels": {"d": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


@pytest.fixture
def watched(k8s_api_client):  # noqa: F811
    held = WatchedList(AppsV1Api(k8s_api_client).list_namespaced_deployment, NS, selector=MANAGED_SELECTOR,
                       watch_seconds=2)
    yield held
    held.stop()


def names(held: WatchedList) -> list[str] | None:
    items = held.items()
    return None if items is None else [o.metadata.name for o in items]


def test_resource_versions_compare_as_the_servers_integers():
    assert newer("10", "9") and newer("9", "9") and not newer("9", "10")
    assert newer("7", None) and newer("opaque", "5")  # not integers: the newer arrival wins


def test_the_list_is_kept_by_the_watch_and_only_the_selected_objects(apiserver_double, watched):  # noqa: F811
    d = apiserver_double
    d.put(deployment("before"))
    assert names(watched) is None  # out of sync until the first list
    watched.start()
    assert watched.wait_in_sync(5)
    assert names(watched) == ["before"]
    d.put(deployment("after", 2))
    d.put(deployment("not-ours", managed=False))
    eventually(lambda: names(watched) == ["after", "before"], "the watch adds ours, not the other one")
    d.put(deployment("after", 5))
    eventually(lambda: watched.items()[0].spec.replicas == 5, "the watch sees the scale to 5")
    d.remove("deployments", "before", NS)
    eventually(lambda: names(watched) == ["after"], "the watch drops the removed one")
    time.sleep(2.5)  # past one watch's timeoutSeconds: it resumes from where it was, without listing
    d.put(deployment("later"))
    eventually(lambda: names(watched) == ["after", "later"], "the resumed watch sees a new one")
    assert watched.relists == 1
    lists = [r for r in d.requests if r.resource == "deployments" and r.verb == "list"]
    assert len(lists) == 1


def test_a_write_answer_is_held_until_a_newer_event(apiserver_double, k8s_api_client, watched):  # noqa: F811
    """What the actuator writes it hands over at once, so it never reads its own write's past."""
    d = apiserver_double
    d.put(deployment("x", 1))
    watched.start()
    assert watched.wait_in_sync(5)
    stale = watched.items()[0]
    fresh = AppsV1Api(k8s_api_client).patch_namespaced_deployment("x", NS, {"spec": {"replicas": 4}})
    watched.saw(fresh)
    assert watched.items()[0].spec.replicas == 4
    watched.saw(stale)  # an older version (a late event) never replaces a newer one
    assert watched.items()[0].spec.replicas == 4
    watched.forgot("x")
    assert names(watched) == []


def test_a_resume_from_a_version_the_server_no_longer_has_is_410_gone(k8s_api_client):  # noqa: F811
    """The ERROR event a real server sends (and the double, past its bounded history) reaches the
    watch as an ApiException 410: the signal to list again."""
    small = ApiServerDouble(history=3).start()
    try:
        from kubernetes.client import ApiClient

        with ApiClient(small.client_configuration()) as api:
            held = WatchedList(AppsV1Api(api).list_namespaced_deployment, NS, selector=MANAGED_SELECTOR,
                               watch_seconds=2)
            small.put(deployment("d"))
            first = held._relist()
            assert first != "0"  # from 0 a watch starts with the current state: no history needed
            for i in range(6):
                small.put(deployment(f"d{i}"))
            with pytest.raises(ApiException) as gone:
                held._follow(first)
            assert gone.value.status == 410
    finally:
        small.close()


def test_410_gone_lists_again_at_once(apiserver_double, watched):  # noqa: F811
    d = apiserver_double
    d.inject(410, verbs=("watch",), resource="deployments")
    d.put(deployment("a"))
    watched.start()
    eventually(lambda: watched.relists == 2, "a second list after the 410")
    d.put(deployment("b"))
    eventually(lambda: names(watched) == ["a", "b"], "the watch after the relist sees b")
    lists = [r for r in d.requests if r.resource == "deployments" and r.verb == "list"]
    assert len(lists) == 2  # one list per 410, no more


def test_404_and_server_errors_leave_it_out_of_sync_until_a_list_succeeds(apiserver_double, watched,  # noqa: F811
                                                                             caplog):
    d = apiserver_double
    d.inject(404, verbs=("list",), resource="deployments")
    d.inject(503, verbs=("list",), resource="deployments", retry_after=1)
    watched.start()
    assert not watched.wait_in_sync(0.3)
    assert names(watched) is None
    eventually(lambda: names(watched) == [], "a list succeeds after the 404 and the 503")
    assert watched.relists == 1
    assert any("404" in r.getMessage() for r in caplog.records)


def test_a_lost_server_reads_as_out_of_sync_and_the_list_comes_back_whole(apiserver_double, watched):  # noqa: F811
    d = apiserver_double
    d.put(deployment("a"))
    watched.start()
    assert watched.wait_in_sync(5)
    d.stop()
    eventually(lambda: names(watched) is None, "out of sync once the server is gone")
    d.put(deployment("made-while-down"))  # changes it could not see
    d.remove("deployments", "a", NS)
    d.start()
    eventually(lambda: names(watched) == ["made-while-down"], "the list made after the server came back",
               polls=1000)


def test_the_actuator_reads_what_it_manages_from_the_watch(apiserver_double, k8s_api_client):  # noqa: F811
    """Make-before-break as before, but readiness and observe come from the watch: after the first
    list, a hundred cycles' observes list nothing."""
    d = apiserver_double
    act = KubernetesActuator(k8s_api_client, NS, SHAPES, watch=True)
    act.start()
    try:
        assert act.deployments.wait_in_sync(5)
        first = DesiredPlacement(1, (llm("L40S", 2, 1), tool()))
        assert act.apply(first).pending
        d.rollout(namespace=NS)
        eventually(lambda: act.apply(first).ok, "the first placement ready")
        moved = DesiredPlacement(2, (llm("H100-SXM", 1, 7), tool(2)))
        assert act.apply(moved).pending  # straight after its own writes: never the old, ready state
        old = deployment_name(llm("L40S", 2, 1))
        assert d.get("deployments", old, NS)["spec"]["replicas"] == 2
        d.rollout(namespace=NS)
        eventually(lambda: act.apply(moved).ok, "the moved placement ready")
        assert d.get("deployments", old, NS) is None
        d.clear_requests()
        for _ in range(100):
            observed = act.observe()
        assert observed.version == 2
        assert {(rs.device_class, rs.replicas) for rs in observed.replica_sets} == {("H100-SXM", 1),
                                                                                  ("CPU-EPYC-64C", 2)}
        assert not [r for r in d.requests if r.resource == "deployments" and r.verb == "list"]
    finally:
        act.stop()


def test_an_actuator_whose_watch_is_not_in_sync_lists_instead(apiserver_double, k8s_api_client):  # noqa: F811
    d = apiserver_double
    d.put(deployment("a"))
    act = KubernetesActuator(k8s_api_client, NS, SHAPES, watch=True)

    def lists_on_observe() -> int:
        d.clear_requests()
        act.observe()
        return len([r for r in d.requests if r.resource == "deployments" and r.verb == "list"])

    assert lists_on_observe() == 1  # not started: nothing held
    act.start()
    assert act.deployments.wait_in_sync(5)
    assert lists_on_observe() == 0
    act.stop()
    assert lists_on_observe() == 1  # stopped: what it held is not trusted
