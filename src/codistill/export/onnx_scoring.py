"""mIoU and per-image latency of ONNX graphs under ONNX Runtime on a prepared split."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codistill.data.loading import PreparedSplit
from codistill.evaluation.metrics import segmentation_scores
from codistill.evaluation.scoring import Predictor, tally_predictions
from codistill.export.graph_io import INPUT_NAME, LABELS_OUTPUT
from codistill.reporting import reported


def cpu_session(path: str | Path) -> Any:
    """An ONNX Runtime session for ``path`` on the CPU execution provider."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def score_graphs(
    graphs: dict[str, Path], prepared_dir: str | Path, split: str, label: str
) -> dict[str, dict]:
    """Score each graph on every image of ``split`` (as stored: uint8, native size), one by one.

    Progress is reported under ``label`` (see ``reported``). Returns per graph: mIoU, pixel
    accuracy, images and mean seconds per image.
    """
    data = PreparedSplit(prepared_dir, split)

    def samples() -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        for index in reported(range(len(data)), label, len(data)):
            image, labels = data.reader.read(data.rows[index])
            yield image[None], torch.from_numpy(np.array(labels))  # the shard buffer is read-only

    def predictor(session: Any) -> Predictor:
        return lambda batch: torch.from_numpy(
            session.run([LABELS_OUTPUT], {INPUT_NAME: batch})[0][0]
        )

    sessions = {name: cpu_session(path) for name, path in graphs.items()}
    tallies = tally_predictions(
        {name: predictor(session) for name, session in sessions.items()},
        samples(),
        data.info["num_classes"],
    )
    scores = {}
    for name, tally in tallies.items():
        summary = segmentation_scores(tally.confusion.numpy())
        scores[name] = {
            "miou": summary["miou"],
            "pixel_accuracy": summary["pixel_accuracy"],
            "images": len(data),
            "seconds_per_image": tally.seconds / max(len(data), 1),
        }
    return scores
