"""A student as a model of Triton's Python backend: ONNX Runtime behind the image checks.

``codistill serve`` copies this file as ``model.py`` next to each model's ``config.pbtxt``;
Triton's Python backend runs it in its own process, where only numpy, ONNX Runtime and the
backend's ``triton_python_backend_utils`` are imported. The config's ``parameters`` name the
graph (``onnx_path``), the image's height and width axes of the batched input
(``spatial_axes``, e.g. ``1,2``), the sizes it accepts (``max_pixels``,
``max_logit_pixels``, ``min_side``) and the largest call whose memory ONNX Runtime keeps for
the next one (``retained_pixels``: a full batch of warm-up-sized images).

A request whose images hold more than ``max_pixels`` pixels together (``max_logit_pixels``
if it asks for the logits, as a request naming no outputs does), or with a side under
``min_side``, gets a one-line INVALID_ARG error (HTTP 400, gRPC INVALID_ARGUMENT) before its
pixels are touched; requests of the same size in one dynamic batch run through the graph
together, in runs of at most ``max_pixels`` pixels.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

LOGITS = "logits"  # the float32 output; ``labels`` is the uint8 arg-max


def _parameter(config: dict[str, Any], key: str) -> str:
    return config["parameters"][key]["string_value"]


class TritonPythonModel:
    """One instance of a served student."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the graph on the CPU; its memory arena keeps what a batch of warm-ups needs."""
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        options = ort.SessionOptions()
        # The workers spin between the operators of one call (a wake-up per operator costs the
        # many small operators of the ViT 10 % of its time) and stop when the call returns, so
        # they do not spin on the cores that Triton's front end and the batcher need next.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(
            _parameter(config, "onnx_path"),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self.input_name = config["input"][0]["name"]
        self.axes = tuple(int(a) for a in _parameter(config, "spatial_axes").split(","))
        self.max_pixels = int(_parameter(config, "max_pixels"))
        self.max_logit_pixels = int(_parameter(config, "max_logit_pixels"))
        self.min_side = int(_parameter(config, "min_side"))
        # The arena keeps the memory of a call up to this many pixels for the next one (without
        # it each call maps, faults in and unmaps its large blocks again: 0.7x the graph's own
        # speed); a larger call gives what it took back to the system once it is answered.
        self.retained_pixels = int(_parameter(config, "retained_pixels"))
        self.give_back = ort.RunOptions()
        self.give_back.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        # How often codistill serve restarted the server, on the server's metrics endpoint.
        self.restarts_family = pb_utils.MetricFamily(
            name="codistill_server_restarts",
            description="Times codistill serve restarted tritonserver after it stopped",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.restarts = self.restarts_family.Metric(labels={"model": args["model_name"]})
        self.restarts.set(float(os.environ.get("CODISTILL_SERVER_RESTARTS", "0")))

    def _size_error(self, shape: tuple[int, ...], names: tuple[str, ...]) -> str | None:
        height, width = (shape[axis] for axis in self.axes)
        images = int(np.prod(shape[: min(self.axes)]))  # the batch axis, where there is one
        pixels = self._pixels(shape)
        if pixels > self.max_pixels:
            what = (
                f"image {height}x{width} is"
                if images == 1
                else f"{images} images of {height}x{width} are"
            )
            return (
                f"{what} over this model's limit of {self.max_pixels} pixels per request "
                "(images x height x width)"
            )
        if LOGITS in names and pixels > self.max_logit_pixels:
            return (
                f"logits of {images} x {height}x{width} pixels are over this model's limit of "
                f"{self.max_logit_pixels} pixels per request; ask for labels only"
            )
        if min(height, width) < self.min_side:
            return f"image {height}x{width} is under the minimum {self.min_side}x{self.min_side}"
        return None

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer each request, running same-sized images of the batch in one graph call."""
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        tensors = []
        for index, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            tensors.append(tensor)
            names = tuple(request.requested_output_names()) or tuple(
                o.name for o in self.session.get_outputs()
            )
            error = self._size_error(tuple(tensor.shape()), names)
            if error is not None:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(error, pb_utils.TritonError.INVALID_ARG)
                )
                continue
            groups[(tuple(tensor.shape()[1:]), names)].append(index)
        for (_, names), members in groups.items():
            budget = self.max_logit_pixels if LOGITS in names else self.max_pixels
            for chunk in self._within_budget(members, tensors, budget):
                self._answer(chunk, names, tensors, responses)
        return responses

    def _pixels(self, shape: tuple[int, ...]) -> int:
        """Images × height × width of a batched channels-last input of ``shape``."""
        return int(np.prod(shape[: min(self.axes)])) * int(np.prod([shape[a] for a in self.axes]))

    def _within_budget(
        self, members: list[int], tensors: list[Any], budget: int
    ) -> list[list[int]]:
        """``members`` in runs whose images hold at most ``budget`` pixels together (one at least).

        So a dynamic batch of largest-allowed requests needs no more memory than one of them
        (the logits budget where they ask for logits).
        """
        chunks: list[list[int]] = []
        pixels = 0
        for index in members:
            size = self._pixels(tuple(tensors[index].shape()))
            if chunks and pixels + size <= budget:
                chunks[-1].append(index)
                pixels += size
            else:
                chunks.append([index])
                pixels = size
        return chunks

    def _answer(
        self, members: list[int], names: tuple[str, ...], tensors: list[Any], responses: list
    ) -> None:
        arrays = [tensors[i].as_numpy() for i in members]
        # one request (concurrency 1, batching off) goes to the graph as it came, uncopied
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        try:
            kept = self._pixels(batch.shape) <= self.retained_pixels
            run_options = None if kept else self.give_back
            outputs = self.session.run(list(names), {self.input_name: batch}, run_options)
        except Exception as err:  # one line to the client, never a traceback
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            message = f"the graph failed on this input: {first}"
            for i in members:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
            return
        start = 0
        for i in members:
            count = tensors[i].shape()[0]
            responses[i] = pb_utils.InferenceResponse(
                [
                    pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + count]))
                    for name, value in zip(names, outputs, strict=True)
                ]
            )
            start += count
