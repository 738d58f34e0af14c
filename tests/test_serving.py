"""`codistill serve`: a real Triton server on loopback, called over HTTP and gRPC."""

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
import yaml
from tritonclient.utils import InferenceServerException

from codistill.config import parse_params
from codistill.serving.model_repository import write_model_repository
from codistill.serving.triton_config import read_config
from tests.conftest import REPO_ROOT, SHARED, over_repo, repo_params
from tests.servers.triton_server import TEST_MAX_PIXELS, triton_server

pytestmark = [pytest.mark.integration, pytest.mark.cost(145)]
MAX_PIXELS = TEST_MAX_PIXELS
MODELS = ("codistill_cnn", "codistill_vit")


def direct(repository: Path, model: str, image: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(repository / model / "1" / "model.onnx"))
    logits, labels = session.run(["logits", "labels"], {"image": image})
    return {"logits": logits, "labels": labels}


def infer(module, url: str, model: str, image: np.ndarray, dtype: str = "UINT8") -> dict:
    client = module.InferenceServerClient(url)
    tensor = module.InferInput("image", list(image.shape), dtype)
    tensor.set_data_from_numpy(image)
    outputs = [module.InferRequestedOutput(name) for name in ("logits", "labels")]
    result = client.infer(model, [tensor], outputs=outputs)
    return {name: result.as_numpy(name) for name in ("logits", "labels")}


def test_each_model_answered_its_warmup_request_before_the_server_was_ready(server):
    for model in MODELS:
        counted = re.search(
            rf'^nv_inference_request_success{{model="{model}",version="1"}} (\d+)',
            server["ready"],
            re.MULTILINE,
        )
        assert counted and int(counted.group(1)) == 1


def test_a_warmup_the_endpoint_refuses_stops_the_server_with_its_reason(repository, tmp_path):
    with (
        pytest.raises(RuntimeError, match="codistill_cnn: its warm-up request failed"),
        triton_server(repository, tmp_path / "serve.log", max_pixels=32 * 32),
    ):
        pass


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", MODELS)
def test_served_results_equal_onnx_runtime(server, repository, protocol, model):
    image = np.random.default_rng(0).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    module = {"http": http, "grpc": grpc}[protocol]
    served = infer(module, server["urls"][protocol], model, image)
    expected = direct(repository, model, image)
    assert served["labels"].dtype == np.uint8
    assert np.array_equal(served["labels"], expected["labels"])
    np.testing.assert_allclose(served["logits"], expected["logits"], atol=1e-5)


def test_concurrent_requests_of_different_sizes_each_get_their_own_answer(server, repository):
    rng = np.random.default_rng(1)
    sizes = [(32, 48), (64, 96), (48, 64), (32, 48), (96, 128), (64, 64)]
    images = [rng.integers(0, 256, (1, *s, 3), dtype=np.uint8) for s in sizes]
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(
            pool.map(lambda x: infer(http, server["urls"]["http"], MODELS[1], x), images)
        )
    for image, answer in zip(images, answers, strict=True):
        assert answer["labels"].shape == (1, *image.shape[1:3])
        # Triton may batch the two 32x48 requests; a batched run can differ in the last
        # bits, so compare logits with a tolerance and labels against the served logits.
        expected = direct(repository, MODELS[1], image)["logits"]
        np.testing.assert_allclose(answer["logits"], expected, atol=1e-4)
        assert np.array_equal(answer["labels"], answer["logits"].argmax(axis=1))


@pytest.mark.parametrize(
    ("image", "dtype", "model", "message"),
    [
        (np.zeros((1, 32, 32, 3), np.float32), "FP32", MODELS[0], "FP32"),
        (np.zeros((1, 32, 32, 3), np.float64), "FP64", MODELS[0], "FP64"),
        (np.zeros((1, 32, 32, 4), np.uint8), "UINT8", MODELS[0], r"\[1,32,32,4\]|shape"),
        (np.zeros((1, 32, 32, 3), np.uint8), "UINT8", "codistill_gan", "codistill_gan"),
        (
            np.zeros((1, 128, 128, 3), np.uint8),
            "UINT8",
            MODELS[1],
            # the HTTP front refuses it before tritonserver sizes it (gRPC: the model)
            r"^\[400\] input image: shape \[1, 128, 128, 3\] \(UINT8\) declares 49152 bytes, "
            r"over this server's limit of 36864 bytes per request",
        ),
        (
            np.zeros((1, 10, 10, 3), np.uint8),
            "UINT8",
            MODELS[0],
            r"^\[400\] image 10x10 is under the minimum 32x32$",
        ),
        (np.zeros((1, 1, 1, 3), np.uint8), "UINT8", MODELS[1], "image 1x1 is under the minimum"),
        (
            np.zeros((3, 64, 96, 3), np.uint8),
            "UINT8",
            MODELS[1],
            r"^\[400\] input image: shape \[3, 64, 96, 3\] \(UINT8\) declares 55296 bytes",
        ),
    ],
    ids=[
        "float-image",
        "wrong-dtype",
        "wrong-channels",
        "unknown-model",
        "oversize",
        "small",
        "1x1",
        "batch-over-budget",
    ],
)
def test_bad_requests_get_a_one_line_client_error_and_the_server_keeps_serving(
    server, repository, image, dtype, model, message
):
    with pytest.raises(InferenceServerException, match=message) as refused:
        infer(http, server["urls"]["http"], model, image, dtype)
    assert refused.value.status() == ("400" if model in MODELS else "404")
    assert "Traceback" not in refused.value.message() and "\n" not in refused.value.message()
    good = np.full((1, 32, 48, 3), 128, np.uint8)
    answer = infer(http, server["urls"]["http"], MODELS[0], good)
    assert np.array_equal(answer["labels"], direct(repository, MODELS[0], good)["labels"])


def test_the_pixel_budget_counts_every_image_of_a_request(server, repository):
    rng = np.random.default_rng(3)
    within = rng.integers(0, 255, (2, 64, 96, 3), dtype=np.uint8)  # 2 x 6144 = the limit
    answer = infer(http, server["urls"]["http"], MODELS[1], within)
    assert np.array_equal(answer["labels"], direct(repository, MODELS[1], within)["labels"])
    over_budget = np.concatenate([within, within[:1]])
    with pytest.raises(InferenceServerException, match="declares 55296 bytes, over") as over:
        infer(grpc, server["urls"]["grpc"], MODELS[1], over_budget)
    assert over.value.status() == "StatusCode.INVALID_ARGUMENT"


def real_camvid_test_image() -> Path:
    """A CamVid test PNG as the DVC remote stores it (by content hash), or a skip."""
    remote = SHARED / "dvc-remote" / "files" / "md5"
    digest = yaml.safe_load((REPO_ROOT / "data.dvc").read_text())["outs"][0]["md5"]
    listing = remote / digest[:2] / digest[2:]
    if not listing.is_file():
        pytest.skip("no shared DVC remote with CamVid")
    entry = next(e for e in json.loads(listing.read_text()) if "/test/" in e["relpath"])
    return remote / entry["md5"][:2] / entry["md5"][2:]


def test_a_real_camvid_png_sent_as_uint8_gets_the_labels_of_the_fp32_path(
    repository, exported_students, tmp_path
):
    """The served graph normalizes and resizes inside; the evaluation path does it in torch."""
    import torch
    from PIL import Image

    from codistill.export.onnx_graph import Normalization
    from codistill.export.parity import evaluation_input
    from codistill.models import build_student, segment

    rgb = np.asarray(Image.open(real_camvid_test_image()).convert("RGB"))
    assert rgb.shape == (360, 480, 3)
    contract = json.loads((exported_students / "preprocessing.json").read_text())
    stats = contract["normalization_in_graph"]
    normalization = Normalization(tuple(stats["mean"]), tuple(stats["std"]))
    pixels = evaluation_input(torch.from_numpy(rgb)[None], normalization)
    models = repo_params().models
    with triton_server(repository, tmp_path / "serve.log", 360 * 480) as running:
        for role, cfg in (("cnn", models.cnn), ("vit", models.vit)):
            served = infer(http, running["urls"]["http"], f"codistill_{role}", rgb[None])
            student = build_student(cfg, 11).eval()
            student.load_state_dict(torch.load(exported_students / f"{role}.pt"))
            with torch.no_grad():
                fp32 = segment(student, pixels, contract["inference_scale"]).argmax(dim=1)
            assert served["labels"].shape == (1, 360, 480)
            assert (served["labels"] == fp32.numpy()).mean() >= 0.999


def test_health_and_metrics_endpoints_answer_on_loopback(server, repository):
    client = http.InferenceServerClient(server["urls"]["http"])
    assert client.is_server_live() and client.is_server_ready()
    assert all(client.is_model_ready(name) for name in MODELS)
    for name in MODELS:  # batching as the repository's config says
        batching = client.get_model_config(name)["dynamic_batching"]
        expected = read_config(repository / name / "configs" / "cpu.pbtxt").dynamic_batching
        assert batching["preferred_batch_size"] == list(expected.preferred_batch_size)
    metrics_url = f"http://{server['urls']['metrics']}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        assert "nv_inference_request_success" in response.read().decode()
    assert "on http://127.0.0.1:" in server["log"].read_text()


def test_sigterm_stops_the_server_cleanly_and_the_next_start_removes_a_killed_ones_workspace(
    repository, tmp_path
):
    def workspace_of(running):
        return Path(re.search(r"workspace (\S+);", running["log"].read_text()).group(1))

    import time

    from tests.servers.triton_server import group_pids

    with triton_server(repository, tmp_path / "killed.log", MAX_PIXELS) as running:
        killed = workspace_of(running)
        running["process"].send_signal(signal.SIGKILL)  # codistill serve alone
        running["process"].wait(timeout=60)
        # its tritonserver and model processes follow it instead of holding the ports
        deadline = time.monotonic() + 60
        while group_pids(running["process"].pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not group_pids(running["process"].pid)
    assert killed.is_dir()  # nobody could clean up after a SIGKILL
    killed_lock = Path(f"/dev/shm/codistill{killed.name.removeprefix('codistill-triton-')}.lock")
    assert killed_lock.is_file()
    with triton_server(repository, tmp_path / "serve.log", MAX_PIXELS) as running:
        workspace = workspace_of(running)
        assert workspace.is_dir() and not killed.exists()
        assert not list(Path("/dev/shm").glob(f"{killed_lock.stem}*"))  # lock and regions
        # the regions that carry request tensors between processes are the owner's alone
        token = workspace.name.removeprefix("codistill-triton-")
        regions = list(Path("/dev/shm").glob(f"codistill{token}-*"))
        assert regions and all(r.stat().st_mode & 0o077 == 0 for r in regions), regions
        assert f"removed {killed}, the workspace of a server that is gone" in (
            running["log"].read_text()
        )
        running["process"].send_signal(signal.SIGTERM)
        assert running["process"].wait(timeout=60) == 0
    assert "server stopped" in (tmp_path / "serve.log").read_text()
    assert not workspace.exists()


def test_a_crashed_tritonserver_is_restarted_logged_in_one_line_and_counted(repository, tmp_path):
    import time

    from tests.servers.triton_server import group_pids

    def restarts_gauge(running) -> dict[str, float]:
        url = f"http://{running['urls']['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        found = re.findall(r'^codistill_server_restarts\{model="(\w+)"\} ([\d.]+)$', text, re.M)
        return {model: float(value) for model, value in found}

    def tritonserver(running) -> int:
        for pid in group_pids(running["process"].pid):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "tritonserver":
                return pid
        raise AssertionError("no tritonserver in the group")

    image = np.full((1, 32, 48, 3), 90, np.uint8)
    with triton_server(repository, tmp_path / "serve.log", MAX_PIXELS) as running:
        assert restarts_gauge(running) == dict.fromkeys(MODELS, 0.0)
        first = tritonserver(running)
        os.kill(first, signal.SIGABRT)  # as the bad_alloc of an oversized request did
        deadline = time.monotonic() + 180
        while "serving again after restart 1" not in running["log"].read_text():
            assert time.monotonic() < deadline, running["log"].read_text()[-2000:]
            assert running["process"].poll() is None, running["log"].read_text()[-2000:]
            time.sleep(0.5)
        assert tritonserver(running) != first
        lines = running["log"].read_text().splitlines()
        assert "tritonserver stopped (signal 6 (SIGABRT)); restart 1" in lines
        assert "Traceback" not in running["log"].read_text()
        for model, (module, protocol) in zip(MODELS, [(http, "http"), (grpc, "grpc")], strict=True):
            answer = infer(module, running["urls"][protocol], model, image)
            assert np.array_equal(answer["labels"], direct(repository, model, image)["labels"])
        assert restarts_gauge(running) == dict.fromkeys(MODELS, 1.0)


def test_triton_never_gets_a_port_a_front_will_bind(monkeypatch):
    from codistill.serving import local_server
    from codistill.serving.local_server import Ports, private_ports

    draws = iter([8001, 5000, 8000, 5000, 8002, 6000])  # public ports and a repeat among them
    monkeypatch.setattr(local_server, "free_port", lambda: next(draws))
    assert private_ports(Ports(8000, 8001, 8002)) == Ports(5000, 6000, 8002)


def test_a_server_that_keeps_stopping_is_given_up_in_one_line():
    from codistill.serving.errors import ServerError
    from codistill.serving.local_server import RestartBudget

    budget = RestartBudget(limit=2, window_s=60.0)
    budget.spend("signal 6 (SIGABRT)")
    budget.spend("signal 6 (SIGABRT)")
    assert budget.count == 2
    with pytest.raises(ServerError) as given_up:
        budget.spend("signal 6 (SIGABRT)")
    assert str(given_up.value) == (
        "tritonserver stopped (signal 6 (SIGABRT)) 3 times within 60 s; not restarting it "
        "again; its log is above"
    )


def test_the_largest_allowed_image_leaves_the_servers_memory_where_it_was(repository, tmp_path):
    """Each model answers the largest image allowed three times, with no growth.

    Three refused larger ones grow it no further.
    """
    import time

    from tests.servers.triton_server import group_rss_mib

    side = 512
    rng = np.random.default_rng(4)
    with triton_server(repository, tmp_path / "serve.log", side * side) as running:
        image = rng.integers(0, 256, (1, side, side, 3), dtype=np.uint8)
        ready = group_rss_mib(running["process"].pid)
        after = {}
        for model in MODELS:
            for _ in range(3):
                labels = infer(http, running["urls"]["http"], model, image)["labels"]
                assert labels.shape == (1, side, side)
                time.sleep(0.5)
                after.setdefault(model, []).append(group_rss_mib(running["process"].pid))
        oversize = rng.integers(0, 256, (1, 2 * side, 2 * side, 3), dtype=np.uint8)
        refused = []
        for model in MODELS * 3:
            with pytest.raises(InferenceServerException, match="over this server's limit"):
                infer(http, running["urls"]["http"], model, oversize)
            time.sleep(0.5)
            refused.append(group_rss_mib(running["process"].pid))
    print(f"resident MiB: ready {ready:.0f}, after each request {after}, refused {refused}")
    for model, sizes in after.items():
        assert sizes[-1] - sizes[0] < 32, model  # nothing accumulates request after request
    assert max(after[MODELS[-1]]) - ready < 512  # all that two large requests may keep
    assert refused[-1] - after[MODELS[-1]][-1] < 32  # a refused request keeps nothing


GRAPH_PEAK = """
import resource, sys
import numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.enable_cpu_mem_arena = False  # as the served model runs it
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
side = int(sys.argv[2])
session.run(["labels"], {"image": np.zeros((1, side, side, 3), np.uint8)})
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - loaded) / 1024)
"""


def test_the_default_budget_bounds_what_one_vit_request_costs(repository):
    """The ViT's attention grows with the square of an image's pixels (2048² took 8.2 GiB)."""
    import math

    from codistill.serving.limits import DEFAULT_MAX_PIXELS

    side = math.isqrt(DEFAULT_MAX_PIXELS)
    graph = repository / MODELS[1] / "1" / "model.onnx"
    run = subprocess.run(
        [sys.executable, "-c", GRAPH_PEAK, str(graph), str(side)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    peak = float(run.stdout)
    assert peak < 1024, f"{side}x{side}: {peak:.0f} MiB over the loaded graph"


HOLD_LOCK = """
import sys
from pathlib import Path
from codistill.serving.ownership import hold
assert hold(Path(sys.argv[1])) is not None
print("held", flush=True)
sys.stdin.read()
"""


def held_by_another_process(lock: Path) -> subprocess.Popen:
    """A child process that holds ``lock`` until its stdin closes."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline() == "held\n"
    return child


def test_only_shared_memory_of_servers_that_are_gone_is_removed(tmp_path):
    from codistill.serving.workspace import ServerWorkspace, remove_stale_regions

    ours = ServerWorkspace(root=tmp_path, shm=tmp_path)  # this process's server
    elsewhere = tmp_path / "codistilltokenB.lock"  # a server in another process (or namespace)
    child = held_by_another_process(elsewhere)
    (tmp_path / "codistilltokenC.lock").write_text("")  # a server that is gone
    names = [f"{ours.shm_prefix}a", "codistilltokenB-a", "codistilltokenC-a", "codistilltokenC-b"]
    names += ["codistill-notes"]  # not a server's
    for name in names:
        (tmp_path / name).write_bytes(b"region")
    try:
        assert remove_stale_regions(tmp_path) == [tmp_path / n for n in names[2:4]]
        assert not (tmp_path / "codistilltokenC.lock").exists()
        left = {p.name for p in tmp_path.iterdir()}
        assert {names[0], names[1], names[4], elsewhere.name} <= left
        assert not left & set(names[2:4])
    finally:
        child.communicate("")  # its process ends, so its lock is free
    assert remove_stale_regions(tmp_path) == [tmp_path / names[1]]
    ours.close()
    assert not ours.folder.exists() and not (tmp_path / names[0]).exists()
    assert {p.name for p in tmp_path.iterdir()} == {"codistill-notes"}


def test_only_workspaces_of_servers_that_are_gone_are_removed(tmp_path):
    from codistill.serving.workspace import LOCK_FILE, WORKSPACE_PREFIX, remove_stale_workspaces

    folders = {name: tmp_path / f"{WORKSPACE_PREFIX}{name}" for name in ("gone", "alive", "new")}
    for folder in folders.values():
        folder.mkdir()
    (folders["gone"] / LOCK_FILE).write_text("")  # its process no longer holds it
    child = held_by_another_process(folders["alive"] / LOCK_FILE)
    try:
        assert remove_stale_workspaces(tmp_path) == [folders["gone"]]
        assert [p.name for p in sorted(tmp_path.iterdir())] == [
            f"{WORKSPACE_PREFIX}alive",
            f"{WORKSPACE_PREFIX}new",  # no lock file yet: still starting
        ]
    finally:
        child.communicate("")
    assert remove_stale_workspaces(tmp_path) == [folders["alive"]]


def test_the_int8_config_serves_the_int8_graph_with_batching_off(exported_variants, tmp_path):
    settings = parse_params(over_repo({"serving": {"warmup_size": [64, 96]}}), "d").serving
    write_model_repository(exported_variants, tmp_path / "repo", settings, ("cnn", "vit"))
    image = np.random.default_rng(3).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    log = tmp_path / "serve.log"
    with triton_server(tmp_path / "repo", log, MAX_PIXELS, "cpu-int8", batching=False) as server:
        for model in MODELS:
            graph = tmp_path / "repo" / model / "1" / "model.int8.onnx"
            expected = ort.InferenceSession(str(graph)).run(["logits"], {"image": image})[0]
            served = infer(http, server["urls"]["http"], model, image)
            np.testing.assert_allclose(served["logits"], expected, atol=1e-5)
            fp32 = direct(tmp_path / "repo", model, image)["logits"]
            assert np.abs(served["logits"] - fp32).max() > 1e-4  # not the FP32 graph
            config = http.InferenceServerClient(server["urls"]["http"]).get_model_config(model)
            assert config["max_batch_size"] == settings.max_batch_size
            assert "dynamic_batching" not in config
    announced = log.read_text()
    assert "(cpu-int8 configs, dynamic batching off, warm-up on)" in announced
    assert all(f"{model} (model.int8.onnx)" in announced for model in MODELS)


@pytest.fixture(scope="module")
def preprocessing(exported_students) -> Path:
    """The client contract the export stage writes next to the graphs."""
    return exported_students / "preprocessing.json"


def test_infer_writes_colour_masks_matching_the_graph_and_names_bad_files(
    server, repository, preprocessing, tmp_path, capsys
):
    from PIL import Image

    from codistill.cli import main
    from codistill.serving.client import Preprocessing

    rgb = np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "street.png")
    (tmp_path / "b").mkdir()
    Image.fromarray(255 - rgb).save(tmp_path / "b" / "street.png")  # same name, other folder
    (tmp_path / "notes.png").write_text("not an image")
    argv = ["infer", str(tmp_path / "notes.png"), str(tmp_path / "street.png")]
    argv += [str(tmp_path / "b" / "street.png")]
    argv += ["--model", MODELS[1], "--url", server["urls"]["grpc"], "--protocol", "grpc"]
    argv += ["--out", str(tmp_path / "out"), "--preprocessing", str(preprocessing)]
    assert main(argv) == 2
    assert "notes.png: not a readable image" in capsys.readouterr().err
    prep = Preprocessing.load(preprocessing)
    expected = prep.colours(direct(repository, MODELS[1], prep.tensor(rgb))["labels"][0])
    mask = np.asarray(Image.open(tmp_path / "out" / "street.mask.png"))
    assert np.array_equal(mask, expected)
    assert Image.open(tmp_path / "out" / "street.overlay.png").size == (64, 48)
    assert not (tmp_path / "out" / "notes.mask.png").exists()
    other = prep.colours(direct(repository, MODELS[1], prep.tensor(255 - rgb))["labels"][0])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out/b/street.mask.png")), other)


def test_infer_refuses_two_inputs_that_would_write_one_result_before_any_request(
    preprocessing, tmp_path, capsys
):
    from PIL import Image

    from codistill.cli import main

    for name in ("x.png", "x.jpg"):
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / name)
    argv = ["infer", str(tmp_path / "x.png"), str(tmp_path / "x.jpg"), "--url", "127.0.0.1:9"]
    argv += ["--out", str(tmp_path / "out"), "--preprocessing", str(preprocessing)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "x.png and " in err and "x.jpg would both write x.mask.png" in err
    assert "no Triton server" not in err  # refused before reaching for the server
    assert not (tmp_path / "out").exists()


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every regular file under ``folder`` that is not a link, by relative path."""
    import hashlib

    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def test_infer_never_destroys_a_file_and_still_segments_the_other_images(
    server, preprocessing, tmp_path, capsys
):
    from PIL import Image

    from codistill.cli import main

    images = tmp_path / "in"
    images.mkdir()
    rgb = np.random.default_rng(5).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    for name in ("road.png", "road.mask.png", "good.png"):
        Image.fromarray(rgb).save(images / name)
    kept = tmp_path / "kept.txt"
    kept.write_text("a file a link at an output path points to")
    (images / "good.mask.png").symlink_to(kept)
    before = file_hashes(tmp_path)
    inputs = [str(images / n) for n in ("road.png", "road.mask.png", "good.png")]
    common = ["--url", server["urls"]["http"], "--preprocessing", str(preprocessing)]
    assert main(["infer", *inputs, "--out", str(images), *common]) == 2
    err = capsys.readouterr().err
    assert f"{images / 'road.mask.png'} is one of the input images" in err
    assert f"{images / 'good.mask.png'} is a symbolic link; not followed" in err
    assert len(err.strip().splitlines()) == 2
    after = file_hashes(tmp_path)
    assert {k: after[k] for k in before} == before  # inputs and the link's target untouched
    assert (images / "good.mask.png").is_symlink()
    # the one image with a free output was segmented
    assert set(after) - set(before) == {"in/road.mask.mask.png", "in/road.mask.overlay.png"}
    result = images / "road.mask.mask.png"
    written = result.stat().st_ino
    # a second run keeps the earlier result unless told to replace it
    again = ["infer", inputs[1], "--out", str(images), *common]
    assert main(again) == 2
    assert f"{result} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert result.stat().st_ino == written
    assert main([*again, "--overwrite"]) == 0
    assert result.stat().st_ino != written and file_hashes(tmp_path) == after
    # --overwrite never reaches an input or a link's target
    assert main(["infer", *inputs, "--out", str(images), "--overwrite", *common]) == 2
    assert {k: file_hashes(tmp_path)[k] for k in before} == before
    assert (images / "good.mask.png").is_symlink()


def test_an_output_hard_linked_to_an_input_is_refused_before_any_request(tmp_path):
    from codistill.serving.client import plan_outputs

    (tmp_path / "a.png").write_bytes(b"pixels")
    (tmp_path / "b.png").write_bytes(b"pixels")
    out = tmp_path / "out"
    out.mkdir()
    os.link(tmp_path / "a.png", out / "b.mask.png")  # the same file under an output's name
    planned, refused = plan_outputs([tmp_path / "a.png", tmp_path / "b.png"], out, True)
    assert set(planned) == {tmp_path / "a.png"}
    assert refused == {
        tmp_path / "b.png": f"{out / 'b.mask.png'} is one of the input images; choose another --out"
    }


def test_infer_with_an_unknown_model_is_named_and_the_server_keeps_serving(
    server, preprocessing, tmp_path, capsys
):
    from PIL import Image

    from codistill.cli import main

    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "a.png")
    common = [str(tmp_path / "a.png"), "--url", server["urls"]["http"], "--out", str(tmp_path)]
    common += ["--preprocessing", str(preprocessing)]
    assert main(["infer", *common, "--model", "codistill_gan"]) == 2
    assert "codistill_gan" in capsys.readouterr().err
    assert main(["infer", *common, "--model", MODELS[0]]) == 0
    assert (tmp_path / "a.mask.png").is_file()


def test_loadtest_measures_both_batching_modes_against_real_servers(
    repository, validated_tiny, tmp_path, capsys
):
    from codistill.cli import main

    prepared, _ = validated_tiny
    argv = ["loadtest", "--prepared", str(prepared), "--repository", str(repository)]
    argv += ["--model", MODELS[0], "--concurrency", "1", "3", "--duration", "1.5"]
    argv += ["--json", str(tmp_path / "load.json")]
    assert main(argv) == 0
    reports = json.loads((tmp_path / "load.json").read_text())
    assert [(r["dynamic_batching"], r["concurrency"]) for r in reports] == [
        (True, 1),
        (True, 3),
        (False, 1),
        (False, 3),
    ]
    for r in reports:
        assert r["model"] == MODELS[0] and r["errors"] == 0 and r["requests"] > 0
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["images_per_s"] == pytest.approx(r["requests"] / r["seconds"])
        assert r["seconds"] >= 1.5
        # the server's share of a request, by its statistics, within what the client waited
        assert 0 < r["server_queue_ms"] + r["server_compute_ms"] < r["mean_ms"]
    # one client never fills a batch: with batching on each request waits out the window
    on, off = reports[0], reports[2]
    delay_ms = read_config(repository / MODELS[0] / "config.pbtxt").dynamic_batching
    delay_ms = delay_ms.max_queue_delay_microseconds / 1000
    assert off["server_queue_ms"] < 0.5 * delay_ms < on["server_queue_ms"]
    table = capsys.readouterr().out
    assert "3 test images at 48x64" in table and table.count(f"| {MODELS[0]} |") == 4


def test_each_row_is_measured_against_the_server_of_its_batching_mode(monkeypatch, tmp_path):
    """A bench injects its own measurement per row; the servers are started here, in order."""
    import contextlib
    import types

    from codistill.serving import loadtest, process

    events: list[tuple] = []

    @contextlib.contextmanager
    def fake_server(repository, log, options=()):
        url = f"127.0.0.1:{len(events)}"
        events.append(("start", url, "--no-dynamic-batching" in options))
        yield types.SimpleNamespace(urls={"http": url})
        events.append(("stop", url))

    monkeypatch.setattr(process, "serve_in_background", fake_server)

    def row(url: str, model: str, concurrency: int, batching: bool) -> tuple:
        events.append(("row", url, model, concurrency, batching))
        return (model, concurrency, batching)

    rows = loadtest.local_server_rows(tmp_path, ["a", "b"], [1, 4], row)
    assert rows == [(m, c, b) for b in (True, False) for m in ("a", "b") for c in (1, 4)]
    on, off = "127.0.0.1:0", "127.0.0.1:6"  # each server's url names its place in the events
    assert events == [
        ("start", on, False),
        *(("row", on, m, c, True) for m in ("a", "b") for c in (1, 4)),
        ("stop", on),
        ("start", off, True),
        *(("row", off, m, c, False) for m in ("a", "b") for c in (1, 4)),
        ("stop", off),
    ]


def test_loadtest_counts_failed_requests_and_bounds_its_settings(server, validated_tiny, capsys):
    from codistill.cli import main
    from codistill.serving.loadtest import run_load

    prepared, _ = validated_tiny
    argv = ["loadtest", "--prepared", str(prepared), "--url", server["urls"]["http"]]
    argv += ["--model", "codistill_gan", "--concurrency", "2", "--duration", "0.5"]
    assert main(argv) == 1
    assert "codistill_gan at concurrency 2:" in capsys.readouterr().err
    image = [np.zeros((1, 32, 32, 3), np.uint8)]
    report = run_load(server["urls"]["http"], "codistill_gan", image, 2, 5)
    assert report.requests == 0 and report.p50_ms is None and "codistill_gan" in report.first_error
    assert report.server_queue_ms is None and report.server_compute_ms is None  # not served
    image = [np.zeros((1, 48, 64, 3), np.uint8)]
    over_grpc = run_load(server["urls"]["grpc"], MODELS[0], image, 1, 0.5, "grpc")
    assert over_grpc.errors == 0 and 0 < over_grpc.server_compute_ms < over_grpc.mean_ms
    assert report.errors <= 2 * (2 + 20)  # each client gives up after 20 failures in a row
    assert report.seconds < 5  # ... well before the deadline
    with pytest.raises(ValueError, match=r"concurrency: 65 not within 1\.\.64"):
        run_load(server["urls"]["http"], MODELS[0], image, 65, 1.0)
    with pytest.raises(ValueError, match=r"duration: 0 s not within"):
        run_load(server["urls"]["http"], MODELS[0], image, 1, 0)
    bad = ["loadtest", "--prepared", str(prepared), "--concurrency", "1", "100"]
    assert main(bad) == 2  # refused before any server starts
    assert "concurrency: 100 not within 1..64" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "127.0.0.1", "localhost:http"])
def test_a_url_that_is_not_host_port_is_named_in_one_line(preprocessing, tmp_path, capsys, url):
    from PIL import Image

    from codistill.cli import main

    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "a.png")
    argv = ["infer", str(tmp_path / "a.png"), "--url", url, "--preprocessing", str(preprocessing)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    expected = f"--url {url}: use host:port (for example 127.0.0.1:8000)"
    assert capsys.readouterr().err.strip() == f"codistill infer: {expected}"
    assert not (tmp_path / "out").exists()
    assert main(["loadtest", "--url", url, "--duration", "1"]) == 2
    assert capsys.readouterr().err.strip() == f"codistill loadtest: {expected}"


@pytest.mark.parametrize("busy_option", ["--http-port", "--grpc-port", "--metrics-port"])
def test_serve_on_a_busy_port_says_which_in_one_line_and_leaves_nothing(
    repository, tmp_path, capsys, monkeypatch, busy_option
):
    import socket
    import tempfile

    from codistill.cli import main
    from codistill.serving.process import free_port

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where workspaces would go
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {option: free_port() for option in ("--http-port", "--grpc-port", "--metrics-port")}
        ports[busy_option] = busy
        argv = ["serve", "--repository", str(repository)]
        argv += [str(part) for option, port in ports.items() for part in (option, port)]
        assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"codistill serve: error: address already in use: 127.0.0.1:{busy} ({busy_option})"
    )
    assert list(tmp_path.iterdir()) == []


def test_infer_without_a_server_says_so_by_address(preprocessing, tmp_path, capsys):
    from PIL import Image

    from codistill.cli import main
    from codistill.serving.process import free_port

    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "a.png")
    url = f"127.0.0.1:{free_port()}"
    argv = ["infer", str(tmp_path / "a.png"), "--url", url, "--preprocessing", str(preprocessing)]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert f"no Triton server at {url}" in capsys.readouterr().err
    assert not (tmp_path / "a.mask.png").exists()


@pytest.mark.parametrize(
    ("contract", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"input": "image"}', "missing palette"),
        ('{"palette": [[0, 0, 0]]}', "missing input"),
    ],
)
def test_a_bad_preprocessing_contract_is_named_before_any_request(
    tmp_path, capsys, contract, message
):
    from codistill.cli import main

    (tmp_path / "prep.json").write_text(contract)
    (tmp_path / "a.png").write_bytes(b"")
    argv = ["infer", str(tmp_path / "a.png"), "--preprocessing", str(tmp_path / "prep.json")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert f"prep.json: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_accepted_requests_leave_the_servers_memory_within_100_mb_logits_and_batches_included(
    repository, tmp_path
):
    """Each kind of largest accepted request, repeated: the server ends near where it was.

    The per-request budgets are the production ones scaled down together: labels for up to
    4 images of 256x384 in one request, logits for up to 192x256 pixels.
    """
    import time

    from tests.servers.triton_server import group_rss_mib

    rng = np.random.default_rng(6)
    budget, logit_budget = 4 * 256 * 384, 192 * 256
    log = tmp_path / "serve.log"
    with triton_server(repository, log, budget, max_logit_pixels=logit_budget) as running:
        url = running["urls"]["http"]
        time.sleep(1.0)
        idle = group_rss_mib(running["process"].pid)
        batch = rng.integers(0, 256, (4, 256, 384, 3), dtype=np.uint8)
        small = rng.integers(0, 256, (1, 192, 256, 3), dtype=np.uint8)
        client = http.InferenceServerClient(url)
        kept = []
        for model in MODELS:
            for image, outputs in ((batch, ["labels"]), (small, ["logits", "labels"])) * 2:
                tensor = http.InferInput("image", list(image.shape), "UINT8")
                tensor.set_data_from_numpy(image)
                wanted = [http.InferRequestedOutput(name) for name in outputs]
                answer = client.infer(model, [tensor], outputs=wanted)
                assert answer.as_numpy("labels").shape == image.shape[:3]
                time.sleep(0.5)
                kept.append(group_rss_mib(running["process"].pid) - idle)
            # logits for more than the logits budget: refused, however small the labels
            with pytest.raises(InferenceServerException, match="ask for labels only") as over:
                infer(http, url, model, batch[:1])
            assert over.value.status() == "400"
        client.close()
    print(f"resident MiB over idle ({idle:.0f}) after each request: {kept}")
    assert max(kept) < 100


def post_raw(url: str, path: str, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    """POST ``body`` as it is to the server; its status and text."""
    import http.client as client

    host, port = url.split(":")
    connection = client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request(
            "POST", path, body, {"Content-Type": "application/json", **(headers or {})}
        )
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        # about 90 bytes that once made tritonserver allocate the declared shape and abort
        (
            '{"inputs":[{"name":"image","shape":[1,100000,100000,3],"datatype":"UINT8","data":[]}]}',
            400,
            "declares 30000000000 bytes, over this server's limit",
        ),
        (
            '{"inputs":[{"name":"image","shape":[1,-32,48,3],"datatype":"UINT8","data":[]}]}',
            400,
            "has a negative dimension",
        ),
        (
            '{"inputs":[{"name":"image","shape":[1,32,48,3],"datatype":"UINT8","data":[1,2,3]}]}',
            400,
            "shape [1, 32, 48, 3] holds 4608 values, its data 3",
        ),
        (
            '{"inputs":[{"name":"image","shape":[32,48,3],"datatype":"UINT8","data":[]}]}',
            400,
            "shape [32, 48, 3] has 3 dimensions; the model takes 4, the batch first",
        ),
        ("this is not json", 400, "not an inference request"),
        ('{"inputs":[]}', 400, "the request names no inputs"),
    ],
    ids=["huge-shape", "negative-dimension", "data-short", "rank-3", "garbage", "no-inputs"],
)
def test_the_http_front_refuses_requests_before_tritonserver_sizes_them(
    server, repository, body, status, message
):
    got, text = post_raw(server["urls"]["http"], f"/v2/models/{MODELS[1]}/infer", body.encode())
    assert got == status
    assert message in json.loads(text)["error"] and "\n" not in text
    assert_http_still_serving(server, repository)


def assert_http_still_serving(server, repository) -> None:
    """The server never went down, and a correct request still gets the graph's labels."""
    assert "restart" not in server["log"].read_text()
    good = np.full((1, 32, 48, 3), 60, np.uint8)
    answer = infer(http, server["urls"]["http"], MODELS[1], good)
    assert np.array_equal(answer["labels"], direct(repository, MODELS[1], good)["labels"])


@pytest.mark.parametrize(
    ("shape", "size", "payload", "message"),
    [
        ([1, 100000, 100000, 3], 30000000000, 0, "declares 30000000000 bytes, over this server"),
        ([1, 32, 48, 3], 10, 10, "needs 4608 bytes, binary_data_size says 10"),
        ([1, 32, 48, 3], 4608, 10, "declare 4608 bytes of binary data, the body holds 10"),
        ([1, 32, 48, 3], 4608, 5000, "declare 4608 bytes of binary data, the body holds 5000"),
    ],
    ids=["huge-shape", "size-disagrees", "body-short", "body-long"],
)
def test_binary_data_that_disagrees_with_its_shape_is_refused(
    server, repository, shape, size, payload, message
):
    """The format tritonclient sends: a JSON header, then the tensors' bytes."""
    from tests.servers.triton_server import group_rss_mib

    tensor = {"name": "image", "shape": shape, "datatype": "UINT8"}
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": size}}]})
    lengths = {"Inference-Header-Content-Length": str(len(header))}
    before = group_rss_mib(server["process"].pid)
    body = header.encode() + bytes(payload)
    got, text = post_raw(server["urls"]["http"], f"/v2/models/{MODELS[1]}/infer", body, lengths)
    assert got == 400
    assert message in json.loads(text)["error"] and "\n" not in text
    assert group_rss_mib(server["process"].pid) - before < 16  # nothing was sized or held
    assert_http_still_serving(server, repository)


def test_a_body_over_the_budget_is_refused_unread(server):
    url = server["urls"]["http"]
    budget = MAX_PIXELS * 3
    huge = b"x" * (4 * budget + 64 * 1024 + 1)
    status, text = post_raw(url, f"/v2/models/{MODELS[0]}/infer", huge)
    assert status == 413 and "over this server's limit" in json.loads(text)["error"]


def test_the_front_command_guards_a_triton_server_run_elsewhere(server, repository, tmp_path):
    import time

    from codistill.serving.process import free_port

    port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "codistill.cli", "front", "--upstream"]
    command += [server["urls"]["http"], "--grpc-upstream", server["urls"]["grpc"]]
    command += ["--repository", str(repository), "--port", str(port)]
    # half the server's budget, so a refusal within the server's comes from this front
    command += ["--grpc-port", str(grpc_port), "--max-pixels", str(MAX_PIXELS // 2)]
    log = tmp_path / "front.log"
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "checking requests" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        within_server = np.full((1, 96, 96, 3), 30, np.uint8)  # 27648 bytes: 18432 < it < 36864
        for module, url in ((http, f"127.0.0.1:{port}"), (grpc, f"127.0.0.1:{grpc_port}")):
            with pytest.raises(InferenceServerException, match="limit of 18432 bytes"):
                infer(module, url, MODELS[0], within_server)
            good = np.full((1, 32, 48, 3), 30, np.uint8)
            answer = infer(module, url, MODELS[0], good)
            assert np.array_equal(answer["labels"], direct(repository, MODELS[0], good)["labels"])
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def send_raw(url: str, request: bytes) -> str:
    """Send ``request`` as it is on a new connection; the answer's status line and body."""
    import socket

    host, port = url.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode(errors="replace")


SMALL = '{"inputs":[{"name":"image","shape":[1,32,48,3],"datatype":"UINT8","data":[]}]}'


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (  # Python reads the last of a repeated key, Triton's parser the first
            "POST /v2/models/codistill_cnn/infer HTTP/1.1\r\nContent-Length: {n}\r\n\r\n{b}",
            "400",
            "the key 'shape' is repeated",
        ),
        (
            "POST http://x/v2/models/codistill_cnn/infer HTTP/1.1\r\nContent-Length: {n}"
            "\r\n\r\n{b}",
            "400",
            "the request target must be a path",
        ),
        (
            "POST /v2/models/codistill_cnn/infer HTTP/1.1\r\nContent-Length: {n}\r\n"
            "Content-Length: 5\r\n\r\n{b}",
            "400",
            "the header Content-Length is repeated",
        ),
        (
            "POST /v2/models/codistill_cnn/infer HTTP/1.1\r\nContent-Length: -1\r\n\r\n{b}",
            "400",
            "Content-Length '-1' is not a length",
        ),
        (
            "POST /v2/repository/models/codistill_cnn/unload HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "403",
            "POST /v2/repository/models/codistill_cnn/unload is not served here",
        ),
        (
            "POST /v2/models/codistill_cnn/infer HTTP/1.1\r\nContent-Length: 99999999\r\n"
            "Expect: 100-continue\r\n\r\n",
            "413",
            "over this server's limit",
        ),
    ],
    ids=[
        "repeated-key",
        "absolute-target",
        "two-lengths",
        "negative-length",
        "repository",
        "expect",
    ],
)
def test_the_front_refuses_what_triton_and_python_would_read_differently(
    server, repository, request_bytes, status, message
):
    twice = SMALL.replace('"shape":[1,32,48,3]', '"shape":[1,9999,9999,3],"shape":[1,32,48,3]')
    body = twice if message.startswith("the key") else SMALL
    text = request_bytes.replace("{n}", str(len(body))).replace("{b}", body)
    answer = send_raw(server["urls"]["http"], text.encode())
    assert answer.startswith(f"HTTP/1.1 {status} "), answer[:200]
    assert message in answer
    good = np.full((1, 32, 48, 3), 70, np.uint8)
    served = infer(http, server["urls"]["http"], MODELS[0], good)
    assert np.array_equal(served["labels"], direct(repository, MODELS[0], good)["labels"])
