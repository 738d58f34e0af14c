"""The inference client: images in, colour-coded masks and overlays out, through Triton."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from codistill.export.graph_io import INPUT_NAME, LABELS_OUTPUT


class ClientInputError(ValueError):
    """An input the client refuses before it reaches the server."""


@dataclass(frozen=True)
class Preprocessing:
    """The serving contract: the input's name and the colours of the classes.

    The graphs take the image as it is read (N×H×W×3 uint8 RGB, any size); normalization
    and resizing happen inside them, so a client needs no statistics.
    """

    input_name: str
    palette: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> Preprocessing:
        """Read the ``preprocessing.json`` that the export stage writes beside the graphs."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no preprocessing contract; run the publish stage")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ClientInputError(f"{path}: not valid JSON ({err})") from None
        missing = [key for key in ("input", "palette") if key not in data]
        if missing:
            raise ClientInputError(f"{path}: missing {', '.join(missing)}")
        return cls(data["input"], np.asarray(data["palette"], np.uint8))

    def tensor(self, rgb: np.ndarray) -> np.ndarray:
        """A 1×H×W×3 uint8 batch of one H×W×3 uint8 image."""
        return np.ascontiguousarray(rgb, dtype=np.uint8)[None]

    def colours(self, labels: np.ndarray) -> np.ndarray:
        """The class colour of every pixel; labels outside the palette come out black."""
        table = np.zeros((256, 3), np.uint8)
        table[: len(self.palette)] = self.palette
        return table[labels]


def check_address(url: str) -> str:
    """``url`` if it is a ``host:port`` address, else a ClientInputError saying so."""
    host, _, port = url.rpartition(":")
    if "://" in url or "/" in url or not host or not port.isdigit():
        raise ClientInputError(f"--url {url}: use host:port (for example 127.0.0.1:8000)")
    return url


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as H×W×3 uint8, or a ClientInputError naming the file."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ClientInputError(f"{path}: not a readable image ({err})") from None


class LabelsClient:
    """One connection to a Triton endpoint, asking models for their ``labels`` output only."""

    def __init__(self, url: str, protocol: str = "http", timeout_s: float = 120.0) -> None:
        if protocol == "http":
            import tritonclient.http as module

            client = module.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        elif protocol == "grpc":
            import tritonclient.grpc as module

            client = module.InferenceServerClient(url)
        else:
            raise ValueError(f"protocol: {protocol!r} is not one of http, grpc")
        self.module, self.client, self.protocol = module, client, protocol
        self.timeout_s = timeout_s

    def is_live(self) -> bool:
        """Whether the server answers its liveness probe."""
        return bool(self.client.is_server_live())

    def labels(self, model: str, batch: np.ndarray, input_name: str = INPUT_NAME) -> np.ndarray:
        """Send one N×H×W×3 uint8 batch to ``model``; return its N×H×W labels."""
        from tritonclient.utils import np_to_triton_dtype

        tensor = self.module.InferInput(
            input_name, list(batch.shape), np_to_triton_dtype(batch.dtype)
        )
        tensor.set_data_from_numpy(batch)
        timeout = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        # only the arg-max travels back, not C×H×W floats
        outputs = [self.module.InferRequestedOutput(LABELS_OUTPUT)]
        answer = self.client.infer(model, [tensor], outputs=outputs, **timeout)
        return answer.as_numpy(LABELS_OUTPUT)

    def phase_totals(self, model: str) -> dict[str, tuple[int, int]]:
        """The server's (requests, nanoseconds) so far per phase of ``model``'s answered requests.

        Phases as Triton counts them: ``queue``, ``compute_input``, ``compute_infer``,
        ``compute_output`` and ``success`` (the whole request), summed over served versions.
        """
        grpc = {"as_json": True, "client_timeout": self.timeout_s}
        answer = self.client.get_inference_statistics(
            model, **(grpc if self.protocol == "grpc" else {})
        )
        totals: dict[str, tuple[int, int]] = {}
        for version in answer["model_stats"]:
            for phase, counted in version["inference_stats"].items():
                count, ns = totals.get(phase, (0, 0))
                # gRPC's JSON spells 64-bit integers as strings and leaves out zeros
                totals[phase] = (
                    count + int(counted.get("count", 0)),
                    ns + int(counted.get("ns", 0)),
                )
        return totals

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


def output_stems(paths: list[Path], out_dir: Path) -> dict[Path, Path]:
    """Each input's output path without suffix, mirroring its folder below the common one.

    ``a/x.png`` and ``b/x.png`` thus keep one result each, under ``out_dir/a`` and ``out_dir/b``.

    Raises ClientInputError, before any request, if two inputs would still share a name.
    """
    folders = [path.resolve().parent for path in paths]
    common = Path(os.path.commonpath(folders)) if folders else Path()
    stems: dict[Path, Path] = {}
    seen: dict[Path, Path] = {}
    for path, folder in zip(paths, folders, strict=True):
        stem = out_dir / folder.relative_to(common) / path.stem
        if stem in seen and seen[stem].resolve() != path.resolve():
            raise ClientInputError(
                f"{seen[stem]} and {path} would both write {stem.name}.mask.png; rename one "
                "or segment them in separate runs"
            )
        seen[stem], stems[path] = path, stem
    return stems


def result_paths(stem: Path) -> tuple[Path, Path]:
    """The mask and the overlay that an input with output ``stem`` writes."""
    return stem.with_name(f"{stem.name}.mask.png"), stem.with_name(f"{stem.name}.overlay.png")


def _file_identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_dev, status.st_ino


def output_refusal(
    outputs: tuple[Path, ...], inputs: set[tuple[int, int]], overwrite: bool
) -> str | None:
    """Why ``outputs`` must not be written, or None.

    ``inputs`` are the (device, inode) identities of every input file of the run, so an input
    reached by another path, a link or a later position in the run is recognised too.
    """
    for path in outputs:
        if path.is_symlink():
            return f"{path} is a symbolic link; not followed, nothing written"
        if not path.exists():
            continue
        if path.is_file() and _file_identity(path) in inputs:
            return f"{path} is one of the input images; choose another --out"
        if not overwrite:
            return f"{path} exists; pass --overwrite to replace it"
    return None


def plan_outputs(
    paths: list[Path], out_dir: Path, overwrite: bool
) -> tuple[dict[Path, tuple[Path, Path]], dict[Path, str]]:
    """Each input's (mask, overlay) paths, and the inputs refused with the reason.

    Raises ClientInputError, before any request, if two inputs would share a result.
    """
    inputs = {_file_identity(path) for path in paths if path.is_file()}
    planned, refused = {}, {}
    for path, stem in output_stems(paths, out_dir).items():
        outputs = result_paths(stem)
        reason = output_refusal(outputs, inputs, overwrite)
        if reason is None:
            planned[path] = outputs
        else:
            refused[path] = reason
    return planned, refused


def write_png(pixels: np.ndarray, path: Path, overwrite: bool) -> None:
    """Write ``pixels`` as a PNG at ``path`` in one step, never through a symbolic link.

    The image is written beside ``path`` first; without ``overwrite`` it then takes the name
    only if nothing holds it (FileExistsError otherwise), with it it replaces the file (or
    link) there, never the file a link points to.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # a new file of an unguessable name (O_EXCL: never through a link someone planted)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as file:
            Image.fromarray(pixels).save(file, format="PNG")
        if overwrite:
            os.replace(partial, path)
        else:
            os.link(partial, path)
    except FileExistsError:
        raise ClientInputError(f"{path} appeared meanwhile; kept, nothing written") from None
    finally:
        partial.unlink(missing_ok=True)


def segment_file(
    path: Path,
    outputs: tuple[Path, Path],
    model: str,
    client: LabelsClient,
    prep: Preprocessing,
    overwrite: bool = False,
) -> None:
    """Segment one image file; write its colour mask and overlay to ``outputs``."""
    rgb = read_rgb(path)
    labels = client.labels(model, prep.tensor(rgb), prep.input_name)[0]
    colours = prep.colours(labels)
    blend = (rgb.astype(np.float32) * 0.5 + colours.astype(np.float32) * 0.5).astype(np.uint8)
    mask_path, overlay_path = outputs
    write_png(colours, mask_path, overwrite)
    write_png(blend, overlay_path, overwrite)
