"""`codistill manifests`: Kubernetes objects valid to their API, and caps that match the front."""

import http.client
import json
from pathlib import Path

import kubernetes.client
import pytest
import yaml

from codistill.cli import build_parser, main
from codistill.serving.front import RGB_BYTES, start_front
from codistill.serving.kubernetes import MIB

MODEL_KINDS = {
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "Ingress": "V1Ingress",
}
MAX_PIXELS = 1024 * 768


def generate(tmp_path: Path, *options: str) -> dict[str, dict]:
    """Run the command; its objects by kind and name (``Service/codistill-serving``)."""
    out = tmp_path / "kubernetes.yaml"
    argv = ["manifests", "--ingress-host", "seg.example.com", "--out", str(out), *options]
    assert main(argv) == 0
    documents = list(yaml.safe_load_all(out.read_text()))
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in documents}


def containers(objects: dict[str, dict]) -> dict[str, dict]:
    """The serving pod's containers by name."""
    pod = objects["Deployment/codistill-serving"]["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["containers"]}


@pytest.fixture
def objects(tmp_path) -> dict[str, dict]:
    return generate(tmp_path, "--max-pixels", str(MAX_PIXELS))


def test_every_object_is_valid_to_its_kubernetes_api_model(tmp_path):
    api = kubernetes.client.ApiClient()
    documents = generate(tmp_path, "--max-pixels", str(MAX_PIXELS)).values()
    assert sorted(d["kind"] for d in documents) == ["Deployment", "Ingress", "Ingress", "Service"]
    for document in documents:
        model = api._ApiClient__deserialize(document, MODEL_KINDS[document["kind"]])
        # a misspelled or misplaced field would be dropped by the model, a wrong type refused
        assert api.sanitize_for_serialization(model) == document


def test_the_ingress_caps_the_body_at_what_the_front_reads(objects):
    annotation = "nginx.ingress.kubernetes.io/proxy-body-size"
    cap = (
        int(objects["Ingress/codistill-serving"]["metadata"]["annotations"][annotation][:-1]) * MIB
    )
    front, _ = start_front("127.0.0.1", 0, ("127.0.0.1", 9), MAX_PIXELS * RGB_BYTES, {})
    try:
        # the ingress never refuses a body the front reads, and lets little more through
        assert front.max_body < cap <= front.max_body + MIB
        port = front.server_address[1]
        for size, status in ((front.max_body, 400), (front.max_body + 1, 413)):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.putrequest("POST", "/v2/models/m/infer")
            connection.putheader("Content-Length", str(size))
            connection.endheaders()
            if status == 400:  # read, then refused as not an inference request
                connection.send(b"x" * size)
            answer = connection.getresponse()  # 413: answered from the length alone
            assert answer.status == status, json.loads(answer.read())
            connection.close()
    finally:
        front.shutdown()
        front.server_close()
    grpc_ingress = objects["Ingress/codistill-serving-grpc"]["metadata"]["annotations"]
    assert grpc_ingress["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    grpc_cap = int(grpc_ingress[annotation][:-1]) * MIB
    assert MAX_PIXELS * RGB_BYTES + 5 < grpc_cap < cap


def test_only_the_front_is_reachable_and_it_guards_triton_with_the_budget(objects):
    pod = containers(objects)
    triton = pod["triton"]["args"]
    assert "--http-address=127.0.0.1" in triton and "--grpc-address=127.0.0.1" in triton
    front = build_parser().parse_args(pod["front"]["command"][1:])
    assert front.max_pixels == MAX_PIXELS and front.host == "0.0.0.0"
    assert front.upstream == f"127.0.0.1:{_flag(triton, '--http-port')}"
    assert front.grpc_upstream == f"127.0.0.1:{_flag(triton, '--grpc-port')}"
    assert front.repository == Path(_flag(triton, "--model-repository"))
    assert front.model_config_name == _flag(triton, "--model-config-name") == "gpu"
    front_ports = {p["name"]: p["containerPort"] for p in pod["front"]["ports"]}
    assert front_ports == {"http": front.port, "grpc": front.grpc_port}
    service = objects["Service/codistill-serving"]
    targets = {p["targetPort"] for p in service["spec"]["ports"]}
    assert targets == {"http", "grpc", "metrics"}  # never Triton's HTTP or gRPC
    deployment = objects["Deployment/codistill-serving"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    for ingress in (d for d in objects.values() if d["kind"] == "Ingress"):
        (rule,) = ingress["spec"]["rules"]
        (path,) = rule["http"]["paths"]
        assert path["backend"]["service"]["port"]["name"] in {"http", "grpc"}
    assert pod["triton"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # the front is restarted only if it stops answering, never while Triton loads
    assert pod["front"]["livenessProbe"] == {"tcpSocket": {"port": "http"}, "periodSeconds": 10}
    assert pod["front"]["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_a_limit_of_whole_mib_still_fits_under_the_cap():
    from codistill.serving.kubernetes import ingress_body_size

    assert ingress_body_size(4 * MIB) == "5m" and ingress_body_size(4 * MIB - 100) == "4m"


def test_a_cpu_deployment_asks_for_no_gpu(tmp_path):
    objects = generate(tmp_path, "--model-config-name", "cpu")
    triton = containers(objects)["triton"]
    assert "--model-config-name=cpu" in triton["args"] and "resources" not in triton


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-pixels", "0"], "max_pixels: 0 is not a positive count"),
        (["--replicas", "-1"], "replicas: -1 is not a positive count"),
        (["--ingress-host", "https://seg.example.com"], "host: 'https://seg.example.com' is not"),
        (["--ingress-host", "Seg_Example.com"], "host: 'Seg_Example.com' is not a DNS name"),
        (["--models-claim", "My Models"], "models_claim: 'My Models' is not a DNS name"),
    ],
)
def test_bad_options_are_named_in_one_line_and_leave_the_old_file(
    tmp_path, capsys, options, message
):
    out = tmp_path / "kubernetes.yaml"
    out.write_text("# the manifests in use\n")
    argv = ["manifests", "--ingress-host", "seg.example.com", "--out", str(out), *options]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert out.read_text() == "# the manifests in use\n"


def _flag(args: list[str], name: str) -> str:
    """The value of ``--name=value`` in ``args``."""
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    return value
