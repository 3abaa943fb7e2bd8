"""Runtime templates through the API, their resolution into containers, and the containers a placement's
replica sets carry to the actuator."""

import json

from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, select

from controlplane.containers import KV_ROLE, VLLM_IMAGE, resolve
from controlplane.models import AuditEvent, DeviceClass, Fragment, FragmentKind, Placement, PlacementItem, Workload
from controlplane.models.runtime_templates import RuntimeTemplateIn
from controlplane.reconciler import desired_placement
from optimizer.types import Phase
from tests.controlplane.conftest import auth

APP = {"image": "registry.example/acme/agent:1.4", "command": ["python", "-m", "agent"], "args": ["--fast"],
       "env": {"LOG_LEVEL": "debug"}, "secret_env": {"OPENAI_API_KEY": "acme-keys/openai"}, "ports": [8080],
       "cpu_millicores": 500, "memory_mib": 1024}


def seed(engine, tenant_id: int) -> tuple[int, int, int]:
    """A workload with an LLM fragment and a tool fragment: (workload id, llm id, tool id)."""
    with Session(engine) as session:
        workload = Workload(tenant_id=tenant_id, name="rag")
        session.add(workload)
        session.flush()
        llm = Fragment(workload_id=workload.id, key="llm:llama", kind=FragmentKind.llm, name="chat",
                       model="meta-llama/Llama-3.1-8B-Instruct")
        tool = Fragment(workload_id=workload.id, key="tool:search", kind=FragmentKind.tool, name="search")
        session.add_all([llm, tool])
        session.commit()
        return workload.id, llm.id, tool.id


def containers(client, token: str, workload_id: int, phase: str = "") -> dict[str, dict]:
    answer = client.get(f"/api/v1/workloads/{workload_id}/containers", params={"phase": phase}, headers=auth(token))
    assert answer.status_code == 200, answer.text
    return {c["fragment_key"]: c for c in answer.json()["items"]}


def test_templates_resolve_fragment_over_workload_over_the_vllm_default(client, callers, engine):
    wid, llm, _ = seed(engine, callers.acme_id)
    ops = auth(callers.acme_operator)

    before = containers(client, callers.acme_operator, wid)
    assert before["llm:llama"]["source"] == "default" and before["llm:llama"]["image"] == VLLM_IMAGE
    assert before["llm:llama"]["args"][:2] == ["--model", "meta-llama/Llama-3.1-8B-Instruct"]
    assert before["tool:search"] == {**before["tool:search"], "source": "none", "image": None}

    put = client.put(f"/api/v1/workloads/{wid}/runtime-template", json=APP, headers=ops)
    assert put.status_code == 200, put.text
    assert client.get(f"/api/v1/workloads/{wid}/runtime-template", headers=ops).json()["image"] == APP["image"]
    after = containers(client, callers.acme_operator, wid)
    for key in ("llm:llama", "tool:search"):
        assert after[key]["source"] == "workload" and after[key]["image"] == APP["image"]
        assert after[key]["env"] == {"LOG_LEVEL": "debug", "HETEROPLANE_PHASE": "whole"}
        assert after[key]["secret_env"] == APP["secret_env"] and after[key]["ports"] == [8080]

    own = {"image": "vllm/vllm-openai:v0.11.0", "args": ["--model", "/models/llama-awq"], "model": "llama-awq"}
    assert client.put(f"/api/v1/fragments/{llm}/runtime-template", json=own,
                      headers=ops).status_code == 200
    mixed = containers(client, callers.acme_operator, wid)
    assert mixed["llm:llama"]["source"] == "fragment" and mixed["llm:llama"]["model"] == "llama-awq"
    assert mixed["tool:search"]["source"] == "workload"

    # A second PUT replaces the whole template: fields left out go back to their defaults.
    assert client.put(f"/api/v1/workloads/{wid}/runtime-template", json={"image": "busybox:1.36"},
                      headers=ops).json()["ports"] == []
    assert client.delete(f"/api/v1/fragments/{llm}/runtime-template", headers=ops).status_code == 204
    assert client.delete(f"/api/v1/workloads/{wid}/runtime-template", headers=ops).status_code == 204
    assert containers(client, callers.acme_operator, wid)["llm:llama"]["source"] == "default"
    gone = client.get(f"/api/v1/workloads/{wid}/runtime-template", headers=ops)
    assert gone.status_code == 404 and "no runtime template" in gone.json()["detail"]


def test_split_pools_get_their_kv_roles(client, callers, engine):
    wid, _, _ = seed(engine, callers.acme_id)
    for phase, role in (("prefill", "kv_producer"), ("decode", "kv_consumer")):
        llm = containers(client, callers.admin, wid, phase)["llm:llama"]
        config = json.loads(llm["args"][llm["args"].index("--kv-transfer-config") + 1])
        assert config["kv_role"] == role and llm["env"]["HETEROPLANE_PHASE"] == phase
    assert "--kv-transfer-config" not in containers(client, callers.admin, wid)["llm:llama"]["args"]


def test_templates_are_the_tenants_own_and_written_by_operators(client, callers, engine):
    wid, llm, _ = seed(engine, callers.acme_id)
    paths = [f"/api/v1/workloads/{wid}/runtime-template", f"/api/v1/fragments/{llm}/runtime-template"]
    for path in paths:
        assert client.get(path, headers=auth(callers.globex_viewer)).status_code == 404  # as if absent
        assert client.put(path, json=APP, headers=auth(callers.globex_viewer)).status_code == 403  # role first
        assert client.put(path, json=APP, headers=auth(callers.viewer)).status_code == 403
    assert client.get(f"/api/v1/workloads/{wid}/containers", headers=auth(callers.globex_viewer)).status_code == 404
    missing = client.get("/api/v1/fragments/999999/runtime-template", headers=auth(callers.globex_viewer))
    theirs = client.get(f"/api/v1/fragments/{llm}/runtime-template", headers=auth(callers.globex_viewer))
    assert missing.json()["detail"].replace("999999", "#") == theirs.json()["detail"].replace(str(llm), "#")


def test_bad_templates_are_refused_naming_the_field(client, callers, engine):
    wid, _, _ = seed(engine, callers.acme_id)
    path, ops = f"/api/v1/workloads/{wid}/runtime-template", auth(callers.acme_operator)
    for body, field in (
        ({**APP, "env": {"HETEROPLANE_PHASE": "x"}}, "env"),
        ({**APP, "secret_env": {"TOKEN": "no-key-part"}}, "secret_env"),
        ({**APP, "ports": [8080, 8080]}, "ports"),
        ({**APP, "ports": [70000]}, "ports"),
        ({**APP, "image": "has space"}, "image"),
        ({**APP, "env": {"1BAD": "x"}}, "env"),
        ({**APP, "memory_mib": 2**40}, "memory_mib"),
        ({**APP, "args": ["x"] * 129}, "args"),
        ({k: v for k, v in APP.items() if k != "image"}, "image"),
    ):
        answer = client.put(path, json=body, headers=ops)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["field"].startswith(field), (field, answer.json())


def test_the_audit_trail_names_env_variables_without_their_values(client, callers, engine):
    wid, _, _ = seed(engine, callers.acme_id)
    body = {**APP, "env": {"DB_PASSWORD": "hunter2-should-have-been-a-secret"}}
    assert client.put(f"/api/v1/workloads/{wid}/runtime-template", json=body,
                      headers=auth(callers.acme_operator)).status_code == 200
    with Session(engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "runtime_template.put")).all()
    assert len(events) == 1 and events[0].detail["env"] == "DB_PASSWORD"
    assert "hunter2" not in json.dumps(events[0].detail)


def test_a_placements_replica_sets_carry_their_containers(client, callers, engine):
    wid, llm, tool = seed(engine, callers.acme_id)
    client.put(f"/api/v1/fragments/{tool}/runtime-template", json=APP,
               headers=auth(callers.acme_operator))
    with Session(engine) as session:
        h100 = DeviceClass(name="h100-test", vendor="nvidia", bf16_tflops=989, memory_gib=80, memory_gbps=3350,
                           fabric="nvlink", usd_per_hour=4.0)
        placement = Placement(version=1)
        session.add_all([h100, placement])
        session.flush()
        session.add_all([
            PlacementItem(placement_id=placement.id, fragment_id=llm, device_class_id=h100.id, phase="prefill",
                          replicas=2),
            PlacementItem(placement_id=placement.id, fragment_id=llm, device_class_id=h100.id, phase="decode",
                          replicas=3),
            PlacementItem(placement_id=placement.id, fragment_id=tool, device_class_id=h100.id, replicas=1),
        ])
        session.commit()
        desired = desired_placement(session, placement)
    by_pool = {(rs.fragment_key, rs.phase): rs.container for rs in desired.replica_sets}
    assert "kv_producer" in " ".join(by_pool["llm:llama", Phase.prefill].args)
    assert "kv_consumer" in " ".join(by_pool["llm:llama", Phase.decode].args)
    assert by_pool["tool:search", Phase.whole].image == APP["image"]
    assert dict(by_pool["tool:search", Phase.whole].secret_env) == APP["secret_env"]


TEMPLATES = st.none() | st.builds(RuntimeTemplateIn, image=st.from_regex(r"[a-z]{1,8}:[0-9]{1,3}", fullmatch=True))


@given(kind=st.sampled_from(FragmentKind), model=st.sampled_from(["", "m"]), phase=st.sampled_from(Phase),
       own=TEMPLATES, workload=TEMPLATES)
def test_resolution_follows_its_table(kind, model, phase, own, workload):
    """Independent statement of the rule: the first of (own, workload) that exists wins; else vLLM
    for an LLM fragment with a model; else nothing. Every container says its pool."""
    source, container = resolve(kind, model, phase, own, workload)
    if own is not None:
        assert (source, container.image) == ("fragment", own.image)
    elif workload is not None:
        assert (source, container.image) == ("workload", workload.image)
    elif kind == "llm" and model:
        assert (source, container.image) == ("default", VLLM_IMAGE)
        roles = [a for a in container.args if "kv_role" in a]
        assert roles == ([] if phase == "" else [json.dumps({"kv_connector": "P2pNcclConnector",
                                                              "kv_role": KV_ROLE[phase]}, separators=(",", ":"))])
    else:
        assert (source, container) == ("none", None)
    if container is not None:
        assert dict(container.env)["HETEROPLANE_PHASE"] == (phase or "whole")
