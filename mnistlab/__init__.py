"""The toolbox behind predict.py, benchmark.py, serve.py and live.py.

The three tutorial scripts (train_cnn.py, train_dense.py, compare.py) and the lesson notebook (lesson.py) stand
alone and never import this package; the toolbox imports from the scripts instead, so that every network, the data
loader and the timing code are defined once. One module per concern: ``data`` (MNIST as a dataclass),
``inference`` (saved models, feature maps), ``callbacks`` (the benchmark's timers), ``records`` (atomic files),
``plots`` (figures), ``images`` (your own digits, MNIST-style), ``explain``, ``live`` and ``server`` (the live
page), ``cli`` (flags, one-line errors), ``baseline`` and ``tracked`` (the benchmark's runs).
"""


class UserError(Exception):
    """A problem the user can fix (bad file, bad flag, missing model).

    Tools print ``str(error)`` as one line and exit with ``exit_code``, never a traceback.
    """

    exit_code = 1
