"""Kubernetes manifests that serve a published model repository with Triton's official image.

One pod holds Triton, bound to loopback, and ``codistill front`` as a sidecar on the pod's
HTTP and gRPC ports, so no request reaches Triton unchecked; the Service targets the front
only, and the two Ingresses cap the body at the size the front reads, so the ingress refuses
an oversized request before it is buffered anywhere.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from codistill.serving.front import RGB_BYTES, grpc_message_limit, http_body_limit
from codistill.serving.limits import DEFAULT_MAX_PIXELS

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
APP = "codistill-serving"
MODELS_PATH = "/models"
TRT_CACHE_PATH = "/trt-cache"
FRONT_USER = 10001  # the component image's unprivileged user
PORTS = {"http": 8080, "grpc": 8081, "metrics": 8002}
TRITON_PORTS = {"http": 8000, "grpc": 8001}
MIB = 1 << 20
# What Kubernetes takes as a host or an object name (an RFC 1123 subdomain).
DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
FRAMING_BYTES = 64  # a gRPC message's prefix (5 bytes) and then some
# The paths of each protocol: one host serves both (gRPC's are /<service>/<method>).
ROUTES = {"http": "/v2", "grpc": "/inference.GRPCInferenceService"}


@dataclass(frozen=True)
class Deployment:
    """What the manifests are made from."""

    host: str
    front_image: str
    max_pixels: int = DEFAULT_MAX_PIXELS
    config_name: str = "cpu"
    models_claim: str = "codistill-models"
    tls_secret: str = "codistill-tls"
    replicas: int = 1
    triton_image: str = TRITON_IMAGE

    def __post_init__(self) -> None:
        for name in ("max_pixels", "replicas"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)} is not a positive count")
        for name in ("host", "models_claim", "tls_secret"):
            value = getattr(self, name)
            if not DNS_NAME.fullmatch(value) or len(value) > 253:
                raise ValueError(
                    f"{name}: {value!r} is not a DNS name (lower-case letters, digits, '-' "
                    "and '.'; no scheme, port or path)"
                )


def ingress_body_size(limit_bytes: int) -> str:
    """ingress-nginx's ``proxy-body-size`` above a limit: whole MiB, rounded up (``49m``).

    Strictly above it, with room for gRPC's 5-byte message prefix, so a body the front would
    read always passes the ingress.
    """
    return f"{math.ceil((limit_bytes + FRAMING_BYTES) / MIB)}m"


def _triton(deployment: Deployment) -> dict:
    """Triton's container, listening on loopback but for its metrics."""
    args = [
        "tritonserver",
        f"--model-repository={MODELS_PATH}",
        f"--model-config-name={deployment.config_name}",
        "--http-address=127.0.0.1",  # only the front, in the same pod, reaches it
        f"--http-port={TRITON_PORTS['http']}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={TRITON_PORTS['grpc']}",
        f"--metrics-port={PORTS['metrics']}",
        "--strict-readiness=true",
    ]
    container = {
        "name": "triton",
        "image": deployment.triton_image,
        "args": args,
        "ports": [{"name": "metrics", "containerPort": PORTS["metrics"]}],
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_PATH, "readOnly": True},
            {"name": "trt-cache", "mountPath": TRT_CACHE_PATH},
        ],
    }
    if deployment.config_name.startswith("gpu"):
        container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    return container


def _front(deployment: Deployment) -> dict:
    """The front's container: the pod's HTTP and gRPC ports, checked and relayed to Triton."""
    command = ["codistill", "front"]
    command += ["--upstream", f"127.0.0.1:{TRITON_PORTS['http']}"]
    command += ["--grpc-upstream", f"127.0.0.1:{TRITON_PORTS['grpc']}"]
    command += ["--repository", MODELS_PATH, "--model-config-name", deployment.config_name]
    command += ["--host", "0.0.0.0", "--port", str(PORTS["http"])]
    command += ["--grpc-port", str(PORTS["grpc"]), "--max-pixels", str(deployment.max_pixels)]
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5}
    return {
        "name": "front",
        "image": deployment.front_image,
        "command": command,
        "ports": [
            {"name": "http", "containerPort": PORTS["http"]},
            {"name": "grpc", "containerPort": PORTS["grpc"]},
        ],
        # ready when Triton is (the probe is relayed); alive while the front answers at all,
        # so a Triton still loading its models never gets the front restarted
        "readinessProbe": probe,
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": FRONT_USER,
            "allowPrivilegeEscalation": False,
        },
        "volumeMounts": [{"name": "models", "mountPath": MODELS_PATH, "readOnly": True}],
    }


def _ingress(name: str, deployment: Deployment, port: str, annotations: dict) -> dict:
    """An Ingress routing the paths of protocol ``port`` on the deployment's host."""
    backend = {"service": {"name": APP, "port": {"name": port}}}
    path = {"path": ROUTES[port], "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "labels": {"app": APP}, "annotations": annotations},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": [deployment.host], "secretName": deployment.tls_secret}],
            "rules": [
                {
                    "host": deployment.host,
                    "http": {"paths": [path]},
                }
            ],
        },
    }


def manifests(deployment: Deployment) -> list[dict]:
    """The Deployment, Service and two Ingresses (HTTP, gRPC) that serve the repository."""
    budget = deployment.max_pixels * RGB_BYTES
    labels = {"app": APP}
    pod = {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [_triton(deployment), _front(deployment)],
            "volumes": [
                {
                    "name": "models",
                    "persistentVolumeClaim": {
                        "claimName": deployment.models_claim,
                        "readOnly": True,
                    },
                },
                {"name": "trt-cache", "emptyDir": {}},
            ],
        },
    }
    service_ports = [
        {"name": name, "port": port, "targetPort": name} for name, port in PORTS.items()
    ]
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": APP, "labels": labels},
            "spec": {
                "replicas": deployment.replicas,
                "selector": {"matchLabels": labels},
                "template": pod,
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": APP, "labels": labels},
            "spec": {"selector": labels, "ports": service_ports},
        },
        _ingress(
            APP,
            deployment,
            "http",
            {
                "nginx.ingress.kubernetes.io/proxy-body-size": ingress_body_size(
                    http_body_limit(budget)
                )
            },
        ),
        _ingress(
            f"{APP}-grpc",
            deployment,
            "grpc",
            {
                "nginx.ingress.kubernetes.io/backend-protocol": "GRPC",
                "nginx.ingress.kubernetes.io/proxy-body-size": ingress_body_size(
                    grpc_message_limit(budget)
                ),
            },
        ),
    ]


def _plain_dumper() -> type:
    """A safe YAML dumper that writes a mapping used twice out twice (no anchors)."""
    import yaml

    class PlainDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: object) -> bool:
            return True

    return PlainDumper


def manifest_text(deployment: Deployment) -> str:
    """The manifests as one YAML stream, headed by how they were made."""
    import yaml

    header = (
        "# Generated by `codistill manifests`; the ingress body caps follow the front's for "
        f"--max-pixels {deployment.max_pixels}.\n"
    )
    return header + yaml.dump_all(manifests(deployment), Dumper=_plain_dumper(), sort_keys=False)
