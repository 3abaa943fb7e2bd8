"""`heteroplane export k8s`: a stored placement as the YAML the Kubernetes actuator would apply, valid
Kubernetes 1.34, one Deployment per replica set with the placement's replicas."""

import os
import subprocess
import sys

import kubernetes_validate
import yaml
from sqlmodel import Session, select

from controlplane.db import make_engine, upgrade
from controlplane.models import (
    DeviceClass,
    Fragment,
    FragmentKind,
    Placement,
    PlacementItem,
    PlacementState,
    Tenant,
    Workload,
)
from controlplane.seed import seed_catalog


def seeded(url: str, *, tool_template: bool) -> None:
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        seed_catalog(session)
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        workload = Workload(tenant_id=tenant.id, name="rag")
        session.add(workload)
        session.flush()
        llm = Fragment(workload_id=workload.id, key="llm:meta-llama/Llama-3.1-8B-Instruct", kind=FragmentKind.llm,
                       name="chat", model="meta-llama/Llama-3.1-8B-Instruct")
        tool = Fragment(workload_id=workload.id, key="tool:search", kind=FragmentKind.tool, name="search")
        session.add_all([llm, tool])
        session.flush()
        if tool_template:
            from controlplane.models import RuntimeTemplate

            session.add(RuntimeTemplate(workload_id=workload.id, fragment_id=tool.id, image="search:1"))
        h100 = session.exec(select(DeviceClass).where(DeviceClass.name == "H100-SXM")).one()
        cpu = session.exec(select(DeviceClass).where(DeviceClass.name == "CPU-EPYC-64C")).one()
        for version, replicas in ((1, 2), (2, 3)):
            placement = Placement(version=version, state=PlacementState.applied)
            session.add(placement)
            session.flush()
            session.add_all([
                PlacementItem(placement_id=placement.id, fragment_id=llm.id, device_class_id=h100.id,
                              replicas=replicas, slices=7),
                PlacementItem(placement_id=placement.id, fragment_id=tool.id, device_class_id=cpu.id, replicas=1),
            ])
        session.commit()
    engine.dispose()


def export(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HETEROPLANE_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "controlplane.cli", "export", "k8s", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_export_writes_valid_manifests_of_the_placement_asked_for(tmp_path):
    url = f"sqlite:///{tmp_path / 'hp.db'}"
    seeded(url, tool_template=True)
    latest = export(url)
    assert latest.returncode == 0, latest.stdout + latest.stderr
    objects = list(yaml.safe_load_all(latest.stdout))
    for obj in objects:
        kubernetes_validate.validate(obj, "1.34", strict=True)
    replicas = {o["metadata"]["annotations"]["heteroplane.io/fragment-key"]: o["spec"]["replicas"] for o in objects}
    assert replicas == {"llm:meta-llama/Llama-3.1-8B-Instruct": 3, "tool:search": 1}  # v2, the newest applied
    first = export(url, "--version", "1", "--namespace", "ml", "-o", str(tmp_path / "v1.yaml"))
    assert first.returncode == 0, first.stdout + first.stderr
    older = list(yaml.safe_load_all((tmp_path / "v1.yaml").read_text()))
    assert {o["metadata"]["namespace"] for o in older} == {"ml"}
    assert max(o["spec"]["replicas"] for o in older) == 2


def test_export_refuses_what_it_cannot_write(tmp_path):
    url = f"sqlite:///{tmp_path / 'hp.db'}"
    seeded(url, tool_template=False)
    untemplated = export(url)
    said = " ".join(untemplated.stdout.split())
    assert untemplated.returncode == 2 and "tool:search" in said and "runtime template" in said, said
    missing = export(url, "--version", "9")
    assert missing.returncode == 2 and "no placement version 9" in " ".join(missing.stdout.split())
