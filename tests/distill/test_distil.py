"""Seq-KD and E2E-KD recover accuracy that Layer-Decomp alone loses; resumed runs equal uninterrupted
ones; a diverging loss is caught."""

import importlib
import math

import pytest
import torch

from tnncompress.distill import CHECKPOINT_FILE, Context, DistillConfig, KdData, distil
from tnncompress.evaluate import evaluate
from tnncompress.train.hooks import observe_checkpoints

from .conftest import states_close, teacher_and_student

checkpoint_module = importlib.import_module("tnncompress.train.checkpoint")

STEPS = 150


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["seq", "e2e"])
def test_distillation_raises_accuracy_well_above_layer_decomp(bundled_data, algorithm):
    train, test = bundled_data
    teacher, student = teacher_and_student("mcp", 0.2)
    before = evaluate(student, test, limit=2000).top1
    # 3e-3 rather than the dissertation's 1e-3: a budget of 150 updates is tiny (see RESULTS.md)
    config = DistillConfig(algorithm=algorithm, steps=STEPS, lr=3e-3, eval_limit=2000)
    result = distil(teacher, student, KdData(train, test, (1, 28, 28)), config, Context())
    after = evaluate(student, test, limit=2000).top1
    # Layer-Decomp alone keeps about a third of the teacher's 93%; 150 updates bring back most of the rest
    # (measured: seq 0.33 -> 0.84, e2e 0.33 -> 0.89).
    assert before < 0.5
    assert after > before + 0.25, (before, after)
    assert result.updates == STEPS
    assert result.curve[0].top1 == pytest.approx(before) and result.curve[-1].top1 == pytest.approx(after)
    if algorithm == "seq":
        assert [u.unit for u in result.phases] == ["conv2", "conv3", "fc1"]
        assert [u.steps for u in result.phases] == [50, 50, 50]
    # the teacher is untouched, and the student's parameters train again outside distillation
    assert all(p.requires_grad for p in student.parameters())


class _Interrupt(Exception):
    pass


def _run(config, data, checkpoint_dir=None, resume=False, stop_at=None):
    train, test = data
    teacher, student = teacher_and_student("cp", 0.2)
    seen = []

    def on_checkpoint(payload):
        seen.append((payload["phase"], payload["state"]["step"]))
        if stop_at is not None and seen[-1] == stop_at:
            raise _Interrupt
    try:
        with observe_checkpoints(on_checkpoint):
            section = distil(teacher, student, KdData(train, test, (1, 28, 28)), config,
                             Context(checkpoints=checkpoint_dir, resume=resume))
    except _Interrupt:
        return None, student, seen
    return section, student, seen


@pytest.mark.slow
@pytest.mark.parametrize(("algorithm", "stop_at"), [("seq", (1, 0)), ("e2e", (0, 20))])
def test_a_resumed_run_reaches_the_uninterrupted_result(bundled_data, tmp_path, algorithm, stop_at):
    """Interrupted after the first Seq-KD unit, or inside the E2E-KD phase (after step 20 of 40)."""
    config = DistillConfig(algorithm=algorithm, steps=40 if algorithm == "e2e" else 60, eval_limit=500,
                           plan="optimal", checkpoint_every=20)
    reference, ref_student, _ = _run(config, bundled_data)
    interrupted, _, seen = _run(config, bundled_data, tmp_path, stop_at=stop_at)
    assert interrupted is None and seen[-1] == stop_at and (tmp_path / CHECKPOINT_FILE).is_file()
    resumed, student, _ = _run(config, bundled_data, tmp_path, resume=True)
    assert states_close(student, ref_student, rtol=1e-5, atol=1e-6)
    assert resumed.updates == reference.updates
    assert [p.after for p in resumed.curve] == [p.after for p in reference.curve]
    assert [p.top1 for p in resumed.curve] == pytest.approx([p.top1 for p in reference.curve], abs=0.002)


@pytest.mark.slow
def test_a_diverging_loss_restores_the_last_good_state_and_lowers_the_learning_rate(bundled_data):
    train, test = bundled_data
    teacher, student = teacher_and_student("cp", 0.2)
    config = DistillConfig(algorithm="e2e", steps=40, lr=10.0, eval_limit=500, max_retries=8)
    result = distil(teacher, student, KdData(train, test, (1, 28, 28)), config, Context())
    events = result.events
    assert events and all("learning rate x0.1" in e.action or "stopped" in e.action for e in events)
    assert result.phases[0].lr_reductions == len(events)
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert math.isfinite(evaluate(student, test, limit=500).nll)


@pytest.mark.slow
def test_a_resumed_run_takes_the_interrupted_runs_measured_plans_bit_for_bit(bundled_data, tmp_path, monkeypatch):
    """Plans timed per run ("measure") are recorded in the checkpoint and pinned on resume: here the
    resumed process would measure other plans (every measurement now returns the naive order), and still
    ends bit for bit where the interrupted run's plans lead."""
    from tnncompress.einsum import contract, forget_plans, paths, pin_plans

    config = DistillConfig(algorithm="e2e", steps=40, eval_limit=200, plan="measure", checkpoint_every=20)
    forget_plans()
    interrupted, _, seen = _run(config, bundled_data, tmp_path, stop_at=(0, 20))
    assert interrupted is None and seen[-1] == (0, 20)
    recorded = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["plans"]
    assert recorded and any(json_key_has_backward(k) for k in recorded)

    forget_plans()
    pin_plans(recorded)  # the reference: uninterrupted, with the same plans
    _, reference, _ = _run(config, bundled_data)

    naive = {}
    def measure_naively(expr, *_args, **_kwargs):
        naive[expr.text] = paths.naive_path(expr.network.n)
        return naive[expr.text], {}
    monkeypatch.setattr(contract, "fastest_path", measure_naively)
    forget_plans()
    kept = (tmp_path / CHECKPOINT_FILE).read_bytes()
    resumed, student, _ = _run(config, bundled_data, tmp_path, resume=True)
    assert resumed.updates == 40
    sa, sb = student.state_dict(), reference.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    # the control: resumed without the recorded plans, the naive ones give other weights
    (tmp_path / CHECKPOINT_FILE).write_bytes(kept)
    monkeypatch.setattr(checkpoint_module, "pin_plans", lambda plans: None)
    forget_plans()
    _, unpinned, _ = _run(config, bundled_data, tmp_path, resume=True)
    assert naive and not all(torch.equal(v, sb[k]) for k, v in unpinned.state_dict().items())
    forget_plans()


def json_key_has_backward(key: str) -> bool:
    import json

    return json.loads(key)[6] is True


def test_checkpoint_observers_see_each_saved_state_only_inside_their_block():
    from tnncompress.train.hooks import checkpoint_saved

    seen = []
    with observe_checkpoints(seen.append), observe_checkpoints(lambda p: seen.append(("second", p["n"]))):
        checkpoint_saved({"n": 1})
    checkpoint_saved({"n": 2})  # no observer left: nothing is called
    assert seen == [{"n": 1}, ("second", 1)]
