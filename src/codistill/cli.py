"""The ``codistill`` command: one sub-command per registered stage, plus tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from codistill.config import ROLES, ConfigError, load_params
from codistill.stage_result import StageInputError
from codistill.stages import STAGES, StageFailedError
from codistill.stages.command import add_params_option, add_stage_command


def _students(args: argparse.Namespace) -> int:
    from codistill.data import dataset_spec
    from codistill.models import build_student, count_parameters

    params = load_params(args.params)
    num_classes = dataset_spec(params.data.dataset).num_classes
    for role in ROLES:
        cfg = getattr(params.models, role)
        model = build_student(cfg, num_classes)
        print(
            f"{role}: {cfg.arch} on {cfg.encoder}, {count_parameters(model) / 1e6:.2f} M parameters"
        )
    return 0


def _front(args: argparse.Namespace) -> int:
    import signal
    import threading

    from codistill.serving.client import check_address
    from codistill.serving.front import RGB_BYTES, model_ranks, start_front
    from codistill.serving.grpc_front import start_grpc_front

    try:
        upstreams = [check_address(a) for a in (args.upstream, args.grpc_upstream) if a]
    except ValueError as err:
        print(f"codistill front: {err}", file=sys.stderr)
        return 2
    http_upstream, *grpc_upstream = [
        (h, int(p)) for h, _, p in (a.rpartition(":") for a in upstreams)
    ]
    ranks = model_ranks(args.repository, args.model_config_name)
    budget = args.max_pixels * RGB_BYTES
    try:
        front, _ = start_front(args.host, args.port, http_upstream, budget, ranks)
    except OSError as err:
        print(f"codistill front: --port {args.port}: {err.strerror or err}", file=sys.stderr)
        return 2
    listening = f"http://{args.host}:{args.port} for {args.upstream}"
    grpc_front = None
    if grpc_upstream:
        try:
            grpc_front = start_grpc_front(
                args.host, args.grpc_port, grpc_upstream[0], budget, ranks
            )
        except OSError as err:
            front.shutdown()
            front.server_close()
            print(f"codistill front: --grpc-port {args.grpc_port}: {err}", file=sys.stderr)
            return 2
        listening += f" and grpc {args.host}:{args.grpc_port} for {args.grpc_upstream}"
    print(
        f"checking requests on {listening} ({', '.join(sorted(ranks))}; {args.max_pixels} "
        "pixels per request); SIGTERM stops",
        flush=True,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    if grpc_front is not None:
        grpc_front.stop()
    front.shutdown()
    front.server_close()
    return 0


def _manifests(args: argparse.Namespace) -> int:
    from codistill.artifacts import write_text_atomic
    from codistill.pipeline.kfp_components import COMPONENT_IMAGE
    from codistill.serving.kubernetes import Deployment, manifest_text

    try:
        deployment = Deployment(
            host=args.ingress_host,
            front_image=args.front_image or COMPONENT_IMAGE,
            max_pixels=args.max_pixels,
            config_name=args.model_config_name,
            models_claim=args.models_claim,
            tls_secret=args.tls_secret,
            replicas=args.replicas,
        )
    except ValueError as err:
        print(f"codistill manifests: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, manifest_text(deployment))
    print(f"wrote {args.out}: serve {args.models_claim} at {deployment.host}", flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from codistill.serving.local_server import Ports, serve

    ports = Ports(args.http_port, args.grpc_port, args.metrics_port)

    def announce(names: list[str], workspace: Path) -> None:
        print(
            f"serving {', '.join(names)} ({args.model_config_name} configs, dynamic batching "
            f"{'on' if args.dynamic_batching else 'off'}, warm-up "
            f"{'on' if args.warmup else 'off'}) on "
            f"http://{args.host}:{ports.http}, grpc {args.host}:{ports.grpc}, "
            f"metrics http://{args.host}:{ports.metrics}/metrics; workspace {workspace}; "
            "SIGTERM stops",
            flush=True,
        )

    serve(
        args.repository,
        args.host,
        ports,
        args.model_config_name,
        args.max_pixels,
        dynamic_batching=args.dynamic_batching,
        ready=announce,
        warmup=args.warmup,
        max_logit_pixels=args.max_logit_pixels,
    )
    print("server stopped", flush=True)
    return 0


def _infer(args: argparse.Namespace) -> int:
    from tritonclient.utils import InferenceServerException

    from codistill.serving.client import (
        ClientInputError,
        LabelsClient,
        Preprocessing,
        check_address,
        plan_outputs,
        segment_file,
    )

    try:
        check_address(args.url)
        prep = Preprocessing.load(args.preprocessing)
        planned, refused = plan_outputs(args.images, args.out, args.overwrite)
    except ClientInputError as err:
        print(f"codistill infer: {err}", file=sys.stderr)
        return 2
    for path, reason in refused.items():
        print(f"codistill infer: {path}: {reason}", file=sys.stderr)
    if not planned:
        return 2
    client = LabelsClient(args.url, args.protocol)
    try:
        reachable, reason = client.is_live(), "not live"
    except (InferenceServerException, OSError) as err:
        reachable, reason = False, str(err)
    if not reachable:
        print(f"codistill infer: no Triton server at {args.url} ({reason})", file=sys.stderr)
        return 2
    failed = len(refused)
    for path, outputs in planned.items():
        try:
            segment_file(path, outputs, args.model, client, prep, args.overwrite)
        except (ClientInputError, InferenceServerException, OSError) as err:
            print(f"codistill infer: {path}: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: {outputs[0]}, {outputs[1]}")
    client.close()
    return 2 if failed else 0


def _loadtest(args: argparse.Namespace) -> int:
    from codistill.artifacts import write_json_atomic
    from codistill.data.samples import evenly_spaced_images
    from codistill.serving.client import check_address
    from codistill.serving.loadtest import (
        TABLE_HEADER,
        check_load_settings,
        load_local_server,
        report_table,
        run_load,
    )
    from codistill.serving.model_repository import served_name

    try:
        if args.url:
            check_address(args.url)
        for concurrency in args.concurrency:
            check_load_settings(concurrency, args.duration)
        if args.images < 1:
            raise ValueError(f"images: {args.images} must be at least 1")
    except ValueError as err:
        print(f"codistill loadtest: {err}", file=sys.stderr)
        return 2
    images = evenly_spaced_images(args.prepared, args.split, args.images)
    args.model = args.model or [served_name(role) for role in ROLES]
    if args.url:
        reports = [
            run_load(args.url, model, images, c, args.duration, args.protocol)
            for model in args.model
            for c in args.concurrency
        ]
    else:
        reports = load_local_server(
            args.repository,
            images,
            args.model,
            args.concurrency,
            args.duration,
            args.protocol,
            args.model_config_name,
        )
    height, width = images[0].shape[1:3]
    print(
        f"{len(images)} {args.split} images at {height}x{width}, batch 1 per request, "
        f"{args.duration:g} s per row, {args.protocol}"
    )
    print("| " + " | ".join(TABLE_HEADER) + " |")
    print("|" + "---|" * len(TABLE_HEADER))
    for row in report_table(reports):
        print("| " + " | ".join(row) + " |")
    if args.json:
        write_json_atomic(args.json, [r.as_dict() for r in reports])
    failed = [r for r in reports if r.errors]
    for r in failed:
        print(
            f"{r.model} at concurrency {r.concurrency}: {r.errors} errors, first: {r.first_error}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _pipeline(args: argparse.Namespace) -> int:
    from codistill.pipeline.commands import run_pipeline_command

    return run_pipeline_command(args)


def _study(args: argparse.Namespace) -> int:
    from codistill.study.commands import run_study_command

    return run_study_command(args)


def _add_pixel_budget(parser: argparse.ArgumentParser) -> None:
    """The ``--max-pixels`` option of the commands that enforce or configure the budget."""
    from codistill.serving.limits import DEFAULT_MAX_PIXELS

    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="most pixels one request may hold (images × height × width)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``codistill`` command."""
    parser = argparse.ArgumentParser(prog="codistill", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        add_stage_command(commands, stage)

    students = commands.add_parser(
        "students", help="Build both students and print their parameter counts."
    )
    add_params_option(students)
    students.set_defaults(run=_students)

    serve = commands.add_parser(
        "serve", help="Serve the model repository with a local Triton server until SIGTERM."
    )
    serve.add_argument(
        "--repository",
        type=Path,
        default=Path("serving/model_repository"),
        help="Triton model repository (default: serving/model_repository)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument(
        "--model-config-name", default="cpu", help="configs/<name>.pbtxt of each model to use"
    )
    from codistill.serving.limits import DEFAULT_MAX_LOGIT_PIXELS

    _add_pixel_budget(serve)
    serve.add_argument(
        "--max-logit-pixels",
        type=int,
        default=DEFAULT_MAX_LOGIT_PIXELS,
        help="most pixels one request may ask float32 logits for (labels are not limited by it)",
    )
    serve.add_argument(
        "--no-dynamic-batching",
        dest="dynamic_batching",
        action="store_false",
        help="run every request on its own, ignoring the configs' dynamic batching",
    )
    serve.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip the configs' model_warmup requests (the first real request pays instead)",
    )
    serve.set_defaults(run=_serve)

    front = commands.add_parser(
        "front",
        help="Check inference requests before a Triton server you run sizes them.",
        description="The front codistill serve puts before its own server, for a Triton "
        "container: requests over the pixel budget, of the wrong rank, with negative "
        "dimensions or data that does not fill the declared shape get a one-line 400 "
        "(gRPC: INVALID_ARGUMENT, with --grpc-upstream).",
    )
    front.add_argument("--upstream", required=True, help="the Triton HTTP address (host:port)")
    front.add_argument("--repository", type=Path, default=Path("serving/model_repository"))
    front.add_argument("--model-config-name", default="cpu", help="configs/<name>.pbtxt to read")
    front.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    front.add_argument("--port", type=int, default=8080)
    front.add_argument(
        "--grpc-upstream", help="the Triton gRPC address (host:port) to guard as well"
    )
    front.add_argument("--grpc-port", type=int, default=8081)
    _add_pixel_budget(front)
    front.set_defaults(run=_front)

    kube = commands.add_parser(
        "manifests",
        help="Write Kubernetes manifests serving the repository: Triton behind the front.",
        description="A Deployment (Triton on loopback, codistill front as its sidecar), a "
        "Service and two ingress-nginx Ingresses (HTTP, gRPC) whose body caps match the "
        "front's, for the pixel budget given.",
    )
    kube.add_argument("--ingress-host", required=True, help="the host name clients call")
    kube.add_argument("--out", type=Path, default=Path("serving/kubernetes.yaml"))
    kube.add_argument("--front-image", default=None, help="default: the component image")
    kube.add_argument("--model-config-name", default="gpu", help="configs/<name>.pbtxt to serve")
    kube.add_argument("--models-claim", default="codistill-models", help="PVC with the repository")
    kube.add_argument("--tls-secret", default="codistill-tls", help="the ingress's TLS secret")
    kube.add_argument("--replicas", type=int, default=1)
    _add_pixel_budget(kube)
    kube.set_defaults(run=_manifests)

    infer = commands.add_parser(
        "infer", help="Segment images through a Triton endpoint; write masks and overlays."
    )
    infer.add_argument("images", type=Path, nargs="+", help="image files")
    infer.add_argument("--model", default="codistill_vit", help="served model name")
    infer.add_argument("--url", default="127.0.0.1:8000", help="server address (host:port)")
    infer.add_argument("--protocol", choices=("http", "grpc"), default="http")
    infer.add_argument("--out", type=Path, default=Path("build/infer"), help="output folder")
    infer.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results an earlier run wrote (never an input image, never through a link)",
    )
    infer.add_argument(
        "--preprocessing",
        type=Path,
        default=Path("serving/model_repository/preprocessing.json"),
        help="normalization and palette (written by publish)",
    )
    infer.set_defaults(run=_infer)

    load = commands.add_parser(
        "loadtest",
        help="Closed-loop load on the local Triton endpoint, with and without dynamic batching.",
    )
    load.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
    load.add_argument("--split", default="test", help="prepared split the images come from")
    load.add_argument("--images", type=int, default=32, help="distinct images to cycle through")
    load.add_argument(
        "--model", action="append", help="served model (repeatable; default: both students)"
    )
    load.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    load.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    load.add_argument("--protocol", choices=("http", "grpc"), default="http")
    load.add_argument("--repository", type=Path, default=Path("serving/model_repository"))
    load.add_argument("--model-config-name", default="cpu")
    load.add_argument(
        "--url", help="load this running endpoint instead of starting local servers (host:port)"
    )
    load.add_argument("--json", type=Path, help="also write the reports here")
    load.set_defaults(run=_loadtest)

    pipeline = commands.add_parser(
        "pipeline", help="Generate, check and run the DVC and Kubeflow pipelines."
    )
    from codistill.pipeline.arguments import add_pipeline_arguments

    add_pipeline_arguments(pipeline)
    pipeline.set_defaults(run=_pipeline)

    study = commands.add_parser(
        "study", help="Train and report a paired-seed study of the students from its plan file."
    )
    from codistill.study.arguments import add_study_arguments

    add_study_arguments(study)
    study.set_defaults(run=_study)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors a user's input causes: one line on stderr, exit 2 (imported when raised).

    Any other exception is a defect of the program and keeps its traceback.
    """
    from codistill.data.gate import UnvalidatedDataError
    from codistill.data.shards import EmptySplitError
    from codistill.engine.checkpoint import CheckpointError
    from codistill.serving.errors import ServerError
    from codistill.study.plan import IncompleteStudyError, PlanError
    from codistill.study.preregistration import PreregistrationError
    from codistill.study.results import NotAResultError

    return (
        IncompleteStudyError,
        NotAResultError,
        PlanError,
        PreregistrationError,
        ServerError,
        ConfigError,
        FileNotFoundError,
        StageInputError,
        UnvalidatedDataError,
        EmptySplitError,
        CheckpointError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``codistill`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except StageFailedError as err:
        print(err, file=sys.stderr)
        return 1
    except _user_errors() as err:
        print(f"codistill {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
