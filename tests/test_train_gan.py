"""training.train_gan: tiny preset trains, checkpoints, survives SIGKILL + resume, exports a loadable generator."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.generator.networks import FaceGenerator
from engine.io.files import WeightsError

REPO = Path(__file__).resolve().parent.parent


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def test_tiny_preset_trains_checkpoints_and_exports(ict_path, tmp_path, capsys):
    from training.train_gan import main

    out = tmp_path / "run"
    rc = main(["--preset", "tiny", "--data", "synthetic:32", "--out", str(out), "--kimg", "0.048",
               "--ckpt-every", "24", "--sample-every", "24", "--no-perception", "--threads", "1", "--log-every", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    losses = [line for line in text.splitlines() if line.startswith("progress")]
    assert len(losses) == 6
    vals = [float(tok.split("=")[1]) for tok in losses[-1].split() if tok.startswith(("d=", "g_total=", "l1="))]
    assert len(vals) == 3 and all(v == v and abs(v) < 1e4 for v in vals)  # finite
    st = json.loads((out / "state.json").read_text())
    assert st["images_seen"] == 48 and (out / st["checkpoint"]).exists()
    assert len(list(out.glob("ckpt-*.safetensors"))) <= 2  # old checkpoints are pruned
    assert list((out / "samples").glob("*.png"))
    # re-running without --resume refuses to clobber the run
    assert main(["--preset", "tiny", "--data", "synthetic:32", "--out", str(out), "--no-perception"]) == 2
    assert "--resume" in capsys.readouterr().err
    # export → a loadable FaceGenerator with w̄_id set
    dest = tmp_path / "assets"
    assert main(["--out", str(out), "--export", str(dest)]) == 0
    fg = FaceGenerator.load(dest / "generator.safetensors")
    assert fg.resolution == 32 and fg.G.w_avg_id.abs().sum() > 0
    c, n = fg.sample(2, seed=0)
    img = fg.synthesize(c, n)
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    assert (dest / "decoders.safetensors").exists()


def test_sigkill_then_resume_loses_less_than_one_interval(ict_path, tmp_path):
    out = tmp_path / "run"
    every = 32
    cmd = [sys.executable, "-m", "training", "gan", "--preset", "tiny", "--data", "synthetic:32", "--out", str(out),
           "--kimg", "5", "--ckpt-every", str(every), "--sample-every", "100000", "--no-perception", "--threads", "1",
           "--log-every", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    last_progress = 0
    try:
        deadline = time.time() + 60
        for line in proc.stdout:
            if line.startswith("progress"):
                last_progress = int(line.split()[1].split("=")[1])
            st = out / "state.json"
            if st.exists() and json.loads(st.read_text())["images_seen"] >= 2 * every and last_progress > 2 * every:
                break
            assert time.time() < deadline, "training did not reach two checkpoints in time"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    ckpt = json.loads((out / "state.json").read_text())["images_seen"]
    assert ckpt >= 2 * every and 0 <= last_progress - ckpt < every + 8
    assert (out / json.loads((out / "state.json").read_text())["checkpoint"]).exists()
    (out / ".ckpt-0000000999.part.safetensors").write_bytes(b"half")  # as if killed mid-write
    target_kimg = (ckpt + 16) / 1000
    res = subprocess.run(cmd[:cmd.index("--kimg") + 1] + [str(target_kimg)] + cmd[cmd.index("--kimg") + 2:]
                         + ["--resume"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resumed {out} at images_seen={ckpt}" in res.stdout
    first = [int(l.split()[1].split("=")[1]) for l in res.stdout.splitlines() if l.startswith("progress")][0]
    assert first == ckpt + 8  # continued from the checkpoint, one batch of the tiny preset later
    assert json.loads((out / "state.json").read_text())["images_seen"] == ckpt + 16
    assert not list(out.glob(".*.part*"))  # stale temporaries of a killed run are cleaned up


def test_resume_refuses_a_damaged_checkpoint(ict_path, tmp_path, capsys):
    from training.train_gan import main

    out = tmp_path / "run"
    args = ["--preset", "tiny", "--data", "synthetic:16", "--out", str(out), "--kimg", "0.016", "--no-perception",
            "--threads", "1"]
    assert main(args) == 0
    st = json.loads((out / "state.json").read_text())
    p = out / st["checkpoint"]
    p.write_bytes(p.read_bytes()[:1000])
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "truncated or corrupt" in err and "Traceback" not in err


def test_missing_prepared_data_is_one_clear_message(ict_path, tmp_path, monkeypatch, capsys):
    from training.train_gan import main

    monkeypatch.setenv("DISCOFACE_CACHE", str(tmp_path / "empty-cache"))
    assert main(["--preset", "tiny", "--out", str(tmp_path / "run"), "--no-perception", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "python -m training prepare" in err and "Traceback" not in err
    assert main(["--preset", "nope", "--out", str(tmp_path / "run2")]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_export_without_a_run_is_a_clear_error(tmp_path, capsys):
    from training.train_gan import main

    assert main(["--out", str(tmp_path / "none"), "--export", str(tmp_path / "a")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "a" / "generator.safetensors").exists()
