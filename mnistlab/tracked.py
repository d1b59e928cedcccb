"""The benchmark's run of a training script: the script itself, unchanged, plus one callback that measures test
accuracy after every epoch (for "seconds until the run first reached 99%"), and the process's peak memory.

    python -m mnistlab.tracked train_cnn.py OUT.json [--without-epoch-files] [the script's flags]

The script's own records (history, run summary) are written as usual; OUT.json adds what the script does not know:
how long ``fit`` took from its first callback to its last (the benchmark's test evaluations taken out), and how much
of it went to the files that the script writes after every epoch for watching it train (``save_epoch``).
``--without-epoch-files`` skips those writes, so that the benchmark can time the same run with and without them.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mnistlab import records
from mnistlab.callbacks import FitTimer, TestAccuracyTracker


def main(argv: Sequence[str] | None = None) -> int:
    script, out, *flags = list(sys.argv[1:] if argv is None else argv)
    with_files = "--without-epoch-files" not in flags
    flags = [flag for flag in flags if flag != "--without-epoch-files"]
    module = importlib.import_module(Path(script).stem)  # train_cnn or train_dense, from the project's root
    _, (x_test, y_test) = module.load_data(module.parse_args(flags).data)
    tracker, timer, writes = TestAccuracyTracker(x_test, y_test), FitTimer(), []
    save_epoch = module.save_epoch

    def timed_save_epoch(*args) -> None:  # the script's own per-epoch write, timed (or skipped)
        started = time.perf_counter()
        if with_files:
            save_epoch(*args)
        writes.append(time.perf_counter() - started)

    module.save_epoch = timed_save_epoch  # the script's callback looks the function up when it runs
    code = module.run(lambda stop: module.main(flags, stop, [tracker, timer]))
    if code == 0:
        records.write_json(
            out,
            {
                "epoch_test_accuracy": tracker.accuracies,
                "test_eval_seconds": tracker.seconds,
                "fit_seconds": timer.seconds - tracker.seconds,
                "epoch_files": with_files,
                "epoch_file_seconds": sum(writes) if with_files else 0.0,
                "epoch_file_writes": len(writes),
                "peak_memory_mib": records.peak_memory_mib(),
            },
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
