"""`dann predict` and `dann export`: a trained mode out of its run directory, giving the run's own predictions."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHARED_DATA, needs_shared_data
from PIL import Image

from dann.cli import main
from dann.export import load_mode

HAS_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime", "onnxscript"))


def run(out: Path, *overrides: str, experiment: str = "blobs", data_dir: Path | None = None) -> Path:
    args = ["run", experiment, "--out", str(out), *(a for o in overrides for a in ("--set", o))]
    assert main([*args, *(["--data-dir", str(data_dir)] if data_dir else [])]) == 0
    return out


def read_predictions(path: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    return header, [r[0] for r in body], np.array([int(r[1]) for r in body]), np.array([[float(v) for v in r[2:]] for r in body])


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    # a moving average on: the final checkpoint must hold the averaged weights the scores were taken on
    return run(tmp_path_factory.mktemp("blobs") / "run", "train.steps=50", "train.ema_decay=0.9", "modes=[dann,source_only]")


@pytest.fixture(scope="module")
def adda(tmp_path_factory):
    return run(tmp_path_factory.mktemp("adda") / "run", "train.steps=50", "modes=[adda]")


def test_the_rebuilt_mode_scores_what_the_run_scored(blobs):
    trained = load_mode(blobs, "dann")
    split = trained.data.target_test
    accuracy = float((trained.logits(split.x).argmax(1) == split.y).float().mean())
    assert accuracy == pytest.approx(json.loads((blobs / "results" / "dann.json").read_text())["scores"]["target_acc"], abs=1e-6)


@pytest.mark.parametrize("kind", ["npy", "npz", "csv"])
def test_predict_writes_the_in_process_predictions(blobs, tmp_path, kind):
    trained = load_mode(blobs, "dann")
    x = trained.data.target_test.x[:50]
    path = tmp_path / f"in.{kind}"
    if kind == "npy":
        np.save(path, x.numpy())
    elif kind == "npz":
        np.savez(path, a=x[:20].numpy(), b=x[20:].numpy())
    else:
        np.savetxt(path, x.numpy(), delimiter=",", header="x0,x1", comments="", fmt="%.9g")
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(blobs), "--mode", "dann", "--input", str(path), "--out", str(out)]) == 0
    header, names, predicted, p = read_predictions(out)
    assert header == ["input", "predicted_class", "p_0", "p_1", "p_2"]
    expected = {"npy": [str(i) for i in range(50)], "csv": [str(i) for i in range(50)],
                "npz": [f"a[{i}]" for i in range(20)] + [f"b[{i}]" for i in range(30)]}[kind]
    assert names == expected
    logits = trained.logits(x)
    assert np.array_equal(predicted, logits.argmax(1).numpy())
    np.testing.assert_allclose(p, torch.softmax(logits, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)


def test_export_program_gives_the_in_process_logits(blobs, tmp_path):
    assert main(["export", str(blobs), "--mode", "dann", "--out", str(tmp_path)]) == 0
    trained = load_mode(blobs, "dann")
    x = trained.data.target_test.x
    program = torch.export.load(tmp_path / "model.pt2").module()
    assert torch.equal(program(x).argmax(1), trained.logits(x).argmax(1))
    torch.testing.assert_close(program(x), trained.logits(x))
    described = json.loads((tmp_path / "model.json").read_text())
    assert described["input"]["shape"] == ["N", 2] and described["input"]["dtype"] == "float32"
    assert described["output"]["shape"] == ["N", 3]


@pytest.mark.skipif(not HAS_ONNX, reason="needs onnx, onnxruntime and onnxscript (pip install 'dann[onnx]')")
def test_onnx_matches_pytorch_on_the_test_set(blobs, tmp_path):
    import onnxruntime

    assert main(["export", str(blobs), "--mode", "source_only", "--out", str(tmp_path)]) == 0
    trained = load_mode(blobs, "source_only")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for split in (trained.data.target_test, trained.data.source_test):
        (logits,) = session.run(None, {"x": split.x.numpy()})
        np.testing.assert_allclose(logits, trained.logits(split.x).numpy(), atol=1e-4, rtol=0)


def test_adda_predicts_and_exports_through_its_target_encoder(adda, tmp_path):
    trained = load_mode(adda)  # the run's only mode
    method = trained.method
    assert bool(method.adapting) and method.encoder("target") is method.target_encoder
    x = trained.data.target_test.x
    by_source_encoder = method.model(x)
    assert not torch.allclose(trained.logits(x), by_source_encoder)  # the two encoders have parted
    trained_path = tmp_path / "in.npy"
    np.save(trained_path, x.numpy())
    assert main(["predict", str(adda), "--input", str(trained_path), "--out", str(tmp_path / "p.csv")]) == 0
    assert np.array_equal(read_predictions(tmp_path / "p.csv")[2], trained.logits(x).argmax(1).numpy())
    assert main(["export", str(adda), "--out", str(tmp_path / "export")]) == 0
    program = torch.export.load(tmp_path / "export" / "model.pt2").module()
    torch.testing.assert_close(program(x), trained.logits(x))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: np.save(d / "in.npy", np.zeros((3, 5), np.float32)), "samples of shape (5,); this run's model takes (2,)"),
        (lambda d: (d / "in.csv").write_text("1,2,3\n"), "row 0 has 3 columns; this run's model takes 2 feature columns"),
        (lambda d: (d / "in.csv").write_text("a,b\n1,2\n3,x\n"), "row 1 has a value that is not a number"),
        (lambda d: (d / "in.bin").write_bytes(b"0"), "unknown kind '.bin'"),
    ],
)
def test_bad_inputs_are_one_line_errors(blobs, tmp_path, capsys, make, message):
    make(tmp_path)
    (path,) = [p for p in tmp_path.iterdir() if p.name.startswith("in.")]
    assert main(["predict", str(blobs), "--mode", "dann", "--input", str(path), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dann: error:") and message in err and err.count("\n") == 1


def test_a_mode_that_did_not_finish_is_refused(blobs, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(blobs, copy)
    (copy / "results" / "dann.json").unlink()
    assert main(["export", str(copy), "--mode", "dann"]) == 2
    assert "has not finished training" in capsys.readouterr().err
    assert main(["export", str(copy), "--mode", "cdan"]) == 2
    assert "has no mode 'cdan'" in capsys.readouterr().err
    assert main(["export", str(copy)]) == 2
    assert "choose one with --mode" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    # channel_mean: a normalisation fitted on the training images, so it must travel inside the export
    return run(
        tmp_path_factory.mktemp("mnist") / "run", "train.steps=10", "data.train_limit=300", "data.test_limit=100",
        "modes=[dann]", "jobs=1", "probe_samples=100", "train.progress_bar=false", "data.normalise=channel_mean",
        experiment="mnist-mnistm", data_dir=SHARED_DATA,
    )


@needs_shared_data
def test_mnist_predict_from_images_and_arrays_and_export(mnist, tmp_path):
    trained = load_mode(mnist, data_dir=str(SHARED_DATA))
    assert trained.input_dtype == torch.uint8 and trained.input_shape == (3, 28, 28)
    x = trained.data.target_test.x[:20]
    expected = trained.logits(x)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(x.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    Image.fromarray(x[0, 0].numpy()).save(tmp_path / "grey.png")
    np.save(tmp_path / "nhwc.npy", x.permute(0, 2, 3, 1).numpy())
    for source in (folder, tmp_path / "nhwc.npy"):
        out = tmp_path / f"{source.stem}.csv"
        assert main(["predict", str(mnist), "--input", str(source), "--out", str(out), "--data-dir", str(SHARED_DATA)]) == 0
        _, names, predicted, p = read_predictions(out)
        assert np.array_equal(predicted, expected.argmax(1).numpy())
        np.testing.assert_allclose(p, torch.softmax(expected, 1).numpy(), atol=1e-5)
    assert names == [str(i) for i in range(20)] and read_predictions(tmp_path / "images.csv")[1][0] == "00.png"

    assert main(["export", str(mnist), "--out", str(tmp_path / "export"), "--data-dir", str(SHARED_DATA)]) == 0
    program = torch.export.load(tmp_path / "export" / "model.pt2").module()
    test = trained.data.target_test.x
    assert torch.equal(program(test).argmax(1), trained.logits(test).argmax(1))
    torch.testing.assert_close(program(test), trained.logits(test), atol=1e-5, rtol=1e-5)
    assert json.loads((tmp_path / "export" / "model.json").read_text())["input"]["dtype"] == "uint8"
    if HAS_ONNX:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, {"x": test.numpy()})[0], trained.logits(test).numpy(), atol=1e-4, rtol=0)


@needs_shared_data
def test_mnist_images_of_another_size_are_refused(mnist, tmp_path, capsys):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "big.png")
    assert main(["predict", str(mnist), "--input", str(tmp_path), "--data-dir", str(SHARED_DATA), "--out", str(tmp_path / "p.csv")]) == 2
    assert "is 32x32 pixels (width x height); this run's model takes 28x28" in capsys.readouterr().err
