"""train.device and train.precision, exercised on the CPU (the CUDA paths are the same calls; benchmarks/gpu_check.py runs them on a GPU)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import dann
from dann.data.blobs import BlobsConfig, make_blobs_domains
from dann.errors import ConfigError
from dann.train.device import resolve_device

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def _data():
    return make_blobs_domains(BlobsConfig(train_per_class=30, test_per_class=10))


def _weights(**train):
    cfg = dann.TrainConfig(steps=20, batch_size=16, **train)
    return dann.fit(_data(), "dann", train_config=cfg, seed=0).method.state_dict()


def test_auto_is_the_cpu_without_a_gpu_and_cpu_is_the_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(
    "name, message",
    [("gpu", "train.device must be auto, cpu, cuda or cuda:N, got 'gpu'"), ("cuda:x", "must be auto, cpu, cuda or cuda:N")],
)
def test_a_device_name_that_does_not_exist_is_refused(name, message):
    with pytest.raises(ConfigError, match=message):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line_naming_the_fix():
    with pytest.raises(ConfigError, match="sees no CUDA GPU; use train.device=cpu"):
        dann.fit(_data(), "dann", train_config=dann.TrainConfig(steps=1, device="cuda"))


def test_fp16_needs_a_gpu():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        dann.fit(_data(), "dann", train_config=dann.TrainConfig(steps=1, device="cpu", precision="fp16"))


def test_bf16_autocast_trains_on_the_cpu_close_to_fp32_and_not_equal():
    fp32, bf16 = _weights(device="cpu"), _weights(device="cpu", precision="bf16")
    assert set(fp32) == set(bf16) and all(v.dtype == torch.float32 for v in bf16.values())  # weights stay fp32
    differences = [float((fp32[k] - bf16[k]).abs().max()) for k in fp32 if fp32[k].is_floating_point()]
    assert 0 < max(differences) < 0.05


def test_bf16_run_resumes_bit_for_bit(tmp_path):
    cfg = dann.TrainConfig(steps=20, batch_size=16, device="cpu", precision="bf16", checkpoint_every=10)

    class Stop(Exception):
        pass

    def stop_at(step):
        steps = iter(range(1, 100))

        def evaluate(method):
            if next(steps) == step:
                raise Stop
            return {}

        return evaluate

    cfg_eval = dann.TrainConfig(**{**cfg.__dict__, "eval_every": 1})
    with pytest.raises(Stop):
        dann.fit(_data(), "dann", train_config=cfg_eval, seed=0, evaluate=stop_at(15), checkpoint=tmp_path / "ck.pt")
    resumed = dann.fit(_data(), "dann", train_config=cfg, seed=0, checkpoint=tmp_path / "ck.pt").method.state_dict()
    straight = _weights(device="cpu", precision="bf16", checkpoint_every=10)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_the_gpu_check_script_runs_its_path_on_the_cpu(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--device", "cpu", "--steps", "20"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["device"] == "cpu" and {"fp32", "bf16"} <= set(line)
    assert line["bf16"]["images_per_second"] > 0 and 0 <= line["bf16"]["target_acc"] <= 1
