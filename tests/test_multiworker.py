"""examples/multiworker_cnn.py: two real workers (tf.distribute.MultiWorkerMirroredStrategy) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
from conftest import mnist_npz

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "multiworker_cnn.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_workers_train_together_and_only_the_chief_saves(tmp_path):
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    flags = ["--data", str(mnist_npz()), "--train-size", "3000", "--epochs", "2", "--batch-size", "64"]
    processes, logs = [], []
    try:
        for index in range(2):
            config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            logs.append([open(tmp_path / f"worker{index}.{kind}", "w") for kind in ("out", "err")])  # noqa: SIM115
            processes.append(subprocess.Popen(
                [sys.executable, str(EXAMPLE), *flags, "--models-dir", "models"],
                cwd=tmp_path,  # --models-dir is relative, as a user would give it: into tmp_path
                env={**os.environ, "TF_CONFIG": json.dumps(config)},
                stdout=logs[-1][0],  # files, not pipes: a full pipe would stall a worker, and then both
                stderr=logs[-1][1],
            ))
        deadline = time.monotonic() + 300  # a worker whose partner died would wait for it forever
        for process in processes:
            process.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for files in logs:
            for file in files:
                file.close()
    outputs = []
    for index, process in enumerate(processes):
        outputs.append((tmp_path / f"worker{index}.out").read_text())
        assert process.returncode == 0, (tmp_path / f"worker{index}.err").read_text()[-3000:]
        assert "global batch 128 (2 replicas)" in outputs[-1], outputs[-1]
    assert "worker 0 (chief): test accuracy " in outputs[0] and "-> models/cnn_multiworker.keras" in outputs[0]
    assert "worker 1: test accuracy " in outputs[1] and "(not saved: not the chief)" in outputs[1]
    assert sorted(path.name for path in (tmp_path / "models").iterdir()) == ["cnn_multiworker.keras"]

    # Both workers hold the same weights, so they print the same accuracy; the saved model has it too.
    printed = [float(re.search(r"test accuracy ([\d.]+)%", output).group(1)) / 100 for output in outputs]
    assert printed[0] == printed[1] > 0.9, printed
    model = keras.saving.load_model(tmp_path / "models" / "cnn_multiworker.keras", safe_mode=True)
    with np.load(mnist_npz(), allow_pickle=False) as mnist:
        x_test, y_test = mnist["x_test"], mnist["y_test"]
    probabilities = model.predict(x_test[..., None].astype(np.float32), batch_size=2000, verbose=0)
    accuracy = float((probabilities.argmax(axis=1) == y_test).mean())
    assert accuracy > 0.9 and abs(accuracy - printed[0]) < 0.0003, (accuracy, printed)


def test_without_tf_config_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--data", str(mnist_npz())],
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "TF_CONFIG"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: TF_CONFIG is not set: this example needs TF_CONFIG set to JSON with 'cluster' and 'task' on every "
        "worker; see docs/distributed.md"
    ]
    assert not (tmp_path / "models").exists()
