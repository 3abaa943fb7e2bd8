"""Objects the API server double's helpers write as the cluster would: Node conditions, DRA devices, and the
status the deployment controller reports."""

from typing import Any

from tests.k8s.double_fields import Obj
from tests.k8s.double_store import now_timestamp


def ready_condition(ready: bool) -> Obj:
    now = now_timestamp()
    return {"type": "Ready", "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is posting ready status" if ready else "container runtime network not ready",
            "lastHeartbeatTime": now, "lastTransitionTime": now}


def device(device: dict[str, Any]) -> Obj:
    def typed(value: Any) -> Obj:
        kind = "bool" if isinstance(value, bool) else "int" if isinstance(value, int) else "string"
        return {kind: value}

    return {
        "name": device["name"],
        "attributes": {k: typed(v) for k, v in device.get("attributes", {}).items()},
        "capacity": {k: {"value": str(v)} for k, v in device.get("capacity", {}).items()},
    }


def deployment_status(deployment: Obj, *, failing: bool) -> Obj:
    """What the deployment controller reports once it has acted on the current spec (or given up, when failing)."""
    replicas = deployment["spec"].get("replicas", 1)
    ready = max(replicas - 1, 0) if failing else replicas
    now = now_timestamp()
    available = "True" if ready >= replicas else "False"
    progressing = ("False", "ProgressDeadlineExceeded") if failing else ("True", "NewReplicaSetAvailable")
    return {
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
        **({"unavailableReplicas": replicas - ready} if ready < replicas else {}),
        "conditions": [
            {"type": "Available", "status": available,
             "reason": "MinimumReplicasAvailable" if available == "True" else "MinimumReplicasUnavailable",
             "message": "Deployment has minimum availability." if available == "True"
             else "Deployment does not have minimum availability.",
             "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Progressing", "status": progressing[0], "reason": progressing[1],
             "message": f'ReplicaSet "{deployment["metadata"]["name"]}" has '
             + ("timed out progressing." if failing else "successfully progressed."),
             "lastUpdateTime": now, "lastTransitionTime": now},
        ],
    }
