"""The Kubernetes manifests in deploy/kubernetes/: valid against the API's schemas, and consistent
with each other and with the application they deploy (its settings, routes and ports)."""

import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from sqlalchemy.pool import StaticPool
from sqlmodel import create_engine

from controlplane.app import create_app
from controlplane.settings import Settings
from controlplane.workers import connections_needed

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.34"

# Settings other issues are adding in parallel; the Deployment may name them before Settings has them.
PENDING_SETTINGS: set[str] = set()

# What PostgreSQL offers by default: max_connections 100 less superuser_reserved_connections 3.
POSTGRES_DEFAULT_CONNECTIONS = 97

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Kinds kubernetes-validate has no schema for, each checked another way, by name:
#  - ScaledObject (a KEDA CRD): against SCALED_OBJECT_SCHEMA, written from KEDA's ScaledObject
#    specification (keda.sh/docs/latest/reference/scaledobject-spec), closed where we use it.
#  - Kustomization: a kustomize build file, never sent to the API server; test_kustomization_*.
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
        },
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "additionalProperties": False,
                    "properties": {
                        "failureThreshold": {"type": "integer", "minimum": 1},
                        "replicas": {"type": "integer", "minimum": 0},
                    },
                },
                "advanced": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object"},
                            # KEDA reads every trigger parameter as a string.
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}

# The Prometheus scaler's parameters (keda.sh/docs/latest/scalers/prometheus), those we may use.
PROMETHEUS_TRIGGER_SCHEMA = {
    "type": "object",
    "required": ["serverAddress", "query", "threshold"],
    "additionalProperties": False,
    "properties": {
        "serverAddress": {"type": "string", "pattern": "^https?://"},
        "query": {"type": "string"},
        "threshold": {"type": "string", "pattern": r"^[0-9.]+$"},
        "activationThreshold": {"type": "string", "pattern": r"^[0-9.]+$"},
        "namespace": {"type": "string"},
        "ignoreNullValues": {"enum": ["true", "false"]},
        "unsafeSsl": {"enum": ["true", "false"]},
    },
}


def load_documents(root: Path) -> list[tuple[Path, dict]]:
    """Every YAML document under `root` (multi-document files too), with the file it came from."""
    documents = []
    for path in sorted(root.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                documents.append((path, doc))
    return documents


def validate(doc: dict) -> None:
    """Raise when `doc` is not a valid object of its kind."""
    if doc["kind"] == "ScaledObject":
        jsonschema.validate(doc, SCALED_OBJECT_SCHEMA)
        for trigger in doc["spec"]["triggers"]:
            if trigger["type"] == "prometheus":
                jsonschema.validate(trigger["metadata"], PROMETHEUS_TRIGGER_SCHEMA)
        return
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


DOCUMENTS = load_documents(DEPLOY)
OBJECTS = [(path, doc) for path, doc in DOCUMENTS if doc["kind"] != "Kustomization"]
KUSTOMIZATION = next(doc for _, doc in DOCUMENTS if doc["kind"] == "Kustomization")


def objects(kind: str) -> list[dict]:
    return [doc for _, doc in OBJECTS if doc["kind"] == kind]


def one(kind: str) -> dict:
    (found,) = objects(kind)
    return found


def kustomized_paths() -> set[Path]:
    return {DEPLOY / name for name in KUSTOMIZATION["resources"]}


@pytest.mark.parametrize(
    "doc", [doc for _, doc in OBJECTS], ids=[f"{p.relative_to(DEPLOY)}:{d['kind']}/{d['metadata']['name']}" for p, d in OBJECTS]
)
def test_every_object_is_valid_for_its_kind(doc):
    validate(doc)


def test_validation_rejects_a_misspelt_field(tmp_path):
    broken = tmp_path / "deployment.yaml"
    broken.write_text((DEPLOY / "deployment.yaml").read_text().replace("readinessProbe:", "readinesProbe:"))
    ((_, doc),) = load_documents(tmp_path)
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate(doc)


def test_validation_rejects_a_scaled_object_with_a_misspelt_field():
    ((_, doc),) = [(p, d) for p, d in OBJECTS if d["kind"] == "ScaledObject"]
    doc = yaml.safe_load(yaml.safe_dump(doc).replace("minReplicaCount", "minReplicas"))
    with pytest.raises(jsonschema.ValidationError, match="minReplicas"):
        validate(doc)


def test_kustomization_lists_exactly_the_manifests_to_apply():
    """Everything under deploy/kubernetes/ is applied, except examples/ and *.example.yaml."""
    on_disk = {
        path for path in DEPLOY.glob("*.yaml") if path.name != "kustomization.yaml" and not path.name.endswith(".example.yaml")
    }
    assert kustomized_paths() == on_disk


def test_kustomization_builds_the_listed_objects():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed: `kubectl kustomize` not checked")
    built = subprocess.run(["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True).stdout
    names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(built)}
    listed = {(d["kind"], d["metadata"]["name"]) for p, d in OBJECTS if p in kustomized_paths()}
    assert names == listed


def test_secret_is_only_an_example():
    (secret,) = [(p, d) for p, d in OBJECTS if d["kind"] == "Secret"]
    assert secret[0].name.endswith(".example.yaml")
    assert secret[0] not in kustomized_paths()


def container() -> dict:
    (only,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return only


def test_deployment_env_names_are_heteroplane_settings():
    names = {env["name"] for env in container()["env"]}
    known = {f"HETEROPLANE_{field.upper()}" for field in Settings.model_fields}
    assert names - known <= PENDING_SETTINGS
    assert {"HETEROPLANE_API_HOST", "HETEROPLANE_OTLP_HOST", "HETEROPLANE_DATABASE_URL"} <= names


def test_database_url_comes_from_the_secret_the_example_names():
    (url,) = [env for env in container()["env"] if env["name"] == "HETEROPLANE_DATABASE_URL"]
    ref = url["valueFrom"]["secretKeyRef"]
    secret = one("Secret")
    assert (ref["name"], ref["key"]) == (secret["metadata"]["name"], "url")
    assert secret["metadata"]["namespace"] == one("Deployment")["metadata"]["namespace"]
    assert ref["key"] in secret["stringData"]


def deployment_settings() -> Settings:
    """The Settings a pod of the Deployment would read (literal values only)."""
    values = {
        env["name"].removeprefix("HETEROPLANE_").lower(): env["value"]
        for env in container()["env"]
        if "value" in env and env["name"] not in PENDING_SETTINGS
    }
    return Settings(_env_file=None, **values)


def test_pods_fit_in_a_default_postgresql():
    deployment = one("Deployment")
    surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    pods = deployment["spec"]["replicas"] + surge
    assert pods * connections_needed(deployment_settings()) <= POSTGRES_DEFAULT_CONNECTIONS


def test_probes_hit_a_route_the_app_serves():
    engine = create_engine("sqlite://", poolclass=StaticPool)
    served = create_app(engine, Settings(_env_file=None)).openapi()["paths"]
    probes = [container()[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")]
    http_paths = {probe["httpGet"]["path"] for probe in probes if "httpGet" in probe}
    assert http_paths == {"/api/v1/ready"}
    for path in http_paths:
        assert "get" in served[path]
        # Probes carry no token: the route must accept none (an empty requirement in OpenAPI).
        assert {} in served[path]["get"].get("security", [{}])


def test_liveness_does_not_restart_pods_over_a_degraded_dependency():
    """/health answers 503 while PostgreSQL is down; restarting every pod for that would not help."""
    assert "httpGet" not in container()["livenessProbe"]


def test_ports_match_the_service_and_the_app_defaults():
    defaults = Settings(_env_file=None)
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    assert ports == {"http": defaults.api_port, "otlp-http": defaults.otlp_port}
    service = one("Service")
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert (ports[target] if isinstance(target, str) else target) == port["port"], port["name"]
    assert {port["name"] for port in service["spec"]["ports"]} == set(ports)
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_pods_run_restricted():
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {mount["mountPath"] for mount in container()["volumeMounts"]}
    assert {"/tmp", str(deployment_settings().data_dir)} <= mounts


def rules() -> list[dict]:
    return [rule for kind in ("Role", "ClusterRole") for role in objects(kind) for rule in role["rules"]]


def test_rbac_has_no_wildcards_and_no_secrets():
    for rule in rules():
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert "secrets" not in rule["resources"], rule
        assert "nonResourceURLs" not in rule, rule


def test_rbac_grants_what_the_actuator_needs():
    """The access designed for the Kubernetes actuator, rule by rule (nothing more)."""
    granted = {
        (role["kind"], role["metadata"].get("namespace"), group, resource, verb)
        for kind in ("Role", "ClusterRole")
        for role in objects(kind)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    read = ("get", "list", "watch")
    expected = (
        {("ClusterRole", None, "", "nodes", v) for v in read}
        | {("ClusterRole", None, "resource.k8s.io", "resourceslices", v) for v in read}
        | {("Role", "heteroplane-workloads", "apps", "deployments", v)
           for v in (*read, "create", "patch", "update", "delete")}
        | {("Role", "heteroplane-workloads", "apps", "deployments/status", "get")}
        | {("Role", "heteroplane-workloads", "resource.k8s.io", "resourceclaimtemplates", v)
           for v in (*read, "create", "patch", "delete")}
        | {("Role", "heteroplane", "coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    )
    assert granted == expected


def test_bindings_bind_the_deployments_service_account():
    account = one("ServiceAccount")
    assert one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    roles = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for _, d in OBJECTS if "rules" in d}
    bound = set()
    for binding in objects("RoleBinding") + objects("ClusterRoleBinding"):
        assert binding["subjects"] == [subject]
        ref = binding["roleRef"]
        bound.add((ref["kind"], ref["name"], binding["metadata"].get("namespace")))
    assert bound == roles


def test_namespaces_exist():
    namespaces = {ns["metadata"]["name"] for ns in objects("Namespace")}
    used = {d["metadata"]["namespace"] for _, d in OBJECTS if "namespace" in d["metadata"]}
    assert used <= namespaces


def test_autoscaling_examples_target_the_desired_replicas_metric():
    (scaled,) = objects("ScaledObject")
    (hpa,) = objects("HorizontalPodAutoscaler")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["query"].startswith("max(heteroplane_desired_replicas{")
    assert trigger["metricType"] == "AverageValue" and trigger["metadata"]["threshold"] == "1"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"].startswith("heteroplane_desired_replicas")
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    assert scaled["spec"]["scaleTargetRef"] == hpa["spec"]["scaleTargetRef"]
    # kubernetes-validate does not check label syntax; the API server does.
    for value in metric["external"]["metric"]["selector"]["matchLabels"].values():
        assert LABEL_VALUE.match(value), value
