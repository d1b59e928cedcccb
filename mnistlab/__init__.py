"""Shared code behind the CNN-vs-dense MNIST scripts.

One module per concern, and data flows one way through them:
``data`` (load + validate) → ``models`` (build) → ``training`` (fit, evaluate, save)
→ ``records`` (run records on disk) → ``inference`` / ``plots`` (compare and report).
``cli`` holds the command-line plumbing every script shares.
"""

import os

__version__ = "1.0.0"

# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature lists) hides what the scripts print.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UserError(Exception):
    """A problem the user can fix (bad file, bad flag, missing model).

    Scripts print ``str(error)`` as one line and exit with ``exit_code``, never a traceback.
    """

    exit_code = 1
