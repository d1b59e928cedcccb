"""Nothing lost: atomic saves under kill -9, Ctrl-C, --resume after kill -9, determinism, tf.distribute."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import keras
import pytest
from conftest import ROOT, SMALL_BATCH, SMALL_EPOCHS, SMALL_TRAIN, assert_one_line_error, output_flags, run_script
from test_training import CNN_FLOOR


def start(script, *args):
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_epochs(backup, count, process, limit=300):
    """Wait until the run has finished ``count`` epochs and backed them up (Keras writes the backup's metadata
    last, after the weights)."""
    metadata = backup / "state" / "training_metadata.json"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if json.loads(metadata.read_text())["epoch"] >= count:
                return
        except (OSError, ValueError, KeyError):
            pass  # not written yet, or being written
        time.sleep(0.05)
    pytest.fail("training did not reach the epoch in time")


def test_kill_9_during_save_keeps_previous_model(trained, tmp_path):
    """A writer killed halfway through a save leaves the previous model intact and loadable."""
    target = tmp_path / "cnn.keras"
    target.write_bytes((trained["models"] / "cnn.keras").read_bytes())
    before = target.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from mnistlab import records

        class DiesWhileSaving:
            def save(self, path):
                with open(path, "wb") as handle:
                    handle.write(b"PK half a model")
                    handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        records.save_model(DiesWhileSaving(), {str(target)!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == -signal.SIGKILL
    assert target.read_bytes() == before
    assert keras.saving.load_model(target, safe_mode=True).count_params() > 0
    debris = list(tmp_path.glob(".cnn.tmp-*"))
    assert len(debris) == 1  # what kill -9 leaves: a hidden temp, never the model itself
    from mnistlab import records

    records.write_json(tmp_path / "cnn.json", {"ok": True})
    records.save_model(keras.saving.load_model(target), target)
    assert not list(tmp_path.glob(".cnn.tmp-*")), "the next save cleans up after the killed writer"


def test_ctrl_c_ends_cleanly(tmp_path):
    process = start(
        "train_cnn.py", "--train-size", "6000", "--epochs", "30", "--batch-size", "32", *output_flags(tmp_path)
    )
    wait_for_epochs(tmp_path / "models" / ".resume-cnn", 1, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert "interrupted" in err.strip().splitlines()[-1] and "--resume" in err
    assert not (tmp_path / "models" / "cnn.keras").exists()
    assert not list((tmp_path / "results").glob("*.json"))


def test_kill_9_mid_epoch_then_resume(tmp_path):
    args = [
        "--train-size",
        str(SMALL_TRAIN),
        "--epochs",
        "6",
        "--batch-size",
        str(SMALL_BATCH),
        *output_flags(tmp_path),
    ]
    process = start("train_cnn.py", *args)
    backup = tmp_path / "models" / ".resume-cnn"
    wait_for_epochs(backup, 2, process)
    time.sleep(0.4)  # into the next epoch
    process.kill()
    process.communicate()
    assert not (tmp_path / "models" / "cnn.keras").exists()

    resumed = run_script("train_cnn.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == list(range(6))
    assert "Epoch 1/6" not in resumed.stdout  # continued, not restarted
    record = json.loads((tmp_path / "results" / "cnn_run.json").read_text())
    assert record["test_accuracy"] >= CNN_FLOOR
    assert not backup.exists()


def test_resume_without_a_backup_is_refused(tmp_path):
    result = run_script("train_dense.py", "--resume", *output_flags(tmp_path))
    assert_one_line_error(result, 1, "nothing to resume", "without --resume")


def test_resume_with_other_flags_is_refused(tmp_path):
    backup = tmp_path / "models" / ".resume-dense"
    backup.mkdir(parents=True)
    (backup / "config.json").write_text(json.dumps({"epochs": 3}))
    result = run_script("train_dense.py", "--resume", "--epochs", "4", *output_flags(tmp_path))
    assert_one_line_error(result, 1, "--resume needs the same flags", "--epochs")


def test_deterministic_runs_give_identical_histories(tmp_path):
    histories = []
    for attempt in ("a", "b"):
        folder = tmp_path / attempt
        result = run_script(
            "train_cnn.py",
            "--deterministic",
            "--seed",
            "7",
            "--train-size",
            "3000",
            "--epochs",
            "2",
            "--batch-size",
            str(SMALL_BATCH),
            *output_flags(folder),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        epochs = json.loads((folder / "results" / "cnn_history.json").read_text())["epochs"]
        histories.append([{k: v for k, v in row.items() if k != "epoch_seconds"} for row in epochs])
    assert histories[0] == histories[1]
    assert histories[0][0]["loss"] > 0


def test_mirrored_over_two_cpu_devices_reaches_the_same_floor(tmp_path):
    result = run_script(
        "train_cnn.py",
        "--distribute",
        "mirrored",
        "--cpu-replicas",
        "2",
        "--train-size",
        str(SMALL_TRAIN),
        "--epochs",
        str(SMALL_EPOCHS),
        "--batch-size",
        str(SMALL_BATCH // 2),
        *output_flags(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"global batch {SMALL_BATCH} (2 replicas)" in result.stdout
    record = json.loads((tmp_path / "results" / "cnn_run.json").read_text())
    assert record["replicas"] == 2 and record["global_batch_size"] == SMALL_BATCH
    assert record["test_accuracy"] >= CNN_FLOOR


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_multiworker_two_processes_only_chief_writes(tmp_path):
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(config)}
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "train_dense.py"),
                    "--distribute",
                    "multiworker",
                    "--train-size",
                    "3000",
                    "--epochs",
                    "2",
                    "--batch-size",
                    "64",
                    *output_flags(tmp_path),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [process.communicate(timeout=300) for process in processes]
    for process, (out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err[-3000:]
        assert "global batch 128 (2 replicas)" in out
    assert "-> " + str(tmp_path / "models" / "dense.keras") in results[0][0]
    assert "not saved (not the chief)" in results[1][0]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["dense.keras"]
    record = json.loads((tmp_path / "results" / "dense_run.json").read_text())
    assert record["replicas"] == 2 and record["test_accuracy"] > 0.8
    assert len((tmp_path / "results" / "runs.jsonl").read_text().splitlines()) == 1


def test_multiworker_without_tf_config(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train_dense.py"), "--distribute", "multiworker", *output_flags(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert_one_line_error(result, 1, "needs TF_CONFIG")
