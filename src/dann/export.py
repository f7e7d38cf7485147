"""The adapted model out of a run: predictions as CSV, a ``torch.export`` program, an ONNX file.

A trained mode is rebuilt from its run directory: ``config.yaml`` says the experiment, network and
method; the experiment's data (read again, from ``data_dir``) gives the input shape, the class
count and the input normalisation (``DomainData.prepare``, which may depend on the training
data, e.g. a channel mean); ``checkpoints/<mode>.pt`` holds the weights (read with
``weights_only``; the final checkpoint holds the moving average when ``train.ema_decay`` was on).
Inputs go through the method's *target* path, ``method.features(x, "target")`` then the label
predictor, so ADDA's target encoder is the one used.

Layer: above the experiments (it reads a run and loads its experiment's data).
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dann.config import load_yaml
from dann.data.domains import DomainData
from dann.errors import ConfigError, DataError
from dann.experiments import get_experiment, resolve_config
from dann.fit import build_network
from dann.methods import Method, build_method, config_for
from dann.train.checkpoint import load_checkpoint


@dataclass
class TrainedMode:
    """A trained mode of a run, on the CPU in eval mode, with the data it was trained on."""

    method: Method
    data: DomainData
    mode: str
    experiment: str
    run_dir: Path

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.data.input_shape

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype of the stored samples, which the normalisation expects (uint8 for images)."""
        return self.data.source_train.x.dtype

    @property
    def n_classes(self) -> int:
        return self.data.n_classes

    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Class logits of raw samples ``x`` (``(N, *input_shape)``, the stored dtype) by the target path."""
        chunks = [
            self.method.model.classify(self.method.features(self.data.prepare(x[i : i + batch_size]), "target")).float()
            for i in range(0, len(x), batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, self.n_classes)

    def label_path(self) -> LabelPath:
        """The target label path as one module: normalisation, encoder, label predictor (eval mode)."""
        return LabelPath(self.data.prepare, self.method.encoder("target"), self.method.model.label_predictor).eval()


def load_mode(run_dir: str | Path, mode: str | None = None, data_dir: str | None = None) -> TrainedMode:
    """Rebuild the trained ``mode`` of ``run_dir`` (the only mode when None) from its config and final checkpoint."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise DataError(f"{run_dir} is not a dann run directory (no config.yaml); give the folder `dann run` wrote")
    experiment = get_experiment(str(load_yaml(saved).get("experiment")))
    cfg = resolve_config(experiment, file=saved)
    if mode is None:
        if len(cfg.modes) != 1:
            raise ConfigError(f"{run_dir} trained {len(cfg.modes)} modes; choose one with --mode ({', '.join(cfg.modes)})")
        mode = cfg.modes[0]
    if mode not in cfg.modes:
        raise ConfigError(f"{run_dir} has no mode {mode!r}; it trained {', '.join(cfg.modes)}")
    if not (run_dir / "results" / f"{mode}.json").exists():
        raise DataError(
            f"mode {mode} of {run_dir} has not finished training (no results/{mode}.json); "
            f"finish it with `dann run --resume {run_dir}` first"
        )
    data = experiment.load_data(cfg, data_dir)
    config = config_for(cfg.method, mode)  # this mode's options only (the config holds every mode's)
    torch.manual_seed(cfg.seed)
    method = build_method(mode, build_network(data, mode, cfg.model, config), config)
    state = load_checkpoint(run_dir / "checkpoints" / f"{mode}.pt")
    try:
        method.load_state_dict(state["method"])
    except RuntimeError as err:
        raise DataError(
            f"checkpoints/{mode}.pt of {run_dir} does not fit the network its config.yaml builds "
            f"({str(err).strip().splitlines()[0]}); was the config edited after training?"
        ) from None
    return TrainedMode(method.eval(), data, mode, experiment.name, run_dir)


# ------------------------------------------------------------------------------------ predict


def read_inputs(path: str | Path, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[list[str], torch.Tensor]:
    """Samples to predict, as ``(names, x)`` with ``x`` of shape ``(N, *shape)`` and the run's ``dtype``.

    ``path`` is a ``.npy`` array (rows ``"0"``, ``"1"``, ...), a ``.npz`` file (every array,
    rows ``"name[i]"``), a CSV/TSV table of numeric feature columns (one row per sample, a
    header line optional; rows named by their 0-based index) or a folder of images (named by
    their path in the folder; each image's size must be the run's, grey images become RGB when
    the run's are). Image arrays may be ``(N, C, H, W)``, ``(N, H, W, C)`` or grey ``(N, H, W)``.
    """
    path = Path(path)
    if path.is_dir():
        return _read_image_folder(path, shape)
    if not path.is_file():
        raise DataError(f"input {path} not found: give a .npy/.npz array file, a CSV table or a folder of images")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read array file {path} ({err})") from None
        arrays = {"": loaded} if suffix == ".npy" else {key: loaded[key] for key in loaded.files}
        names, parts = [], []
        for key, array in arrays.items():
            x = _as_samples(array, shape, f"{path}{'[' + key + ']' if key else ''}")
            names += [f"{key}[{i}]" if key else str(i) for i in range(len(x))]
            parts.append(x)
        x = np.concatenate(parts) if parts else np.empty((0, *shape))
    elif suffix in (".csv", ".tsv", ".txt"):
        x = _read_csv(path, shape)
        names = [str(i) for i in range(len(x))]
    else:
        raise DataError(f"input {path}: unknown kind {suffix!r}; give .npy, .npz, .csv or .tsv, or a folder of images")
    return names, _as_dtype(x, dtype, str(path))


def _as_samples(array: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """``(N, *shape)``: also from channels-last or grey images, or one unbatched sample."""
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where}: holds {array.dtype} values; the model takes numbers")
    if tuple(array.shape[1:]) == shape:
        return array
    if tuple(array.shape) == shape:
        return array[None]
    if len(shape) == 3:
        channels, height, width = shape
        if array.ndim == 4 and tuple(array.shape[1:]) == (height, width, channels):
            return array.transpose(0, 3, 1, 2)
        if array.ndim == 3 and tuple(array.shape[1:]) == (height, width):
            return np.repeat(array[:, None], channels, axis=1)
    raise DataError(f"{where}: samples of shape {tuple(array.shape[1:])}; this run's model takes {shape} (N rows of it)")


def _read_csv(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    with path.open(newline="", encoding="utf-8") as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in sample and "," not in sample) else ","
        rows = [row for row in csv.reader(f, delimiter=delimiter) if row and any(cell.strip() for cell in row)]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header line
    width = int(np.prod(shape))
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path}: row {i} has {len(row)} columns; this run's model takes {width} feature columns")
        try:
            values[i] = [float(cell) for cell in row]
        except ValueError:
            raise DataError(f"{path}: row {i} has a value that is not a number: {row}") from None
    return values.reshape(len(rows), *shape)


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def _read_image_folder(folder: Path, shape: tuple[int, ...]) -> tuple[list[str], torch.Tensor]:
    from dann.data.folders import list_image_folder, load_image

    if len(shape) != 3:
        raise DataError(f"input {folder} is a folder of images, but this run's model takes vectors of shape {shape}")
    channels, height, width = shape
    listing = list_image_folder(folder)
    images = []
    for file in listing.paths:
        image = load_image(file, channels=channels)
        if tuple(image.shape[1:]) != (height, width):
            raise DataError(
                f"image {file} is {image.shape[2]}x{image.shape[1]} pixels (width x height); this run's model takes "
                f"{width}x{height}: resize the images first"
            )
        images.append(image)
    names = [str(Path(p).relative_to(folder)) for p in listing.paths]
    return names, torch.stack(images)


def _as_dtype(x: np.ndarray, dtype: torch.dtype, where: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(x))
    if dtype == torch.uint8 and tensor.dtype != torch.uint8:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise DataError(f"{where}: holds NaN or infinite values; this run's model takes pixel values 0..255")
        if ((tensor < 0) | (tensor > 255) | (tensor != tensor.round())).any():
            raise DataError(f"{where}: this run's model takes whole pixel values 0..255 (uint8), as it was trained on")
    elif tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise DataError(f"{where}: holds NaN or infinite values")
    return tensor.to(dtype)


def predict(trained: TrainedMode, input_path: str | Path, out: str | Path) -> Path:
    """Write ``input,predicted_class,p_0..p_{C-1}`` for every sample of ``input_path`` to the CSV ``out``."""
    names, x = read_inputs(input_path, trained.input_shape, trained.input_dtype)
    probabilities = torch.softmax(trained.logits(x), dim=1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["input", "predicted_class", *(f"p_{k}" for k in range(trained.n_classes))])
        for name, p in zip(names, probabilities.tolist()):
            writer.writerow([name, int(np.argmax(p)), *(f"{v:.6g}" for v in p)])
    return out


# ------------------------------------------------------------------------------------ export


class Normalise(nn.Module):
    """A run's input normalisation (``DomainData.prepare``, a plain callable) as a module, so it exports."""

    def __init__(self, prepare: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.prepare = prepare

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prepare(x)


class LabelPath(nn.Module):
    """Raw samples, as the run stores them (uint8 ``(N, C, H, W)`` images, float32 ``(N, F)`` vectors)
    -> class logits ``(N, C)``: normalisation, then the target encoder, then the label predictor."""

    def __init__(self, prepare: Callable[[torch.Tensor], torch.Tensor], encoder: nn.Module, label_predictor: nn.Module) -> None:
        super().__init__()
        self.normalise = Normalise(prepare)
        self.encoder = encoder
        self.label_predictor = label_predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.label_predictor(self.encoder(self.normalise(x)))


def export(trained: TrainedMode, out_dir: str | Path) -> dict[str, Path]:
    """Write the target label path of ``trained`` as ``model.pt2`` (``torch.export``), ``model.onnx``
    (when ``onnx`` and ``onnxscript`` are installed) and ``model.json`` (what the input must be).

    The programs take the samples as the run stores them, in batches of any size: for an image
    run uint8 ``(N, C, H, W)`` pixels 0..255 (``model.json`` has C, H and W), for a vector run
    float32 ``(N, F)``. The normalisation is inside; the output is class logits ``(N, classes)``.

    A checkpoint into a plain PyTorch module (with dann installed; ``x`` as above)::

        from dann.export import load_mode
        model = load_mode("runs/RUN", "dann", data_dir="DATA").label_path()  # nn.Module, eval mode
        logits = model(x)  # the same network and normalisation as checkpoints/dann.pt

    The exported program, without dann::

        import torch
        model = torch.export.load("runs/RUN/export/dann/model.pt2").module()
        logits = model(x)
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a copy with contiguous weights: channels_last conv weights are saved with a warning
    module = copy.deepcopy(trained.label_path()).to(memory_format=torch.contiguous_format)
    sample = trained.data.target_test.x[:256]
    if len(sample) < 2:  # a batch of one would specialise the batch dimension
        sample = sample.repeat(2, *([1] * (sample.ndim - 1)))
    with torch.no_grad():
        expected = trained.logits(sample)
        if not torch.allclose(module(sample), expected, rtol=1e-5, atol=1e-5):
            raise DataError(
                f"{type(trained.method).__name__}.features(x, 'target') is not what its encoder('target') computes; "
                "override Method.encoder alongside Method.features so the label path can be exported"
            )
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (sample,), dynamic_shapes=({0: batch},))
    written = {"pt2": out_dir / "model.pt2"}
    torch.export.save(program, written["pt2"])
    if importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxscript") is not None:
        written["onnx"] = out_dir / "model.onnx"
        with warnings.catch_warnings():  # torch's exporter warns about its own internals: nothing to act on
            warnings.simplefilter("ignore", FutureWarning)
            onnx_program = torch.onnx.export(
                module, (sample,), dynamo=True, dynamic_shapes=({0: batch},), input_names=["x"], output_names=["logits"],
                verbose=False,
            )
        onnx_program.save(str(written["onnx"]))
    written["json"] = out_dir / "model.json"
    written["json"].write_text(json.dumps({
        "experiment": trained.experiment,
        "mode": trained.mode,
        "input": {
            "shape": ["N", *trained.input_shape],
            "dtype": str(trained.input_dtype).removeprefix("torch."),
            "layout": "NCHW" if len(trained.input_shape) == 3 else "rows of features",
            "values": "pixels 0..255, as stored; normalised inside" if trained.input_dtype == torch.uint8 else "raw features, as in the run's data",
        },
        "output": {"shape": ["N", trained.n_classes], "meaning": "class logits (softmax for probabilities)"},
        "normalisation": type(trained.data.prepare).__name__,
        "files": sorted(path.name for path in written.values()),
    }, indent=2) + "\n")
    return written
