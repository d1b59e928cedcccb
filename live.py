"""Watch both networks learn: serve.py's page first, then train_cnn.py and train_dense.py (what `make live` runs).

Starts the page, which needs no model yet, and prints its address; then trains the CNN and, after it, the dense
network, each in its own process with its usual output. Open the address: the page follows each run epoch by epoch.
When both are trained, the page stays up with the finished models (draw a digit) until Ctrl-C.

    python live.py --data data/mnist.npz          # what make live runs
    python live.py --side-by-side                 # both networks at once: each gets half the CPU, so their
                                                  # seconds of training are not comparable with other runs
    python live.py --port 8080 -- --epochs 3      # flags after -- go to both training scripts

Nothing here is needed to watch training: serve.py in one terminal and the scripts in another do the same.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from mnistlab import UserError, cli

ROOT = Path(__file__).resolve().parent
SCRIPTS = ("train_cnn.py", "train_dense.py")


def parse_args(argv: Sequence[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, training = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = cli.new_parser(__doc__)
    cli.add_server_flags(parser)
    cli.add_io_flags(parser)
    parser.add_argument("--side-by-side", action="store_true", help="train both networks at once")
    args = parser.parse_args(ours)
    for flag in ("--models-dir", "--results-dir", "--data"):  # the page must watch where the scripts write
        if any(word == flag or word.startswith(flag + "=") for word in training):
            parser.error(f"give {flag} before the --, to live.py: the page and both scripts use it")
    args.training = training
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    folders = ["--models-dir", args.models_dir, "--results-dir", args.results_dir]
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "serve.py"), "--host", args.host, "--port", str(args.port), *folders],
        stdout=subprocess.PIPE,
        text=True,
    )
    children, trainings = [server], []
    try:
        line = server.stdout.readline()  # "serving ... on http://HOST:PORT/ (Ctrl-C to stop)", or nothing
        if "http://" not in line:
            return server.wait() or 1  # serve.py said what is wrong, in one line
        url = line.split(" on ", 1)[1].split()[0]
        threading.Thread(target=server.stdout.read, daemon=True).start()  # the rest: not needed, never blocking
        print(f"the live page: {url} (open it in a browser); training starts now", flush=True)
        data = ["--data", args.data] if args.data else []
        commands = {script: [sys.executable, str(ROOT / script), *data, *folders, *args.training] for script in SCRIPTS}
        for batch in [SCRIPTS] if args.side_by_side else [[script] for script in SCRIPTS]:
            runs = {script: subprocess.Popen(commands[script]) for script in batch}
            children += runs.values()
            trainings += runs.values()
            while runs:  # whichever ends first; a failure stops the rest at once
                for script, run in list(runs.items()):
                    if run.poll() is None:
                        continue
                    if run.returncode != 0:
                        raise UserError(f"{script} ended with exit code {run.returncode} (its message is above); "
                                        "the page and the other run are stopped too")
                    del runs[script]
                time.sleep(0.2)
        print(f"both networks are trained: the page at {url} shows the finished runs; draw a digit (Ctrl-C to stop)",
              flush=True)
        return server.wait()
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        end(children, wait=10 if signum == signal.SIGINT else 0)  # Ctrl-C in a terminal reached them too
        trained = len(trainings) == len(SCRIPTS) and all(run.returncode == 0 for run in trainings)
        if trained:  # the way to end the page, once training is done (or as it ends): nothing to resume
            how = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
            print(f"live.py stopped{how}; the trained networks are in {args.models_dir}/", file=sys.stderr)
            return 0 if signum == signal.SIGINT else 128 + signum
        what = "interrupted" if signum == signal.SIGINT else f"stopped ({signal.Signals(signum).name})"
        print(f"\n{what}: the page and the training are stopped; to go on from the last epoch, run the script that "
              "was training with --resume as its line above says (python serve.py follows it); python live.py starts "
              "both anew", file=sys.stderr)
        return 128 + signum
    finally:
        end(children, wait=0)


def end(children: list[subprocess.Popen], wait: float) -> None:
    """Let the processes end on their own for ``wait`` seconds, then ask them to (SIGTERM); each says how it ended."""
    deadline = time.monotonic() + wait
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    sys.exit(cli.run(main))
