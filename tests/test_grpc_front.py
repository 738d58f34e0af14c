"""The gRPC front of `codistill serve`: requests sized before a real tritonserver sees them."""

import queue
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from tests.servers.triton_server import group_rss_mib
from tests.test_serving import MAX_PIXELS, MODELS, direct, infer

pytestmark = pytest.mark.integration
INFER = "/inference.GRPCInferenceService/ModelInfer"


def send(url: str, message: bytes, method: str = INFER) -> bytes:
    """Send ``message`` as it is to ``method``; the reply's bytes (grpc.RpcError if refused)."""
    with grpc.insecure_channel(url) as channel:
        return channel.unary_unary(method)(message, timeout=60)


def request(shape: list[int], raw: bytes | None = b"", model: str = MODELS[1]) -> bytes:
    """A ModelInferRequest for one UINT8 input ``image`` carrying ``raw`` (None: no raw data)."""
    tensor = pb.ModelInferRequest.InferInputTensor(name="image", datatype="UINT8", shape=shape)
    message = pb.ModelInferRequest(model_name=model, inputs=[tensor])
    if raw is not None:
        message.raw_input_contents.append(raw)
    return message.SerializeToString()


def assert_still_serving(server, repository) -> None:
    """A correct gRPC request still gets the graph's labels, and the server never restarted."""
    good = np.full((1, 32, 48, 3), 70, np.uint8)
    answer = infer(triton_grpc, server["urls"]["grpc"], MODELS[1], good)
    assert np.array_equal(answer["labels"], direct(repository, MODELS[1], good)["labels"])
    assert "restart" not in server["log"].read_text()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # the shape of the ~90-byte HTTP request that once aborted tritonserver
        (request([1, 100000, 100000, 3]), "declares 30000000000 bytes, over this server's limit"),
        (request([1, -32, 48, 3]), "shape [1, -32, 48, 3] has a negative dimension"),
        (request([1, 32, 48, 3], b"\0" * 10), "needs 4608 bytes, the request holds 10"),
        (request([1, 32, 48, 3], None), "needs 4608 bytes, the request holds 0"),
        (request([32, 48, 3], b"\0" * 4608), "has 3 dimensions; the model takes 4"),
        (b"\xff\xff\xff not protobuf", "not an inference request"),
        (pb.ModelInferRequest(model_name=MODELS[1]).SerializeToString(), "names no inputs"),
    ],
    ids=["huge-shape", "negative", "short-raw", "no-data", "rank-3", "garbage", "no-inputs"],
)
def test_bad_grpc_requests_are_refused_before_tritonserver_sizes_them(
    server, repository, message, expected
):
    with pytest.raises(grpc.RpcError) as refused:
        send(server["urls"]["grpc"], message)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in refused.value.details() and "\n" not in refused.value.details()
    assert_still_serving(server, repository)


def test_a_grpc_message_over_the_budget_is_refused_unread_and_costs_no_memory(server, repository):
    budget = MAX_PIXELS * 3
    oversize = request([1, 4096, 4096, 3], b"\0" * (4096 * 4096 * 3))  # 50 MB, 1365 x budget
    before = group_rss_mib(server["process"].pid)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as refused:
        send(server["urls"]["grpc"], oversize)
    elapsed = time.monotonic() - started
    after = group_rss_mib(server["process"].pid)
    print(f"{refused.value.code()} in {elapsed:.2f} s; resident MiB {before:.0f} -> {after:.0f}")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(budget) in refused.value.details() or "larger than max" in refused.value.details()
    assert after - before < 16  # the 50 MB were never held
    assert_still_serving(server, repository)


@pytest.mark.parametrize(
    "call",
    [
        lambda client: client.get_model_repository_index(),
        lambda client: client.load_model(MODELS[0]),
        lambda client: client.unload_model(MODELS[0]),
        lambda client: client.register_system_shared_memory("region", "/codistill-x", 64),
        lambda client: client.get_system_shared_memory_status(),
        lambda client: client.update_log_settings({"log_verbose_level": 1}),
        lambda client: client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}),
    ],
    ids=["index", "load", "unload", "shm-register", "shm-status", "log", "trace"],
)
def test_restricted_grpc_apis_answer_permission_denied(server, repository, call):
    client = triton_grpc.InferenceServerClient(server["urls"]["grpc"])
    try:
        with pytest.raises(InferenceServerException) as refused:
            call(client)
        assert refused.value.status() == "StatusCode.PERMISSION_DENIED"
        assert "is not served here" in refused.value.message()
        assert all(client.is_model_ready(model) for model in MODELS)  # nothing was unloaded
    finally:
        client.close()
    assert_still_serving(server, repository)


def test_reads_pass_the_grpc_front_unchanged(server, repository):
    client = triton_grpc.InferenceServerClient(server["urls"]["grpc"])
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata().name.startswith("codistill-")
        for model in MODELS:
            config = client.get_model_config(model).config
            assert config.name == model and config.input[0].name == "image"
            assert client.get_inference_statistics(model).model_stats[0].name == model
    finally:
        client.close()


def test_a_stream_gets_an_answer_or_a_refusal_for_each_request(server, repository):
    replies: queue.Queue = queue.Queue()
    client = triton_grpc.InferenceServerClient(server["urls"]["grpc"])
    good = np.full((1, 32, 48, 3), 20, np.uint8)
    huge = triton_grpc.InferInput("image", list(good.shape), "UINT8")
    huge.set_data_from_numpy(good)
    huge.set_shape([1, 100000, 100000, 3])  # declared far over the data it carries
    tensor = triton_grpc.InferInput("image", list(good.shape), "UINT8")
    tensor.set_data_from_numpy(good)
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        client.async_stream_infer(MODELS[1], [huge], request_id="huge")
        client.async_stream_infer(MODELS[1], [tensor], request_id="good")
        first, second = replies.get(timeout=60), replies.get(timeout=60)
    finally:
        client.stop_stream()
        client.close()
    assert first[0] is None and "over this server's limit" in first[1].message()
    assert second[1] is None
    expected = direct(repository, MODELS[1], good)["labels"]
    assert np.array_equal(second[0].as_numpy("labels"), expected)
    assert second[0].get_response().id == "good"
