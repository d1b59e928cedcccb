"""Six small experiments that make the ideas behind CNNs visible, one file each in lab/. Each writes
results/exp_<name>.png and results/exp_<name>.json and prints a two-line conclusion with the measured numbers.

    python experiments.py spatial        # CNNs use spatial structure: shifted digits, shuffled pixels
    python experiments.py sharing        # parameter sharing and pooling: how few weights a conv layer needs
    python experiments.py stride         # feature-map size against stride and padding
    python experiments.py activations    # sigmoid / tanh / ReLU in a deep network: vanishing gradients
    python experiments.py dropout        # dropout: the overfitting gap, and off at inference
    python experiments.py augmentation   # rotated / zoomed / shifted digits help most when data is scarce
    python experiments.py all

Experiments that train use small slices and few epochs by default; --train-size and --epochs scale them up.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from mnistlab import cli

NAMES = ("spatial", "sharing", "stride", "activations", "dropout", "augmentation")  # lab/<name>.py


def parse_args(argv: Sequence[str] | None = None):
    parser = cli.new_parser(__doc__)
    parser.add_argument("name", choices=(*NAMES, "all"), help="which experiment to run")
    parser.add_argument(
        "--train-size",
        type=cli.positive_int,
        default=None,
        metavar="N",
        help="training images for experiments that train (default: each experiment's own)",
    )
    parser.add_argument(
        "--epochs",
        type=cli.positive_int,
        default=None,
        help="epochs for experiments that train (default: each experiment's own)",
    )
    parser.add_argument("--seed", type=cli.non_negative_int, default=1, help="random seed (default: %(default)s)")
    cli.add_io_flags(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = cli.writable_dir(args.results_dir, "results dir")
    import keras

    from lab import Lab  # after parsing: --help and bad flags answer before TensorFlow loads
    from mnistlab import data

    keras.utils.set_random_seed(args.seed)
    lab = Lab(args, data.load(args.data), results_dir)
    for name in NAMES if args.name == "all" else (args.name,):
        importlib.import_module(f"lab.{name}").run(lab)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
