"""The benchmark's run of a training script: the script itself, unchanged, plus one callback that measures test
accuracy after every epoch (for "seconds until the run first reached 99%"), and the process's peak memory.

    python -m mnistlab.tracked train_cnn.py OUT.json [the script's flags]

The script's own records (history, run summary) are written as usual; OUT.json adds what the script does not know.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from mnistlab import records
from mnistlab.callbacks import TestAccuracyTracker


def main(argv: Sequence[str] | None = None) -> int:
    script, out, *flags = list(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(Path(script).stem)  # train_cnn or train_dense, from the project's root
    _, (x_test, y_test) = module.load_data(module.parse_args(flags).data)
    tracker = TestAccuracyTracker(x_test, y_test)
    code = module.run(lambda: module.main(flags, extra_callbacks=[tracker]))
    if code == 0:
        records.write_json(
            out,
            {
                "epoch_test_accuracy": tracker.accuracies,
                "test_eval_seconds": tracker.seconds,
                "peak_memory_mib": records.peak_memory_mib(),
            },
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
