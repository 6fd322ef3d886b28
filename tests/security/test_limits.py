"""Resource limits and clear errors on the inputs that landed since the first sweep (issue 25, items 8-12):
structure.json fields, spectrum's FFT memory, architecture detection, options that passed validation
and then failed, and evaluations of non-finite outputs. Each: one line, its exit code, before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from tests.batch.test_batch import counting_decompositions, write

from .conftest import FAST, SMALL_CNN, invoke, tampered

RESNET32 = SMALL_CNN.parent / "resnet32_fashion_mnist.safetensors"


def one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    text = result.output.strip()
    assert len(text.splitlines()) == 1 and text.startswith("error:") and "unexpected" not in text, text
    for w in words:
        assert w in text, text


@pytest.mark.parametrize(("field", "value", "words"), [
    ("input_size", [1, 40000, 40000], ["input_size 1,40000,40000", "TNNCOMPRESS_MAX_INPUT_ELEMENTS"]),
    ("input_size", ["1", "a", 28], ["input_size[0] must be an integer"]),
    ("input_size", [1, 28], ["input_size must be a list of 3 integers"]),
])
def test_a_structure_input_size_is_checked_like_any_other(output_dir, tmp_path, field, value, words):
    copy = tampered(output_dir, tmp_path, **{field: value})
    for command in (["spectrum", copy, "--no-network"], ["eval", copy, "-d", "synthetic?n=4"]):
        one_line_error(invoke(*command), 2, str(copy / "structure.json"), *words)


@pytest.mark.parametrize(("change", "words"), [
    (lambda layer: layer["shape"].update(groups=0), "shape.groups must be an integer"),
    (lambda layer: layer.update(stride=[0, 0]), "stride[0] must be an integer"),
    (lambda layer: layer.update(load="dense"), "load must be an object"),
    (lambda layer: layer.update(padding="huge"), "padding must be a list of 2 integers"),
    (lambda layer: layer.update(ranks={"r": "16"}), "ranks.r must be an integer"),
    (lambda layer: layer.update(format="os.system"), "format 'os.system' is not one of"),
    (lambda layer: layer.update(bias="yes"), "bias must be true or false"),
])
def test_malformed_layer_records_are_named(output_dir, tmp_path, change, words):
    import json

    layers = json.loads((output_dir / "structure.json").read_text())["layers"]
    change(layers[0])
    copy = tampered(output_dir, tmp_path, layers=layers)
    one_line_error(invoke("eval", copy, "-d", "synthetic?n=4"), 2, f"layer record '{layers[0]['name']}'", words)


def test_a_layer_recorded_twice_is_refused(output_dir, tmp_path):
    import json

    layers = json.loads((output_dir / "structure.json").read_text())["layers"]
    copy = tampered(output_dir, tmp_path, layers=layers + layers[:1])
    one_line_error(invoke("spectrum", copy, "--no-network"), 2, "recorded twice")


def test_spectrum_refuses_an_fft_it_cannot_hold_before_computing_it(tmp_path, monkeypatch):
    """An input size under the input-size limit whose FFTs are not (1,2048,2048 needs 32 GiB for ResNet-32's
    first 16x16 layer, refused at the default 4 GiB; the limit is lowered here so that 128x128 shows it)."""
    monkeypatch.setenv("TNNCOMPRESS_MAX_SPECTRUM_BYTES", str(50 << 20))
    one_line_error(invoke("spectrum", RESNET32, "--input-size", "1,128,128", "--no-network"), 2,
                   "layer layer1.0.conv1", "on a 130x130 grid need about 0.1 GiB", "TNNCOMPRESS_MAX_SPECTRUM_BYTES")


@pytest.mark.slow
def test_spectrum_memory_estimate_bounds_what_the_fft_uses():
    """The estimate is an upper bound of the peak memory of the FFT path, and not a loose one: measured as
    the growth of a fresh process's peak resident set (VmHWM) over one layer's values."""
    code = ("import torch\n"
            "from torch import nn\n"
            "from tnncompress.spectral import layer_spectrum\n"
            "def hwm():\n"
            "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024\n"
            "conv = nn.Conv2d(32, 32, 3, padding=1, padding_mode='circular').double()\n"
            "layer_spectrum('warm', conv, (8, 8))\n"
            "before = hwm()\n"
            "layer_spectrum('c', conv, (256, 256))\n"
            "print(hwm() - before)\n")
    from tnncompress.spectral.fft import fft_bytes

    used = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    estimate = fft_bytes((32, 32, 3, 3), (256, 256)) * 8
    assert used <= estimate <= 3 * used, (used, estimate)


def test_bait_key_names_do_not_make_detection_build_hundreds_of_models(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from tnncompress.io import timm_models

    names = set()
    for name in sorted(timm_models.names()):
        cfg = timm.models.get_pretrained_cfg(name)
        for key in [cfg.first_conv] + list(cfg.classifier if isinstance(cfg.classifier, (list, tuple))
                                           else [cfg.classifier]):
            if isinstance(key, str):
                names.add(f"{key}.weight")
    state = {k: torch.zeros(1, 1, 1, 1) if "conv" in k or "stem" in k or "embed" in k else torch.zeros(1, 1)
             for k in names}
    bait = tmp_path / "bait.safetensors"
    save_file(state, str(bait))
    built = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: built.append(a) or real(*a, **k))
    one_line_error(invoke("inspect", bait), 2, "timm models have the stem and classifier names", "--arch timm:NAME",
                   "TNNCOMPRESS_MAX_DETECT_BUILDS")
    assert built == []  # refused before building any


@pytest.mark.parametrize(("args", "words"), [
    (["--kd", "e2e", "--kd-budget", "inf"], ["--kd-budget must be positive and at most"]),
    (["--kd", "e2e", "--kd-budget", "1e400"], ["--kd-budget"]),
    (["--kd", "seq", "--cache-memory", "inf"], ["--cache-memory 'INF'"]),
    (["--deploy-batch", "100000000"], ["--deploy-batch 100,000,000", "TNNCOMPRESS_MAX_BATCH_ELEMENTS"]),
    (["--latency", "--latency-batches", "50000000"], ["--latency-batches 50,000,000"]),
])
def test_options_that_passed_validation_and_then_failed_are_refused_before_any_work(tmp_path, monkeypatch,
                                                                                   args, words):
    from tnncompress.pipeline import stages

    calls = counting_decompositions(monkeypatch)
    fast = [a for a in FAST if a not in ("--no-latency",)] if "--latency" in args else FAST
    r = invoke("run", SMALL_CNN, "-f", "cp", "-r", "0.2", "-d", "fashion-mnist", "--out", tmp_path / "o",
               "--eval-limit", "16", *fast, *args)
    one_line_error(r, 2, *words)
    assert calls == [] and not (tmp_path / "o").exists() and stages


@pytest.mark.parametrize(("sweep", "words"), [("seed=abc", "seed: expected int, got 'abc'"),
                                              ("compress.rate=abc", "expected float")])
def test_sweep_values_are_checked_against_their_option(tmp_path, sweep, words):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write(recipes, "a")
    one_line_error(invoke("batch", recipes, "-o", tmp_path / "out", "--sweep", sweep), 2, words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("data", ["fashion-mnist", "synthetic?n=16"])
def test_a_perturbation_that_is_not_finite_fails_the_evaluation(data):
    one_line_error(invoke("eval", SMALL_CNN, "-d", data, "--limit", "16", "--noise", "1e308"), 1,
                   "noise 1e+308", "not finite")


class Fragile(torch.nn.Module):
    """Finite on clean inputs, NaN once an input leaves the pixel range by far."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return torch.where(x.flatten(1).abs().amax(1, keepdim=True) > 50, y * float("nan"), y)


def test_non_finite_outputs_under_an_attack_fail_the_evaluation(tmp_path, monkeypatch):
    monkeypatch.setattr("tnncompress.evaluate.robust.pixel_scale", lambda data: None)  # input units: no clipping
    path = tmp_path / "fragile.pt"
    torch.save(Fragile(), path)
    one_line_error(invoke("eval", path, "--trust-checkpoint", "-d", "synthetic?n=16", "--input-size", "1,28,28",
                          "--noise", "1e3"), 1, "the model's outputs are not finite")
