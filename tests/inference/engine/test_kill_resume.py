"""Fault test: SIGKILL a checkpointed ``fit`` at random points; every resume ends bit-exact.

A small VAE (float64, 200 rows, seed 0, ``checkpoint_every=1``) is fitted for ``EPOCHS``
epochs in processes that are killed with SIGKILL after a seeded random delay spread over the
whole life of a run, then resumed with ``resume=True`` in a new process, itself perhaps killed,
until one finishes. ``KILLS`` processes are killed in all. After every kill the checkpoint on
disk must load (it is never half-written) and hold exactly the weights of an uninterrupted run
after the same number of epochs; the next process must start training at the epoch after that
checkpoint (the first epoch if the kill came before any checkpoint); and each interrupted run
must end with the weights and per-epoch losses of the uninterrupted run, compared with
``torch.equal`` and ``==``.

Importing torch, Pyro and the package costs seconds per process (4 s on a loaded 2-core
machine), so the fits run in processes forked from one helper process that imported everything
once (``ZYGOTE``). The helper kills its own child (it has not reaped it, so the pid cannot
have been reused), and every fit, killed or not, starts from the same forked state.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from inference.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint

EPOCHS = 12
KILLS = 20
KILLS_PER_RUN = 4  # a run is killed up to 4 times (resumes of resumes), then finishes

# The helper process: imports once, warms the engine up, then forks one fit per request.
# A request is a JSON line {"dir": ..., "delay": seconds or null}; the answer a JSON line
# {"pid": the child's, "killed": bool, "code": exit status or null, "seconds": how long it lived}.
# Each child appends {"pid", "epoch"} to RUN_DIR/trained.jsonl after every epoch it trains.
ZYGOTE = textwrap.dedent(
    """
    import json, os, signal, sys, tempfile, time, warnings

    import pyro
    import torch

    import guides
    import inference
    import vi_models

    EPOCHS = int(sys.argv[1])
    LIMIT = 120.0  # seconds: a fit that runs longer is killed and reported as hung
    torch.set_num_threads(1)


    def train(run_dir, epochs):
        torch.set_default_dtype(torch.float64)
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        x = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
        x = x * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -1.0])
        model = vi_models.VAE(2, 2, hidden_dims=(8,))
        guide = guides.GaussianEncoder(2, 2, hidden_dims=(8,))
        trained, snapshots = [], []

        def record(epoch, logs):  # after each epoch, before its checkpoint
            trained.append(epoch)
            snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            with open(os.path.join(run_dir, "trained.jsonl"), "a") as log:
                log.write(json.dumps({"pid": os.getpid(), "epoch": epoch}) + "\\n")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = inference.fit(
                model, guide, x, loss="meanfield", epochs=epochs, batch_size=50, lr=1e-2, seed=0,
                checkpoint_dir=run_dir, checkpoint_every=1, resume=True, progress=False, callbacks=[record],
            )
        final = {"model": model.state_dict(), "guide": guide.state_dict(), "loss": result.history["loss"],
                 "trained": trained, "snapshots": snapshots}
        tmp = os.path.join(run_dir, "final.pt.tmp")
        torch.save(final, tmp)
        os.replace(tmp, os.path.join(run_dir, "final.pt"))


    with tempfile.TemporaryDirectory() as warm:  # first-call costs (lazy imports, ...) paid once
        train(warm, 2)

    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stdout is the helper's answers
            code = 0
            try:
                train(request["dir"], EPOCHS)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            sys.stderr.flush()
            os._exit(code)
        delay, killed, status = request["delay"], False, None
        hung = False
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            lived = time.perf_counter() - started
            if done:
                status = raw
            elif (delay is not None and lived >= delay) or lived > LIMIT:
                hung = delay is None or delay > LIMIT
                os.kill(pid, signal.SIGKILL)  # our own unreaped child: the pid is still its
                status = os.waitpid(pid, 0)[1]
                killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            else:
                time.sleep(0.0005)
        lived = time.perf_counter() - started
        code = None if killed else os.waitstatus_to_exitcode(status)
        print(json.dumps({"pid": pid, "killed": killed and not hung, "code": "hung" if hung else code,
                          "seconds": lived}), flush=True)
    """
)


class Zygote:
    """The helper process, talked to through its stdin and stdout."""

    def __init__(self, tmp_path: Path) -> None:
        script = tmp_path / "zygote.py"
        script.write_text(ZYGOTE)
        root = Path(__file__).resolve().parents[3]
        env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "CI": "true"}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(EPOCHS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, cwd=tmp_path, env=env,
        )

    def run(self, run_dir: Path, delay: float | None) -> dict:
        self.proc.stdin.write(json.dumps({"dir": str(run_dir), "delay": delay}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the helper process died (exit status {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _epochs_trained_by(run_dir: Path, pid: int) -> list[int]:
    log = run_dir / "trained.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    records = [json.loads(line) for line in lines]  # each line is one small write(2): whole or absent
    return [r["epoch"] for r in records if r["pid"] == pid]


def _equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_at_random_points_then_resume_is_bit_exact(tmp_path):
    rng = random.Random(20240611)
    zygote = Zygote(tmp_path)
    try:
        reference_dir = tmp_path / "uninterrupted"
        reference_dir.mkdir()
        answer = zygote.run(reference_dir, None)
        assert not answer["killed"] and answer["code"] == 0, answer
        reference = torch.load(reference_dir / "final.pt", weights_only=True)
        assert reference["trained"] == list(range(1, EPOCHS + 1))
        lifetime = answer["seconds"]  # of a whole run: kills are drawn over it
        # resuming a finished run trains nothing and changes nothing; its life is a process's overhead
        answer = zygote.run(reference_dir, None)
        assert not answer["killed"] and answer["code"] == 0, answer
        again = torch.load(reference_dir / "final.pt", weights_only=True)
        assert again["trained"] == [] and _equal_states(again["model"], reference["model"])
        overhead = min(answer["seconds"], lifetime)

        kills, runs, landed_at = 0, 0, []
        while kills < KILLS:
            runs += 1
            run_dir = tmp_path / f"run{runs}"
            run_dir.mkdir()
            expected_start, killed_here = 1, 0
            while True:
                # a delay over what is left of this run's life: set-up, the epochs left, final save
                left = overhead + (lifetime - overhead) * (EPOCHS - expected_start + 1) / EPOCHS
                delay = rng.uniform(0.0, left) if kills < KILLS and killed_here < KILLS_PER_RUN else None
                answer = zygote.run(run_dir, delay)
                trained = _epochs_trained_by(run_dir, answer["pid"])
                if trained:  # it resumed right after the last complete checkpoint
                    assert trained == list(range(expected_start, trained[-1] + 1)), (runs, expected_start, trained)
                if not answer["killed"]:
                    assert answer["code"] == 0, f"run {runs}: the fit failed, exit status {answer['code']}"
                    assert trained == list(range(expected_start, EPOCHS + 1)), (runs, expected_start, trained)
                    break
                kills += 1
                killed_here += 1
                ckpt = run_dir / CHECKPOINT_NAME
                if ckpt.exists():
                    state = load_checkpoint(ckpt)  # never half-written: it loads, or this raises
                    epoch = int(state["epoch"])
                    assert 1 <= epoch <= EPOCHS
                    assert _equal_states(state["model"], reference["snapshots"][epoch - 1]), (
                        f"run {runs}: the checkpoint of epoch {epoch} differs from the uninterrupted run's"
                    )
                    assert state["history"]["loss"] == reference["loss"][:epoch]
                else:
                    epoch = 0  # killed before the first checkpoint: the resume starts afresh
                landed_at.append(epoch)
                expected_start = epoch + 1
            final = torch.load(run_dir / "final.pt", weights_only=True)
            assert _equal_states(final["model"], reference["model"]), f"run {runs}: model weights differ"
            assert _equal_states(final["guide"], reference["guide"]), f"run {runs}: guide weights differ"
            assert final["loss"] == reference["loss"], f"run {runs}: per-epoch losses differ"
    finally:
        zygote.close()
    assert kills == KILLS
    print(f"{kills} SIGKILLs over {runs} runs; the last complete checkpoint at each kill: epochs {sorted(landed_at)}")
    # the kills landed before, during and after the fit, not all at one place
    assert len(set(landed_at)) >= 4, landed_at
