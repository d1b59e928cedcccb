"""The toolbox behind the scripts: the plumbing a reader of train_cnn.py need not study.

One module per concern: ``data`` (load + validate MNIST); ``training`` (:class:`training.Run`: seeds, precision,
--resume, atomic saves, records) and its Keras ``callbacks``; ``distribute`` (tf.distribute and its Keras shim);
``records`` (files on disk: atomic writes, locks, free space); ``inference`` / ``plots`` (compare and report);
``signals`` (Ctrl-C and SIGTERM); ``images`` (your own digits, MNIST-style); ``explain`` + ``server`` (the live
page); ``cli`` (flags, one-line errors). The networks themselves live in the scripts that train them.
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
