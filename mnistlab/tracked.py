"""The benchmark's run of a training script: the script's own main(), unchanged, given two more Keras callbacks,
one that measures test accuracy after every epoch (for "seconds until the run first reached 99%") and one that
times fit() as a whole; and the process's peak memory.

    python -m mnistlab.tracked train_cnn.py OUT.json [the script's flags]

The script's own records (history, run summary) are written as usual; OUT.json adds what the script does not know:
how long ``fit`` took from its first callback to its last (the benchmark's test evaluations taken out). Its part
that is not in the epochs' own seconds is what the script's callbacks write after every epoch (the network for the
live page, the history row, the backup).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from mnistlab import records
from mnistlab.callbacks import FitTimer, TestAccuracyTracker


def main(argv: Sequence[str] | None = None) -> int:
    script, out, *flags = list(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(Path(script).stem)  # train_cnn or train_dense, from the project's root
    _, (x_test, y_test) = module.load_data(module.parse_args(flags).data)
    tracker, timer = TestAccuracyTracker(x_test, y_test), FitTimer()
    code = module.main(flags, callbacks=[tracker, timer])
    if code == 0:
        records.write_json(
            out,
            {
                "epoch_test_accuracy": tracker.accuracies,
                "test_eval_seconds": tracker.seconds,
                "fit_seconds": timer.seconds - tracker.seconds,
                "peak_memory_mib": records.peak_memory_mib(),
            },
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
