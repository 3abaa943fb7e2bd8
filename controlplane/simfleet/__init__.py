"""The simulated fleet: the embedded demo cluster, a peer of the Kubernetes actuator.

It touches the rest of heteroplane only through the Actuator protocol
(controlplane.actuators.base), OTLP spans it sends to the collector, and the
Prometheus metrics it serves.
"""

from controlplane.simfleet.apps import APPS, CODING_AGENT, DOC_PIPELINE, RAG_CHATBOT, App
from controlplane.simfleet.driver import LoadDriver
from controlplane.simfleet.fleet import ClassUtilisation, SimulatedFleet

__all__ = ["APPS", "CODING_AGENT", "DOC_PIPELINE", "RAG_CHATBOT", "App", "ClassUtilisation", "LoadDriver",
           "SimulatedFleet"]
