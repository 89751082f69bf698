"""Data-parallel training (torch.distributed, gloo): 2 forked ranks give the one-process result; rank 0 alone writes
checkpoints; a killed run resumes; a failing or missing rank is one clear error, never a hang.

Tolerance of the equality tests, and why: every step of 2 ranks is mathematically the one-process step on the whole
batch (each rank's mean loss weighted by its share, gradients averaged by DDP, BatchNorm statistics from all-reduced
sums), so the runs differ only in the order float additions happen (a batch's gradient summed as two partial sums,
then averaged; BatchNorm's variance from float64 sums instead of torch's kernel). One such difference is an ulp of a
gradient (~1e-7 relative); Adam's normalised update turns it into ~lr·1e-7 = 3e-10 per step, and a few dozen steps
stay within a few ulps of the weights (|w| < 1: ulp ~6e-8; measured after 3 epochs of 7 steps, `python
benchmarks/distributed.py --fidelity`: 7.5e-9 to 3e-8 for the MLP, 6e-8 to 1.5e-7 for the CNN with BatchNorm). We
allow 1e-5: ~70 times the largest, and ~300 times below one step (lr = 3e-3), so a real error — a sample dropped or
counted twice, the uneven last batch weighted as a mean of means (measured 1e-2), per-rank BatchNorm statistics
(measured 8e-3) — fails it. Longer runs at larger learning rates drift further apart, as runs on 1 and 2 intra-op
threads do (the benchmark's long run: 1.4e-4 for 2 ranks, 1.8e-4 for 2 threads, same accuracy); these tests keep to
the short settings the bound was derived for.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modelpress.compress import distributed
from modelpress.compress import train as train_mod
from modelpress.compress.train import fit
from modelpress.errors import InputError, ModelpressError
from modelpress.sources import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5
BATCH = 64


@pytest.fixture(autouse=True)
def _short_timeouts(monkeypatch):
    """A rank that hangs would fail these tests in seconds (the forked ranks inherit the setting)."""
    monkeypatch.setattr(distributed, "TIMEOUT_S", 20.0)
    monkeypatch.setattr(distributed, "GRACE_S", 2.0)


def _data(digits, n):
    train, _ = digits
    return train.subset(np.arange(n))


def _model(digits, kind="mlp"):
    _, test = digits
    kwargs = {"hidden": [32]} if kind == "mlp" else {"channels": [4, 8], "hidden": 16}
    return load_model(f"zoo:{kind}", data=test, kwargs=kwargs, seed=0).module


def _max_diff(a, b) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def _fork_ranks(rank_main, *, timeout_s: float, world: int = 2) -> list:
    """Fork ``world`` processes running ``rank_main(rank)`` as torchrun would start them; join each within
    ``timeout_s`` (a hung one is killed, so its exit code is not 0)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=rank_main, args=(i,)) for i in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout_s)
        if p.exitcode is None:
            p.kill()
    return procs


def _accuracy(module, data) -> float:
    with torch.no_grad():
        out = module(torch.from_numpy(np.ascontiguousarray(data.inputs["input"])))
    return float((out.argmax(1).numpy() == data.y).mean())


# 6 full batches and a last one of 1 sample (rank 1 gets none: it runs a weight-0 sample) or of 3 (2 + 1 samples)
# zoo:cnn has BatchNorm: its statistics are the whole batch's (all-reduced sums), as in one process
@pytest.mark.parametrize("n, kind, optimizer", [(6 * BATCH + 1, "cnn", "adamw"), (6 * BATCH + 3, "mlp", "sgd")])
def test_two_ranks_train_like_one_process(digits, n, kind, optimizer):
    data = _data(digits, n)
    one, two = _model(digits, kind), _model(digits, kind)
    assert _max_diff(one, two) == 0
    log1 = fit(one, data, epochs=3, lr=3e-3, batch_size=BATCH, seed=0, optimizer=optimizer)
    log2 = fit(two, data, epochs=3, lr=3e-3, batch_size=BATCH, seed=0, optimizer=optimizer, nproc=2)
    assert log2["nproc"] == 2 and "nproc" not in log1
    assert log2["epochs_run"] == 3 and not two.training
    assert _max_diff(one, two) <= ATOL
    np.testing.assert_allclose(log2["loss_per_epoch"], log1["loss_per_epoch"], rtol=1e-6)
    _, test = digits
    assert abs(_accuracy(one, test) - _accuracy(two, test)) <= 1 / len(test)  # at most one borderline sample
    assert _max_diff(one, _model(digits, kind)) > 100 * ATOL  # and training moved the weights far beyond ATOL


def test_only_rank_zero_writes_checkpoints(digits, tmp_path, monkeypatch):
    calls = tmp_path / "saves.txt"
    original = train_mod._Checkpoints.save

    def spy(self, *args, **kwargs):
        with open(calls, "a") as f:
            f.write(f"{distributed.rank()} {os.getpid()}\n")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(train_mod._Checkpoints, "save", spy)  # the forked ranks inherit the spy
    module = _model(digits)
    fit(module, _data(digits, 4 * BATCH), epochs=2, lr=3e-3, batch_size=BATCH, nproc=2,
        checkpoint_dir=tmp_path / "ckpt")
    lines = [line.split() for line in calls.read_text().splitlines()]
    assert [rank for rank, _ in lines] == ["0", "0"]  # one save per epoch, both by rank 0
    assert all(int(pid) != os.getpid() for _, pid in lines)  # written by the forked rank, not the caller
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["epoch-0002.safetensors", "state.json"]


def test_killed_run_resumes_from_the_last_checkpoint(digits, tmp_path):
    data = _data(digits, 4 * BATCH + 5)
    steps = -(-len(data) // BATCH)
    folder = tmp_path / "ckpt"
    seen = {"n": 0}

    def kill_rank_one_in_epoch_two(module, inputs, targets):
        seen["n"] += 1  # per process: each forked rank counts its own steps
        if distributed.rank() == 1 and seen["n"] == steps + 2:  # epoch 1 is checkpointed: rank 0 saved it before
            os.kill(os.getpid(), signal.SIGKILL)  # the all-reduce of epoch 2's first step let rank 1 get here
        return F.cross_entropy(module(*inputs), targets)

    def cross_entropy(module, inputs, targets):
        return F.cross_entropy(module(*inputs), targets)

    killed = _model(digits)
    with pytest.raises(ModelpressError, match=r"rank 1 of 2 was killed by signal 9"):
        fit(killed, data, epochs=3, lr=3e-3, batch_size=BATCH, nproc=2, loss_fn=kill_rank_one_in_epoch_two,
            checkpoint_dir=folder)
    assert (folder / "state.json").is_file()
    resumed = _model(digits)
    log = fit(resumed, data, epochs=3, lr=3e-3, batch_size=BATCH, nproc=2, loss_fn=cross_entropy,
              checkpoint_dir=folder)
    assert log["resumed_from_epoch"] == 1 and log["epochs_run"] == 3 and len(log["loss_per_epoch"]) == 3
    alone = _model(digits)
    fit(alone, data, epochs=3, lr=3e-3, batch_size=BATCH, loss_fn=cross_entropy)
    assert _max_diff(alone, resumed) <= ATOL


def test_a_rank_that_raises_is_one_clear_error_and_stops_the_others(digits):
    def fail_on_rank_one(module, inputs, targets):
        if distributed.rank() == 1:
            raise ValueError("boom on purpose")
        return F.cross_entropy(module(*inputs), targets)

    started = time.monotonic()
    with pytest.raises(ModelpressError) as info:
        fit(_model(digits), _data(digits, 2 * BATCH), epochs=1, lr=3e-3, batch_size=BATCH, nproc=2,
            loss_fn=fail_on_rank_one)
    assert not isinstance(info.value, InputError) and info.value.exit_code == 1
    assert str(info.value) == "data-parallel training failed on rank 1 of 2: ValueError: boom on purpose"
    assert time.monotonic() - started < distributed.TIMEOUT_S  # rank 0 was stopped, not left to time out
    assert not [p for p in __import__("multiprocessing").active_children() if p.name.startswith("modelpress-rank")]


def test_an_input_error_in_a_rank_stays_exit_2(digits):
    def bad_input(module, inputs, targets):
        raise InputError("the loss needs labels")

    with pytest.raises(InputError, match=r"failed on rank \d of 2: the loss needs labels") as info:
        fit(_model(digits), _data(digits, 2 * BATCH), epochs=1, lr=3e-3, batch_size=BATCH, nproc=2,
            loss_fn=bad_input)
    assert info.value.exit_code == 2


def test_joining_times_out_when_a_rank_never_comes():
    started = time.monotonic()
    with pytest.raises(ModelpressError, match=r"rank 0 of 2 could not join the torch.distributed group at "
                                              r"127\.0\.0\.1:\d+ within 1 s"):
        distributed.join(distributed.Group(0, 2), addr="127.0.0.1", port=distributed.free_port(), timeout_s=1)
    assert time.monotonic() - started < 15  # torch's store waits the timeout (and one retry), then gives up


@pytest.mark.parametrize("nproc", [0, -1, distributed.MAX_NPROC + 1])
def test_bad_nproc_is_an_input_error(digits, nproc):
    with pytest.raises(InputError, match=r"fit\.nproc must be in \[1, 64\]"):
        fit(_model(digits), _data(digits, BATCH), epochs=1, lr=3e-3, batch_size=BATCH, nproc=nproc)


def test_more_processes_than_the_batch_is_an_input_error(digits):
    from modelpress.compress.train import TrainConfig

    with pytest.raises(InputError, match=r"train\.nproc = 8 is larger than train\.batch_size = 4"):
        TrainConfig(nproc=8, batch_size=4)


def test_torchrun_environment_is_detected(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.torchrun_env() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.torchrun_env() is None  # one process: train alone
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(InputError, match="WORLD_SIZE=4 is set but MASTER_ADDR is not"):
        distributed.torchrun_env()
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert distributed.torchrun_env() == distributed.Group(3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InputError, match=r"RANK='4' must be in \[0, 4\)"):
        distributed.torchrun_env()


def test_torchrun_ranks_train_together_from_the_environment(digits, tmp_path):
    """What ``torchrun --nproc-per-node 2 script.py`` does, without the launcher's start-up: two processes with its
    variables call fit(); they join the group from the environment and end with the one-process weights."""
    from safetensors.torch import load_file, save_file

    data = _data(digits, 6 * BATCH + 3)
    port = distributed.free_port()

    def rank_main(index: int) -> None:
        code = 0
        try:
            os.environ.update(WORLD_SIZE="2", RANK=str(index), LOCAL_RANK=str(index), MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(port))
            module = _model(digits)
            log = fit(module, data, epochs=2, lr=3e-3, batch_size=BATCH, checkpoint_dir=tmp_path / "ckpt")
            assert log["nproc"] == 2
            save_file(module.state_dict(), str(tmp_path / f"rank{index}.safetensors"))
            distributed.leave()
        except BaseException as exc:  # noqa: BLE001 — reported through the file the test reads
            (tmp_path / f"error{index}.txt").write_text(repr(exc))
            code = 1
        os._exit(code)

    procs = _fork_ranks(rank_main, timeout_s=60)
    errors = [p.read_text() for p in tmp_path.glob("error*.txt")]
    assert [p.exitcode for p in procs] == [0, 0], errors
    alone = _model(digits)
    fit(alone, data, epochs=2, lr=3e-3, batch_size=BATCH)
    ranks = [load_file(str(tmp_path / f"rank{i}.safetensors")) for i in range(2)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # all-reduced: the same bits everywhere
    assert max(float((ranks[0][k] - v).abs().max()) for k, v in alone.state_dict().items()) <= ATOL
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-0002.safetensors", "state.json"]


@pytest.mark.parametrize("value", ["0", "65"])
def test_cli_nproc_out_of_range_is_exit_2(run_cli, tmp_path, value):
    result = run_cli("distill", "--teacher", "zoo:mlp", "--student", "zoo:mlp", "--data", "sklearn:iris",
                     "--nproc", value, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "nproc" in result.stderr and "[1, 64]" in result.stderr and value in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_yaml_nproc_trains_data_parallel_and_is_validated(run_cli, tmp_path):
    import json

    spec = tmp_path / "ddp.yaml"
    body = ("name: ddp\nmodel: zoo:mlp\nseed: 0\ndata: {eval: sklearn:iris}\nstages:\n"
            "  - {type: train, epochs: 2, batch_size: 16, nproc: %s}\nevaluate: {batch_sizes: [1], latency: false}\n")
    spec.write_text(body % "65")
    bad = run_cli("run", spec, "--out", tmp_path / "reports")
    assert bad.exit_code == 2 and "ddp.yaml:6" in bad.stderr and "nproc" in bad.stderr
    spec.write_text(body % "2")
    ok = run_cli("run", spec, "--out", tmp_path / "reports")
    assert ok.exit_code == 0, ok.stderr
    report = json.loads(next((tmp_path / "reports").rglob("report.json")).read_text())
    stage = next(s for s in report["stages"] if s.get("kind") == "train" or s.get("type") == "train")
    assert '"nproc": 2' in json.dumps(stage)


def test_distill_stage_with_two_ranks_matches_one(digits, tmp_path):
    """distill's loss (a closure over the frozen teacher) runs in the forked ranks; same student as one process."""
    from modelpress.compress import StageContext, config_for, run_stage

    train, test = digits
    data = train.subset(np.arange(4 * BATCH + 1))
    teacher = load_model("zoo:mlp", data=test, kwargs={"hidden": [64]}, seed=1)
    fit(teacher.module, data, epochs=2, lr=3e-3, batch_size=BATCH)
    params = {"teacher": "input", "student": "zoo:cnn", "student_kwargs": {"channels": [4, 8], "hidden": 16},
              "epochs": 2, "batch_size": BATCH, "seed": 0}
    students = [run_stage(teacher, config_for("distill", {**params, "nproc": n}),
                          StageContext(work_dir=tmp_path / f"n{n}", train=data)) for n in (1, 2)]
    assert students[1].metadata["distillation"]["training"]["nproc"] == 2
    assert students[1].history[-1]["params"]["nproc"] == 2
    assert _max_diff(students[0].module, students[1].module) <= ATOL


def test_distill_with_forked_ranks_refuses_an_onnx_teacher(digits, tmp_path):
    """onnxruntime sessions hang in a forked child: refused in one line before any rank starts."""
    from modelpress.compress import StageContext, config_for, run_stage

    train, test = digits
    teacher = load_model("zoo:mlp", data=test, kwargs={"hidden": [16]}, seed=1)
    onnx_like = teacher.evolve(format="onnx", module=None, path=tmp_path / "teacher.onnx")
    config = config_for("distill", {"teacher": "input", "student": "zoo:mlp", "student_kwargs": {"hidden": [8]},
                                    "epochs": 1, "nproc": 2})
    with pytest.raises(InputError, match=r"distill\.nproc = 2 needs a torch teacher; .*teacher\.onnx is onnx"):
        run_stage(onnx_like, config, StageContext(work_dir=tmp_path, train=train.subset(np.arange(BATCH))))


def test_a_corrupt_checkpoint_is_one_input_error_from_the_ranks(digits, tmp_path):
    data, folder = _data(digits, 2 * BATCH), tmp_path / "ckpt"
    fit(_model(digits), data, epochs=1, lr=3e-3, batch_size=BATCH, nproc=2, checkpoint_dir=folder)
    tensors = folder / "epoch-0001.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])
    with pytest.raises(InputError, match=r"failed on rank \d of 2: checkpoint .*epoch-0001\.safetensors is truncated "
                                         r"or corrupt .*delete .*ckpt to start the training over"):
        fit(_model(digits), data, epochs=1, lr=3e-3, batch_size=BATCH, nproc=2, checkpoint_dir=folder)


def test_torchrun_ranks_with_other_data_fail_fast(digits, tmp_path):
    """Ranks that would run a different number of steps are an input error at once, not a wait for the timeout."""

    port = distributed.free_port()

    def rank_main(index: int) -> None:
        os.environ.update(WORLD_SIZE="2", RANK=str(index), LOCAL_RANK=str(index), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
        try:
            fit(_model(digits), _data(digits, BATCH * (2 + index)), epochs=1, lr=3e-3, batch_size=BATCH)
        except InputError as exc:
            (tmp_path / f"error{index}.txt").write_text(str(exc))
        os._exit(0)

    _fork_ranks(rank_main, timeout_s=30)
    assert not (tmp_path / "error0.txt").exists()
    assert (tmp_path / "error1.txt").read_text().startswith("rank 1 would train {'samples': 192")


def test_a_rank_that_hangs_is_an_error_after_the_timeout(digits, monkeypatch):
    monkeypatch.setattr(distributed, "TIMEOUT_S", 2.0)

    def hang_on_rank_one(module, inputs, targets):
        if distributed.rank() == 1:
            time.sleep(3600)
        return F.cross_entropy(module(*inputs), targets)

    started = time.monotonic()
    with pytest.raises(ModelpressError, match=r"rank 0 of 2 waited 2 s for the other ranks, which stopped answering"):
        fit(_model(digits), _data(digits, 2 * BATCH), epochs=1, lr=3e-3, batch_size=BATCH, nproc=2,
            loss_fn=hang_on_rank_one)
    assert time.monotonic() - started < 30  # the collective's timeout, then the sleeping rank is stopped


def test_prune_finetune_with_two_ranks_matches_one(digits, tmp_path):
    """prune's fine-tuning calls fit with the stage's nproc: the pruned-and-fine-tuned weights of 2 ranks equal one
    process's (masks stay applied in the ranks: the pruned weights stay exactly zero)."""
    from modelpress.compress import StageContext, config_for, run_stage

    train, test = digits
    data = train.subset(np.arange(3 * BATCH + 3))
    model = load_model("zoo:mlp", data=test, kwargs={"hidden": [32]}, seed=0)
    params = {"method": "magnitude", "amount": 0.5, "finetune_epochs": 2, "batch_size": BATCH, "seed": 0}
    pruned = [run_stage(model, config_for("prune", {**params, "nproc": n}),
                        StageContext(work_dir=tmp_path / f"n{n}", train=data)) for n in (1, 2)]
    assert _max_diff(pruned[0].module, pruned[1].module) <= ATOL
    weights = [p.module.state_dict() for p in pruned]
    for name, w in weights[1].items():
        if name.endswith("weight") and w.dim() == 2:
            assert torch.equal(w == 0, weights[0][name] == 0)
            assert float((w == 0).float().mean()) > 0.3  # still pruned after the data-parallel fine-tune


def test_prune_nproc_larger_than_the_batch_is_exit_2(run_cli, tmp_path):
    result = run_cli("prune", "zoo:mlp", "--data", "sklearn:iris", "--method", "magnitude", "--amount", "0.5",
                     "--finetune-epochs", "1",
                     "--batch-size", "2", "--nproc", "3", "-o", tmp_path / "p")
    assert result.exit_code == 2, result.stderr
    assert "prune.nproc = 3 is larger than prune.batch_size = 2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
