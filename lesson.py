# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Why CNNs win on images: a lesson in nine steps
#
# This notebook walks through the ideas behind convolutional neural networks (CNNs) on MNIST, the handwritten
# digits, and measures each one: every number and every figure below is computed by the cell above it, and every
# sentence that states a result is printed from those numbers. Change a number in a cell and run it again.
#
# 0. Keras in a few words, the two networks and their training
# 1. MNIST
# 2. A convolution by hand
# 3. Kernels are feature detectors
# 4. Parameter sharing
# 5. ReLU against sigmoid and tanh
# 6. Max-pooling
# 7. Dropout
# 8. Augmentation
# 9. The comparison: a CNN against a dense network
#
# **How to read it.** Each step opens with a **question**: think of an answer before you run its cells. It ends
# with a two-line **summary** and one **exercise**: a number to change, and what to look for when you run the
# cell again. A recap at the end ties the nine steps together.
#
# **Where it runs.** Jupyter, JupyterLab, VS Code or Colab (upload this file alone). It needs only Keras with
# TensorFlow, NumPy and matplotlib. It reads MNIST from `data/mnist.npz` when that file exists (offline:
# `python get_mnist.py` in the project makes it), else downloads it through `keras.datasets` (11 MB, once). It is
# meant to run top to bottom in about five minutes on two CPU cores: most experiments train on slices of MNIST, and
# only the project's two networks (trained in step 0, compared in step 9) train on all of it, as `train_cnn.py` and
# `train_dense.py` train them. Every cell can be run again on its own, in order. The last cell prints how long
# each step computed on your computer.

# %%
import math
import os
import time
from pathlib import Path

# While TensorFlow starts, its C++ core writes notes (oneDNN, CPU features) straight to the process's error
# output, past Python: TF_CPP_MIN_LOG_LEVEL does not silence oneDNN's note, and turning oneDNN off
# (TF_ENABLE_ONEDNN_OPTS=0) would slow training. So that output goes to the null device while TensorFlow starts,
# and comes back at once; nothing about training changes, and Python's own errors still show.
saved_stderr, null_device = os.dup(2), os.open(os.devnull, os.O_WRONLY)
os.dup2(null_device, 2)
try:
    import keras
    import matplotlib.pyplot as plt
    import numpy as np
    import tensorflow as tf
    from keras import layers
    from matplotlib.colors import LogNorm

    _ = tf.zeros(1) + 1  # TensorFlow's first operation: it prints oneDNN's note a second time
finally:
    os.dup2(saved_stderr, 2)
    os.close(saved_stderr)
    os.close(null_device)

SEED = 1  # every experiment starts from this seed (as the scripts' --seed 1); those run on 3 seeds use 1, 2, 3
CHANCE = 0.1  # ten digits: guessing, or always answering the same digit, is right about one time in ten
keras.utils.set_random_seed(SEED)  # the same seed, the same weights, shuffling and dropout
tf.get_logger().setLevel("ERROR")  # no warnings that fit() is traced again: each experiment builds new models
print(f"Keras {keras.__version__}, TensorFlow {tf.__version__}, NumPy {np.__version__}")

# The time table at the end: each cell's computing time, added up per step (the last run of each cell counts, and
# time spent reading between cells does not). Jupyter, VS Code and Colab run cells through IPython, which calls
# these two functions before and after every cell.
STEP = "0. Keras and the two networks"  # the first cell of each step names its step
cell_seconds, clock = {}, {}  # a cell's source → (its step, seconds); when the running cell started


def cell_started(info):
    clock["cell"] = (info.raw_cell, time.perf_counter())


def cell_finished(result):
    if "cell" in clock:
        source, started = clock.pop("cell")
        cell_seconds[source] = (STEP, time.perf_counter() - started)


shell = globals().get("get_ipython", lambda: None)()  # None in plain Python: then there is no time table
if shell is not None:
    for event, callback in (("pre_run_cell", cell_started), ("post_run_cell", cell_finished)):
        for old in [c for c in shell.events.callbacks[event] if c.__name__ == callback.__name__]:
            shell.events.unregister(event, old)  # this cell run again registers them once, not twice
        shell.events.register(event, callback)

# %% [markdown]
# ## 0. Keras in a few words, the two networks and their training
#
# **Question.** To get a network that reads digits, what must you tell Keras: what it is made of, what it
# should learn, and how?
#
# - **Data.** A Keras layer takes a *batch*: many images at once, each with a channel axis (1 for grey, 3 for
#   colour). So a batch of N grey images is an array of shape `(N, 28, 28, 1)`, not `(N, 28, 28)`. The cell below
#   adds that axis right where it loads the images, so that running it again cannot add a second one. One image is
#   a batch of one: `x_test[:1]`, not `x_test[0]`.
# - **Building a network.** `keras.Input(shape=(28, 28, 1))` stands for the images that will come in. A layer is
#   made in two calls: `layers.Conv2D(32, 5)` *creates* the layer (its settings), and the second call `(x)`
#   *applies* it to the output `x` of the layer before: `x = layers.Conv2D(32, 5)(x)`. `keras.Model(inputs,
#   outputs)` turns that chain into one network you can train and call. A layer on its own can also be called on an
#   array; `layer.build(input_shape)` makes its weights without calling it, and `layer.set_weights([...])` replaces
#   them (step 2 does both).
# - **The layers.** `Conv2D(32, 5)` slides 32 *filters* (Keras' word for kernels) of 5×5 over its input (step 2),
#   each giving one feature map; its weights sit in an array of shape (height, width, input channels, filters).
#   `ReLU` keeps positive numbers and sets negative ones to 0 (step 5). `MaxPooling2D(2)` keeps the largest number
#   of each 2×2 window (step 6). `Flatten` lays the maps out as one long row. `Dropout` silences some numbers while
#   training (step 7). `Dense(n)` has n *units*: each computes a weighted sum of *every* input plus a bias, so a
#   Dense layer has one weight per (input, unit) pair.
# - **Softmax and probabilities.** The last layer, `Dense(10, activation="softmax")`, turns its ten sums into ten
#   positive numbers that add up to 1: the network's probability for each digit. Its answer is the largest one.
# - **Loss and cross-entropy.** Training makes the *loss* small: here cross-entropy, minus the log of the
#   probability given to the right digit (0 when it is sure and right, large when it is sure and wrong). Labels
#   given as integers 0–9 go with `sparse_categorical_crossentropy` (used here); as *one-hot* rows (ten numbers, a
#   single 1) with `categorical_crossentropy` (used by the scripts); both give the same loss.
# - **Training.** A network's *weights* (*parameters*) start random. `compile(optimizer, loss, metrics)` says how
#   to train; `fit(x, y)` shows the network a batch at a time (one *step*) and nudges the weights against the
#   *gradient* of the loss (step 5) to make its answers less wrong; an *epoch* is one pass over all the training
#   images. The *learning rate* sets the size of the nudges; *Adam* is an optimizer that scales the nudge of each
#   weight by the size of that weight's recent gradients. `predict(x)` returns the probabilities; `evaluate(x, y)`
#   returns `[loss, accuracy]`, so `evaluate(...)[1]` is the accuracy.
# - **Training or not.** Some layers (`Dropout`, the augmentation of step 8) act only while training. `model(x,
#   training=False)` asks for the answering behaviour, as `predict` and `evaluate` do.
# - **Held out.** *Validation* images are kept out of training to check, after every epoch, how the network does on
#   images it has not learned from; the *test* images are used once, at the end.

# %%
STEP = "0. Keras and the two networks"
DATA = Path("data/mnist.npz")  # python get_mnist.py writes it; without it, Keras downloads MNIST once
if DATA.is_file():
    with np.load(DATA, allow_pickle=False) as archive:  # never unpickle: a data file cannot run code
        x_train, y_train = archive["x_train"], archive["y_train"]
        x_test, y_test = archive["x_test"], archive["y_test"]
    source = f"{DATA} (a local file: no internet needed)"
else:
    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    source = "keras.datasets.mnist (downloaded once, then read from ~/.keras/datasets)"
x_train, x_test = x_train[..., None], x_test[..., None]  # (N, 28, 28) → (N, 28, 28, 1): one grey channel
INPUT_SHAPE = x_train.shape[1:]
# As train_cnn.py does: the last tenth of the training images is held out to validate on after every epoch.
x_fit, y_fit, x_val, y_val = x_train[:54_000], y_train[:54_000], x_train[54_000:], y_train[54_000:]
print(f"MNIST from {source}")
print(f"every network here takes batches of shape (N, {', '.join(map(str, INPUT_SHAPE))}): x_train {x_train.shape}, "
      f"x_test {x_test.shape}; one image: x_test[:1] {x_test[:1].shape}")
print(f"{len(x_fit):,} images to train on, {len(x_val):,} to validate on, {len(x_test):,} to test on")

# %% [markdown]
# **The two networks**, copied layer for layer from `build_model()` in `train_cnn.py` and in `train_dense.py` (a
# test checks that they stay the same), with the scripts' way of training: Adam with a *one-cycle* learning rate
# (it rises from 0 over the first tenth of the steps, then falls back to 0 along half a cosine). They take raw
# pixels 0–255 and scale them to 0–1 themselves (`Rescaling`).

# %%
def augmentation() -> keras.Sequential:
    """The scripts' augmentation (step 8): rotations up to 0.04 of a turn (±14°), zooms and shifts up to 10%;
    black paper fills what moves in. Only while training."""
    return keras.Sequential([
        layers.RandomRotation(0.04, fill_mode="constant"),
        layers.RandomZoom(0.1, fill_mode="constant"),
        layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
    ], name="augmentation")


def build_cnn(augment: bool = False) -> keras.Model:
    """train_cnn.py's network: [Conv2D → ReLU → MaxPooling2D] × 2 → Flatten → Dropout → Dense, 35,338 weights."""
    inputs = keras.Input(shape=(28, 28, 1), name="pixels")  # raw pixels 0-255, 28×28×1
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)  # 0-1
    if augment:
        x = augmentation()(x)  # random small rotations, zooms and shifts, only while training (step 8)
    x = layers.Conv2D(32, 5, name="conv1")(x)  # 32 kernels of 5×5: 24×24×32 maps
    x = layers.ReLU(name="relu1")(x)  # keep the positive responses, zero the rest
    x = layers.MaxPooling2D(2, name="pool1")(x)  # → 12×12×32: the strongest in each 2×2 window
    x = layers.Conv2D(64, 3, name="conv2")(x)  # 64 kernels of 3×3×32 over those 32 maps → 10×10×64
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)  # → 5×5×64
    x = layers.Flatten(name="flatten")(x)  # → 1,600 features
    x = layers.Dropout(0.25, name="dropout")(x)  # silence a random quarter while training (step 7)
    outputs = layers.Dense(10, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")


def build_dense(augment: bool = False, units: tuple = (512, 512), dropout: float = 0.5) -> keras.Model:
    """train_dense.py's network: Flatten → [Dense(512, ReLU) → Dropout(0.5)] × 2 → Dense, 669,706 weights."""
    inputs = keras.Input(shape=(28, 28, 1), name="pixels")  # raw pixels 0-255, as the CNN's
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    if augment:
        x = augmentation()(x)
    x = layers.Flatten(name="flatten")(x)  # 28×28 → 784 numbers: the picture's layout is gone
    for index, width in enumerate(units, start=1):
        x = layers.Dense(width, activation="relu", name=f"dense{index}")(x)  # each unit weighs every input
        x = layers.Dropout(dropout, name=f"dropout{index}")(x)
    outputs = layers.Dense(10, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="dense")


def one_cycle(peak: float, steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """The scripts' learning rate: from 0 up to ``peak`` over the first 10% of the steps, then down to 0 along
    half a cosine."""
    warmup = max(1, steps // 10)
    return keras.optimizers.schedules.CosineDecay(initial_learning_rate=0.0, decay_steps=max(1, steps - warmup),
                                                  warmup_target=peak, warmup_steps=warmup)


def train(model, x, y, *, epochs, batch_size, learning_rate, validation=None, verbose=0):
    """Compile and fit as the scripts do: Adam with the one-cycle rate, cross-entropy (the integer labels'
    form of the scripts' one-hot loss), accuracy. Returns the history (per epoch) and the seconds it took."""
    steps = math.ceil(len(x) / batch_size) * epochs
    model.compile(optimizer=keras.optimizers.Adam(one_cycle(learning_rate, steps)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=validation, verbose=verbose,
                        validation_batch_size=2048)  # no gradients to validate: large batches are fastest
    return history.history, time.perf_counter() - started


# The scripts' defaults: train_cnn.py's PRESETS["fast"] and train_dense.py's DEFAULTS.
SETTINGS = {"cnn": dict(epochs=5, batch_size=384, learning_rate=6e-3),
            "dense": dict(epochs=14, batch_size=1024, learning_rate=5e-3)}
build_cnn().summary()  # the layers and their output shapes; the networks trained are built in the next cell
build_dense().summary()

# %%
# Training, the step that takes longest in this lesson (one line per epoch). The networks are built here, fresh:
# compile() does not reset weights, so running this cell again starts over instead of training further.
networks, histories, training_seconds = {}, {}, {}
for name, build in (("cnn", build_cnn), ("dense", build_dense)):
    keras.utils.set_random_seed(SEED)
    networks[name] = build()
    if name == "cnn":  # a copy of the 32 first-layer kernels as they start, random: step 3 compares them
        kernels_before = networks[name].get_layer("conv1").kernel.numpy()[:, :, 0, :]
    print(f"training the {name} network on {len(x_fit):,} images: {SETTINGS[name]}")
    histories[name], training_seconds[name] = train(networks[name], x_fit, y_fit, **SETTINGS[name],
                                                    validation=(x_val, y_val), verbose=2)
cnn, dense = networks["cnn"], networks["dense"]
probabilities = {name: model.predict(x_test, batch_size=2048, verbose=0) for name, model in networks.items()}
predicted = {name: p.argmax(axis=1) for name, p in probabilities.items()}
accuracy = {name: float((p == y_test).mean()) for name, p in predicted.items()}
print(f"Test accuracy on {len(y_test):,} images: CNN {accuracy['cnn']:.2%} after {training_seconds['cnn']:.0f} s "
      f"of training, dense network {accuracy['dense']:.2%} after {training_seconds['dense']:.0f} s.")

# %% [markdown]
# **Summary.** A Keras network is a chain of layers made with `keras.Input`, layer calls and `keras.Model`;
# `compile` names the optimizer and the loss, `fit` trains, `evaluate` and `predict` answer.
# Both project networks are now trained on the same 54,000 images; the steps below take them apart.
#
# **Exercise.** In the data cell, hold out the last 20,000 images instead: `54_000` → `40_000` in both places of
# the `x_fit, y_fit, x_val, y_val` line, then run the cells down to here. How much test accuracy does each network
# lose with a quarter fewer training images?

# %% [markdown]
# ## 1. MNIST: 28×28 grey images, pixels 0–255, labels 0–9
#
# **Question.** What exactly does a network receive: how large is one image, what numbers are in it, and are the
# ten digits equally common?
#
# 70,000 handwritten digits: 60,000 to train on and 10,000 to test on, kept apart until the end. Each image is a
# 28×28 array of whole numbers from 0 (black paper) to 255 (white ink); each label says which digit it is.

# %%
STEP = "1. MNIST"
print(f"x_train {x_train.shape} {x_train.dtype}, y_train {y_train.shape}; x_test {x_test.shape}, y_test {y_test.shape}")
print(f"pixels from {x_train.min()} to {x_train.max()}; labels {sorted(np.unique(y_train).tolist())}; "
      f"{np.mean(x_train > 0):.0%} of all pixels are ink (not 0)")
digits, counts = np.unique(y_train, return_counts=True)
print("training images per digit: " + ", ".join(f"{d}: {c:,}" for d, c in zip(digits, counts, strict=True))
      + f" (from {counts.min() / counts.max():.0%} to 100% of the most common)")

FIRST = 0  # the first image shown
figure, axes = plt.subplots(4, 10, figsize=(12, 5.4))
for index, axis in enumerate(axes.flat, start=FIRST):
    axis.imshow(x_train[index, :, :, 0], cmap="gray")
    axis.set_title(f"label {y_train[index]}", fontsize=9)
    axis.axis("off")
figure.suptitle(f"Training images {FIRST} to {FIRST + 39} and their labels")
plt.show()

# %% [markdown]
# **Summary.** An image is a 28×28 grid of brightness values 0–255, with one channel axis added for Keras; the
# ten digits are about equally common, so always answering the same digit is right about one time in ten.
#
# **Exercise.** Set `FIRST = 40_000` and run the cell: do the labels still match what you read, and which digits
# would you find hard?

# %% [markdown]
# ## 2. A convolution by hand
#
# **Question.** A 3×3 kernel slides over a 28×28 digit: how large is the map it makes, and what does one number
# of that map mean?
#
# A convolution slides a small *kernel* (here 3×3 numbers) over the image. At each position it multiplies the
# kernel with the 3×3 patch under it, element by element, and adds the nine products up: one number of the output,
# the *feature map*. Then it moves by the *stride* and does it again. `valid` padding only uses positions where the
# kernel fits inside the image; `same` padding adds a border of zeros so that, with stride 1, the map keeps the
# image's size. (What deep learning calls a convolution does not flip the kernel: it is a cross-correlation.)
#
# The kernel below is a vertical-edge detector (Sobel): it answers strongly where ink ends on the left or the right.
# In the red-and-blue pictures, red is a positive number, blue a negative one and white 0 (the colour bars give the
# scale): on the feature map, red where the image gets brighter from left to right (the left side of a stroke),
# blue where it gets darker (its right side), white where nothing changes.

# %%
STEP = "2. convolution by hand"
digit = x_test[0, :, :, 0].astype("float32") / 255  # test image 0, scaled to 0–1 as the networks scale it
edge = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype="float32")


def convolve(image, kernel, stride=1, padding="valid"):
    """Slide ``kernel`` over ``image``: multiply, add, move by ``stride``. Padding as Keras pads."""
    size, k = image.shape[0], kernel.shape[0]
    if padding == "same":  # zeros around the image: as many output positions as ceil(size / stride)
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        image = np.pad(image, ((total // 2, total - total // 2), (total // 2, total - total // 2)))
    out = (image.shape[0] - k) // stride + 1
    feature_map = np.zeros((out, out), dtype="float32")
    for row in range(out):
        for col in range(out):
            patch = image[row * stride : row * stride + k, col * stride : col * stride + k]
            feature_map[row, col] = (patch * kernel).sum()  # multiply element by element, add up
    return feature_map


by_hand = convolve(digit, edge)
row, col = np.unravel_index(np.abs(by_hand).argmax(), by_hand.shape)  # where the kernel answers most strongly
patch = digit[row : row + 3, col : col + 3]
print(f"The patch at row {row}, column {col}:\n{patch.round(2)}\ntimes the kernel:\n{edge}\n"
      f"added up: {(patch * edge).sum():.3f} = feature_map[{row}, {col}] = {by_hand[row, col]:.3f}")

figure, axes = plt.subplots(1, 3, figsize=(12, 4))
axes[0].imshow(digit, cmap="gray")
axes[0].add_patch(plt.Rectangle((col - 0.5, row - 0.5), 3, 3, fill=False, color="red", linewidth=2))
axes[0].set_title(f"test image 0 (label {y_test[0]}), 28×28")
shown = axes[1].imshow(edge, cmap="coolwarm", vmin=-2, vmax=2)
figure.colorbar(shown, ax=axes[1], shrink=0.8, label="weight: red +, blue −, white 0")
for (r, c), value in np.ndenumerate(edge):
    axes[1].text(c, r, f"{value:g}", ha="center", va="center", fontsize=14)
axes[1].set_title("the 3×3 kernel")
reach = float(np.abs(by_hand).max())  # symmetric colours: white is exactly 0
shown = axes[2].imshow(by_hand, cmap="coolwarm", vmin=-reach, vmax=reach)
figure.colorbar(shown, ax=axes[2], shrink=0.8, label="response: red +, blue −, white 0")
axes[2].add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, color="black", linewidth=2))
axes[2].set_title(f"feature map by hand, {by_hand.shape[0]}×{by_hand.shape[1]}")
for axis in axes:
    axis.set(xticks=[], yticks=[])
plt.show()

# %% [markdown]
# **Stride and padding.** With an input of $n$ pixels per side, a kernel of $k$ and a stride $s$, the map has
#
# $$n_{\text{out}} = \left\lfloor \frac{n - k}{s} \right\rfloor + 1 \quad \text{(valid)}, \qquad
# n_{\text{out}} = \left\lceil \frac{n}{s} \right\rceil \quad \text{(same)}$$
#
# positions per side. The cell computes every map by hand, checks its size against the formula, then asks a real
# Keras `Conv2D` layer, given the same kernel as its weights, for the same maps.

# %%
strides, paddings = (1, 2, 3, 4), ("valid", "same")
conv_sizes, keras_sizes, formula_sizes, conv_max_difference = {}, {}, {}, 0.0
figure, axes = plt.subplots(2, 4, figsize=(13, 7))
for row, padding in enumerate(paddings):
    conv_sizes[padding], keras_sizes[padding], formula_sizes[padding] = {}, {}, {}
    for col, stride in enumerate(strides):
        mine = convolve(digit, edge, stride, padding)
        side = (28 - 3) // stride + 1 if padding == "valid" else math.ceil(28 / stride)  # the formula above
        conv = layers.Conv2D(1, 3, strides=stride, padding=padding, use_bias=False)
        conv.build((None, 28, 28, 1))  # makes its (random) weights
        conv.set_weights([edge[:, :, None, None]])  # kernel shape: (height, width, input channels, filters)
        theirs = np.asarray(conv(digit[None, :, :, None]))[0, :, :, 0]
        conv_sizes[padding][stride], keras_sizes[padding][stride] = list(mine.shape), list(theirs.shape)
        formula_sizes[padding][stride] = [side, side]
        conv_max_difference = max(conv_max_difference, float(np.abs(mine - theirs).max()))
        shown = axes[row, col].imshow(mine, cmap="coolwarm", vmin=-4, vmax=4)  # ±4: the most a 0-1 image gives
        axes[row, col].set(title=f"stride {stride}, {padding}: {mine.shape[0]}×{mine.shape[1]}", xticks=[], yticks=[])
figure.suptitle("One 3×3 edge detector over a 28×28 digit, by hand: the map shrinks with the stride")
figure.colorbar(shown, ax=axes, shrink=0.6, label="response: red +, blue −, white 0")
plt.show()
print("valid padding: " + ", ".join(f"stride {s} → {h}×{w}" for s, (h, w) in conv_sizes["valid"].items()))
print("same padding:  " + ", ".join(f"stride {s} → {h}×{w}" for s, (h, w) in conv_sizes["same"].items()))
print(f"The formula gives every size ({formula_sizes == conv_sizes}); Keras' Conv2D gives the same sizes "
      f"({keras_sizes == conv_sizes}) and the same numbers: the largest "
      f"difference from the maps by hand is {conv_max_difference:.1e}, rounding in the last digits of float32. "
      f"A convolution is nothing but multiply, add, move by the stride.")

# %% [markdown]
# **Summary.** A convolution is a sliding multiply-and-add: each number of the map says how well the patch under
# the kernel matches it. The map's size follows from $n$, $k$, $s$ and the padding, and Keras computes the same.
#
# **Exercise.** Replace `edge` by `edge.T` (a horizontal-edge detector) in the first cell of this step and run
# both cells: which strokes of the 7 light up now, and which went white?

# %% [markdown]
# ## 3. Kernels are feature detectors
#
# **Question.** Nobody gives the CNN its kernels: they start as random numbers. After training, are they still
# random, or have they become detectors of strokes and edges, like the Sobel kernel of step 2? How could you tell?
#
# Three pieces of evidence. First, look: the same kernels before training (random, as Keras starts them) and after,
# each next to the map it makes of the test digit (step 2's `convolve`, bias left out). Then a number that tells a
# random kernel from a trained one. Then the reverse: start from a random 3×3 kernel and let gradient descent learn
# it from nothing but a digit and its Sobel map: it should find the Sobel kernel again.

# %%
STEP = "3. kernels are feature detectors"
kernels = np.asarray(cnn.get_layer("conv1").kernel)[:, :, 0, :]  # (5, 5, 1 channel, 32 filters) → (5, 5, 32)
SHOWN = range(8)  # which of the 32 kernels to show
rows = {"before training (random)": kernels_before, "after training": kernels}
figure, axes = plt.subplots(4, len(SHOWN), figsize=(13, 7.2))
for block, (when, weights) in enumerate(rows.items()):
    reach = float(np.abs(weights).max())  # one colour scale for the kernels of a row, white = 0
    for col, index in enumerate(SHOWN):
        response = convolve(digit, weights[:, :, index])  # the 24×24 map this kernel makes of test image 0
        axes[2 * block, col].imshow(weights[:, :, index], cmap="coolwarm", vmin=-reach, vmax=reach)
        axes[2 * block, col].set_title(f"kernel {index}", fontsize=9)
        spread = float(np.abs(response).max())
        axes[2 * block + 1, col].imshow(response, cmap="coolwarm", vmin=-spread, vmax=spread)
    axes[2 * block, 0].set_ylabel(f"{when}:\nkernel", fontsize=9)
    axes[2 * block + 1, 0].set_ylabel("its map of\nthe digit", fontsize=9)
for axis in axes.flat:
    axis.set(xticks=[], yticks=[])
figure.suptitle("conv1's kernels (5×5) before and after training, each above the map it makes of test image 0 "
                "(red +, blue −, white 0)")
plt.show()

# %% [markdown]
# Any kernel, even a random one, answers where there is ink, so the maps above all show the digit somehow. What
# the eye may see is that trained kernels are smoother and their maps pick out particular edges and strokes; the
# eye can be fooled, so here is a number.
#
# **A number that tells them apart.** In a random kernel, neighbouring weights are unrelated. A stroke or an edge is
# a smooth pattern: along it, neighbouring weights agree. So measure the *neighbour agreement*: the correlation
# between each weight and its right-hand and lower neighbours, over all 32 kernels (each kernel's mean taken out
# first); 0 for unrelated neighbours, 1 for a perfectly smooth kernel. To know what random gives, draw 200 sets of
# 32 kernels the way Keras starts a `Conv2D` (its default `glorot_uniform`).

# %%
def neighbour_agreement(weights):
    """Correlation of each weight with its right and lower neighbours, over kernels of shape (h, w, n)."""
    centred = weights - weights.mean(axis=(0, 1))
    left = np.concatenate([centred[:, :-1].ravel(), centred[:-1, :].ravel()])
    right = np.concatenate([centred[:, 1:].ravel(), centred[1:, :].ravel()])
    return float((left * right).sum() / np.sqrt((left * left).sum() * (right * right).sum()))


start = keras.initializers.GlorotUniform  # what Conv2D uses unless told otherwise
random_agreement = [neighbour_agreement(np.asarray(start(seed=s)((5, 5, 1, 32)))[:, :, 0])
                    for s in range(200)]
agreement = {"before": neighbour_agreement(kernels_before), "after": neighbour_agreement(kernels)}
figure, axis = plt.subplots(figsize=(8, 3.6))
axis.hist(random_agreement, bins=25, color="grey", label="200 random sets of 32 kernels")
axis.axvline(agreement["before"], color="C0", linewidth=2, label="conv1 before training")
axis.axvline(agreement["after"], color="C3", linewidth=2, label="conv1 after training")
axis.set(xlabel="neighbour agreement (correlation of neighbouring weights)", ylabel="sets of kernels",
         xlim=(min(random_agreement) - 0.05, max(1.0, agreement["after"] + 0.05)))
axis.yaxis.get_major_locator().set_params(integer=True)  # counts of sets: whole numbers
axis.legend(loc="upper right")
plt.show()
print(f"Neighbour agreement: {agreement['before']:.2f} before training, {agreement['after']:.2f} after; the 200 "
      f"random sets range from {min(random_agreement):.2f} to {max(random_agreement):.2f}. "
      + (f"The trained kernels are {agreement['after'] - max(random_agreement):.2f} above the most agreeing random "
         "set: training made them smooth patterns, not noise."
         if agreement["after"] > max(random_agreement) else "Here training did not leave them smoother than noise."))

# %% [markdown]
# **Learning a kernel back.** If kernels are detectors that training can find, gradient descent should be able to
# find a *known* one. Take test image 0 and its Sobel map from step 2 (the input and the output we want), start
# from a random 3×3 kernel, and let Adam nudge it to make the squared difference between its map and the Sobel map
# small. Nothing tells it the answer but those two images.

# %%
LEARN_STEPS, LEARN_RATE, TOLERANCE = 200, 0.3, 1e-3  # Adam's steps and learning rate; how close counts as equal
keras.utils.set_random_seed(SEED)
image, wanted = digit[None, :, :, None], by_hand[None, :, :, None]  # a batch of one: the digit and its Sobel map
learner = layers.Conv2D(1, 3, use_bias=False)  # one 3×3 kernel, random to start with
learner.build((None, 28, 28, 1))
kernel_start = learner.kernel.numpy()[:, :, 0, 0]
optimizer = keras.optimizers.Adam(LEARN_RATE)
learn_losses, learn_errors = [], []
for _ in range(LEARN_STEPS):
    with tf.GradientTape() as tape:  # records the computation, to get the gradient of the loss afterwards
        loss = tf.reduce_mean((learner(image) - wanted) ** 2)
    optimizer.apply([tape.gradient(loss, learner.kernel)], [learner.kernel])  # one step against the gradient
    learn_losses.append(float(loss))
    learn_errors.append(float(np.abs(np.asarray(learner.kernel)[:, :, 0, 0] - edge).max()))
learned = np.asarray(learner.kernel)[:, :, 0, 0]
learn_error = learn_errors[-1]

figure, axes = plt.subplots(1, 4, figsize=(14, 3.4), gridspec_kw={"width_ratios": [1, 1, 1, 2]})
for axis, (title, weights) in zip(axes[:3], (("random start", kernel_start), (f"after {LEARN_STEPS} steps", learned),
                                         ("Sobel (step 2)", edge)), strict=True):
    axis.imshow(weights, cmap="coolwarm", vmin=-2, vmax=2)
    for (r, c), value in np.ndenumerate(weights):
        axis.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=9)
    axis.set(title=title, xticks=[], yticks=[])
axes[3].semilogy(range(1, LEARN_STEPS + 1), learn_losses, label="loss: mean squared difference of the maps")
axes[3].semilogy(range(1, LEARN_STEPS + 1), learn_errors, label="largest |learned − Sobel| weight")
axes[3].axhline(TOLERANCE, color="grey", linestyle="--", label=f"tolerance {TOLERANCE:g}")
axes[3].set(xlabel="step", title="Learning the kernel back")
axes[3].legend(fontsize=8)
axes[3].grid(alpha=0.3, which="both")
figure.tight_layout()
plt.show()
print(f"After {LEARN_STEPS} steps from a random start, the learned kernel is\n{learned.round(3)}\nand differs from "
      f"the Sobel kernel by at most {learn_error:.1e} in any weight: "
      + (f"equal within the tolerance of {TOLERANCE:g}. The digit and its map were enough to find the detector."
         if learn_error < TOLERANCE else f"not yet within {TOLERANCE:g}: give it more steps."))

# %% [markdown]
# **One digit's feature maps, layer by layer.** A smaller model that shares the CNN's layers can return what each
# layer outputs. The first maps still show the digit, each kernel lighting up its own strokes; deeper maps are
# smaller, more numerous and no longer look like anything a person recognises: they say *which* combinations of
# strokes are present, and roughly where.

# %% tags=["docs/feature_maps.png"]
map_layers = ["relu1", "pool1", "relu2", "pool2"]
probe = keras.Model(cnn.input, [cnn.get_layer(name).output for name in map_layers])
layer_outputs = probe(x_test[:1].astype("float32"), training=False)  # one image: a batch of one, (1, 28, 28, 1)
maps = {name: np.asarray(out)[0] for name, out in zip(map_layers, layer_outputs, strict=True)}
figure, axes = plt.subplots(len(maps), 9, figsize=(12.6, 6.4))
for row, (name, fmap) in enumerate(maps.items()):
    axes[row, 0].imshow(x_test[0, :, :, 0], cmap="gray")
    axes[row, 0].set_ylabel(f"{name}\n{fmap.shape[0]}×{fmap.shape[1]}×{fmap.shape[2]}", fontsize=9)
    axes[row, 0].set(xticks=[], yticks=[])
    for channel in range(8):
        axes[row, channel + 1].imshow(fmap[:, :, channel], cmap="viridis")
        axes[row, channel + 1].axis("off")
figure.suptitle("Test image 0 after each layer of the CNN (input on the left, first 8 maps of each layer; "
                "each map on its own colour scale, yellow = its largest value)")
plt.show()


def likeness(fmap):
    """How much a layer's maps still look like the digit: the mean correlation of each map (that is not all 0)
    with the digit scaled to the map's size."""
    small = np.asarray(tf.image.resize(x_test[:1].astype("float32"), fmap.shape[:2], antialias=True))[0, :, :, 0]
    values = [np.corrcoef(small.ravel(), fmap[:, :, c].ravel())[0, 1] for c in range(fmap.shape[2])
              if fmap[:, :, c].std() > 0]
    return float(np.mean(values))


feature_map_shapes = {name: list(fmap.shape) for name, fmap in maps.items()}
resemblance = {name: likeness(fmap) for name, fmap in maps.items()}
print("Feature maps shrink and deepen layer by layer: "
      + " → ".join(f"{h}×{w}×{c}" for h, w, c in feature_map_shapes.values())
      + f". The first layer's maps correlate {resemblance['relu1']:.2f} on average with the digit itself, the "
      f"second layer's {resemblance['relu2']:.2f}: "
      + ("the deeper the layer, the less its maps look like the digit."
         if resemblance["relu2"] < resemblance["relu1"] else "here the deeper maps still look as much like it."))

# %% [markdown]
# **Summary.** Training turns random 5×5 kernels into smooth stroke and edge patterns whose maps light up the
# digit's strokes, and gradient descent recovers a known edge detector from one input and its output.
#
# **Exercise.** Set `SHOWN = range(8, 16)` in the first cell of this step, or `LEARN_STEPS = 50` in the
# learning cell: which kernels look like edges, and how far from Sobel is a kernel learned in 50 steps?

# %% [markdown]
# ## 4. Parameter sharing
#
# **Question.** A layer that finds strokes anywhere in a 28×28 image: how many weights does it need as a
# convolution, and how many as a `Dense` layer that gives as many outputs?
#
# A `Conv2D` layer's weights are its kernels, whatever the size of the image: each kernel is used at every
# position (*shared*). A `Dense` layer has one weight for every pair of input and output. So compare a `Conv2D`
# with 32 kernels of 3×3 on a 28×28 image with a `Dense` layer that gives as many outputs (26×26×32). On a colour
# (RGB) image a 3×3 kernel spans the three channels: it is 3×3×3. And pooling, by shrinking the maps, shrinks
# the layer that comes after it.

# %%
STEP = "4. parameter sharing"
conv = layers.Conv2D(32, 3)
conv.build((None, 28, 28, 1))
outputs = 26 * 26 * 32  # what that conv layer puts out
dense_layer = layers.Dense(outputs)
dense_layer.build((None, 28 * 28))
rgb = layers.Conv2D(32, 3)
rgb.build((None, 32, 32, 3))  # a 32×32 colour image: three channels


def cnn_without_pooling() -> keras.Model:
    """build_cnn() with its two MaxPooling2D layers taken out."""
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.ReLU()(layers.Conv2D(32, 5)(x))  # 24×24×32
    x = layers.ReLU()(layers.Conv2D(64, 3)(x))  # 22×22×64: no pooling in between
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.Dropout(0.25)(layers.Flatten()(x))))


no_pool = cnn_without_pooling()
parameters = {
    "Conv2D(32, 3×3)\n28×28×1 → 26×26×32": conv.count_params(),
    f"Dense({outputs:,})\n784 → 26×26×32": dense_layer.count_params(),
    "Conv2D(32, 3×3)\non RGB 32×32×3": rgb.count_params(),
    "CNN with pooling\n(train_cnn.py)": cnn.count_params(),
    "the same CNN\nwithout pooling": no_pool.count_params(),
}
shared, unshared = conv.count_params(), dense_layer.count_params()
figure, axis = plt.subplots(figsize=(12, 4.8))
bars = axis.bar(list(parameters), list(parameters.values()), color=["C0", "C1", "C0", "C0", "C4"])
axis.bar_label(bars, [f"{value:,}" for value in parameters.values()])
axis.set(yscale="log", ylabel="parameters (log scale)", title="Parameters: sharing and pooling")
plt.show()
last_with, last_without = cnn.get_layer("probabilities"), no_pool.layers[-1]
print(f"A Conv2D with 32 kernels of 3×3 has {shared:,} parameters (32 × 9 weights + 32 biases) on any image size; "
      f"a Dense layer with the same 26×26×32 outputs has {unshared:,}, {unshared // shared:,}× as many.")
print(f"On RGB images each kernel has shape {tuple(rgb.kernel.shape[:3])} (3×3 over 3 channels): "
      f"{rgb.count_params():,} parameters for 32 of them.")
print(f"Pooling shrinks what comes after it: the output layer sees {last_with.input.shape[1]:,} features and has "
      f"{last_with.count_params():,} weights with pooling, {last_without.input.shape[1]:,} and "
      f"{last_without.count_params():,} without; the whole CNN {cnn.count_params():,} against "
      f"{no_pool.count_params():,}. The dense network's first layer alone has "
      f"{dense.get_layer('dense1').count_params():,}.")

# %% [markdown]
# **A kernel over several channels.** The CNN's second convolution does not look at the digit but at the 32 maps
# of `pool1`. Each of its 64 kernels is 3×3×32: one 3×3 slice per input map. One number of its output is the sum,
# over the 32 maps, of each map's 3×3 patch times its slice, plus the kernel's bias: step 2's multiply-and-add, in
# depth. The cell computes all 10×10×64 outputs that way from the trained weights and compares them with Keras.

# %%
pool1_maps = maps["pool1"]  # 12×12×32: test image 0 after conv1, ReLU and pooling (step 3)
conv2 = cnn.get_layer("conv2")
weights2, bias2 = (np.asarray(w) for w in conv2.get_weights())  # (3, 3, 32, 64) and (64,)
windows = np.lib.stride_tricks.sliding_window_view(pool1_maps, (3, 3), axis=(0, 1))  # (10, 10, 32, 3, 3): each patch
depth_by_hand = np.einsum("hwcij,ijcf->hwf", windows, weights2) + bias2  # sum over rows, columns AND channels
depth_keras = np.asarray(keras.Model(cnn.input, conv2.output)(x_test[:1].astype("float32")))[0]
depth_difference = float(np.abs(depth_by_hand - depth_keras).max())
r, c, f = 4, 5, 0  # one output number, written out
one = sum(float((pool1_maps[r : r + 3, c : c + 3, m] * weights2[:, :, m, f]).sum()) for m in range(32)) + bias2[f]
print(f"conv2's kernels: {weights2.shape[:3]} each, {weights2.shape[3]} of them. Output ({r}, {c}) of kernel {f}: "
      f"the sum of 32 maps' 3×3 products plus the bias = {one:.4f}; Keras gives {depth_keras[r, c, f]:.4f}.")
print(f"All {depth_by_hand.size:,} outputs by hand against Keras: the largest difference is {depth_difference:.1e}. "
      f"Each output takes {np.prod(weights2.shape[:3]):,} multiply-adds (3 × 3 × 32).")

# %% [markdown]
# **Summary.** A convolution's weights are its kernels, used at every position, so its size does not grow with the
# image; a kernel spans all the channels it reads, and pooling shrinks the layers that follow.
#
# **Exercise.** Change `rgb.build((None, 32, 32, 3))` to a 224×224 image, `(None, 224, 224, 3)`: what happens to
# the Conv2D's parameter count, and what would a Dense layer with as many outputs need?

# %% [markdown]
# ## 5. ReLU against sigmoid and tanh
#
# **Question.** In a network ten layers deep, does the first layer learn as fast as the last? What could stop
# the learning signal on its way back to the input?
#
# Training follows the *gradient*: how much the loss changes with each weight. It is computed from the output
# back to the input, layer by layer, multiplying by each layer's slope and weights on the way. Sigmoid's slope is at
# most 0.25 and tanh's at most 1, and both are near 0 wherever the unit is saturated; ReLU's is exactly 1 for every
# positive input and 0 for the rest. Ten layers deep, the gradient that reaches the first layer *vanishes* with
# sigmoid. The weights matter too: Keras starts a `Dense` layer with `glorot_uniform`, sized to keep the signal's
# spread through a layer whose activation passes small numbers on unchanged, as tanh does near 0. ReLU sets about
# half its inputs to 0, so with that start each layer halves the signal's power, and the gradient's on its way
# back; *He initialisation* (`he_normal`: weights about √2 larger) is the start made for ReLU.
#
# The cell builds a deep, narrow dense network (10 hidden layers of 64 units) four ways and measures, for each
# hidden layer, the size of the signal going forward and the gradient per weight coming back (the root mean
# square, so that the first layer's 784×64 weights and the 64×64 of the others compare fairly), then trains each
# the same short way.

# %%
STEP = "5. ReLU, sigmoid, tanh"
VERSIONS = {"sigmoid": ("sigmoid", "glorot_uniform"), "tanh": ("tanh", "glorot_uniform"),
            "relu": ("relu", "glorot_uniform"), "relu_he": ("relu", "he_normal")}  # activation, start
LABELS = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "ReLU, default start", "relu_he": "ReLU, He start"}


def deep_dense(activation: str, initializer: str, depth: int = 10, width: int = 64) -> keras.Model:
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Flatten()(layers.Rescaling(1 / 255)(inputs))
    for index in range(depth):
        x = layers.Dense(width, activation=activation, kernel_initializer=initializer, name=f"hidden{index + 1}")(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name=f"deep_{activation}")


def gradient_sizes(model, images, labels) -> list:
    """Root mean square of the loss's gradient over each hidden layer's weights, the first layer first."""
    kernels_ = [layer.kernel for layer in model.layers if layer.name.startswith("hidden")]
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(labels, model(images.astype("float32"), training=True))
        loss = tf.reduce_mean(loss)
    return [float(tf.sqrt(tf.reduce_mean(gradient**2))) for gradient in tape.gradient(loss, kernels_)]


def signal_sizes(model, images) -> list:
    """Root mean square of each hidden layer's output: how large the signal still is going forward."""
    hidden = [layer.output for layer in model.layers if layer.name.startswith("hidden")]
    return [float(np.sqrt(np.mean(np.asarray(out) ** 2)))
            for out in keras.Model(model.input, hidden)(images.astype("float32"))]


ACTIVATION_IMAGES, ACTIVATION_EPOCHS = 10_000, 5
gradients, signals, activation_accuracy = {}, {}, {}
for version, (activation, initializer) in VERSIONS.items():
    keras.utils.set_random_seed(SEED)
    model = deep_dense(activation, initializer)
    gradients[version] = gradient_sizes(model, x_fit[:256], y_fit[:256])  # before training
    signals[version] = signal_sizes(model, x_fit[:256])
    history, _ = train(model, x_fit[:ACTIVATION_IMAGES], y_fit[:ACTIVATION_IMAGES], epochs=ACTIVATION_EPOCHS,
                       batch_size=128, learning_rate=1e-3, validation=(x_val, y_val))
    activation_accuracy[version] = history["val_accuracy"]

figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.4))
hidden_layers = range(1, 11)
for version in VERSIONS:
    style = dict(marker="o", label=LABELS[version], linestyle="--" if version == "relu_he" else "-")
    left.semilogy(hidden_layers, signals[version], **style)
    middle.semilogy(hidden_layers, gradients[version], **style)
    right.plot(range(1, ACTIVATION_EPOCHS + 1), np.array(activation_accuracy[version]) * 100, **style)
left.set(title="Forward: signal size per layer, before training", xlabel="hidden layer (1: next to the input)",
         ylabel="root mean square of the outputs (log)")
middle.set(title="Backward: gradient per weight, before training", xlabel="hidden layer (1: next to the input)",
           ylabel="root mean square of the gradient (log)")
right.set(title=f"Validation accuracy, {ACTIVATION_IMAGES:,} training images", xlabel="epoch", ylabel="%",
          ylim=(0, 100))
right.axhline(CHANCE * 100, color="grey", linestyle=":", label="chance")
for axis in (left, middle, right):
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
plt.show()

first_to_last = {name: sizes[0] / sizes[-1] for name, sizes in gradients.items()}
final = {name: values[-1] for name, values in activation_accuracy.items()}
he_gain = gradients["relu_he"][0] / gradients["relu"][0]
epsilon = keras.optimizers.Adam().epsilon  # Adam divides by (the gradient's running size + epsilon)
print(f"Before training, the gradient per weight reaching the first hidden layer is {first_to_last['sigmoid']:.1e} "
      f"times the last hidden layer's with sigmoid, {first_to_last['tanh']:.2f} with tanh, "
      f"{first_to_last['relu']:.2f} with ReLU from the default start and {first_to_last['relu_he']:.2f} with He's: "
      f"{gradients['relu'][0] / gradients['sigmoid'][0]:,.0f}× more reaches ReLU's first layer than sigmoid's.")
print(f"With the default start, ReLU's signal shrinks from {signals['relu'][0]:.3f} at layer 1 to "
      f"{signals['relu'][-1]:.4f} at layer 10 (tanh keeps {signals['tanh'][-1]:.3f}); He's start keeps "
      f"{signals['relu_he'][-1]:.3f}, and its first-layer gradient is {he_gain:.0f}× the default start's "
      f"({gradients['relu_he'][0]:.1e} against {gradients['relu'][0]:.1e} per weight).")
print(f"Adam divides each weight's step by the running size of that weight's own gradient (plus epsilon = "
      f"{epsilon:g}), so a gradient that is smaller by the same factor everywhere still gives steps of about the "
      f"learning rate"
      + (f": the default-start ReLU still reaches {final['relu']:.1%}, close to He's {final['relu_he']:.1%}. "
         if final["relu"] > final["relu_he"] - 0.02 else
         f"; yet the default-start ReLU reaches only {final['relu']:.1%} against He's {final['relu_he']:.1%}: the "
         "rescaling does not make up for everything. ")
      + (f"Sigmoid's first-layer gradient, {gradients['sigmoid'][0]:.1e} per weight, is below epsilon, where that "
         "rescaling stops and the steps shrink with the gradient. "
         if gradients["sigmoid"][0] < epsilon else "")
      + f"After the same {ACTIVATION_EPOCHS} epochs: sigmoid {final['sigmoid']:.1%}, tanh {final['tanh']:.1%}"
      + (", sigmoid at chance level (one digit in ten): it learned nothing."
         if final["sigmoid"] < CHANCE * 1.5 else
         ("; sigmoid lags: where the gradient vanishes, the first layers barely learn."
          if final["sigmoid"] < min(final["relu"], final["relu_he"]) else "; here sigmoid kept up all the same.")))

# %% [markdown]
# **Summary.** Backpropagation multiplies by each layer's slope and weights: sigmoid makes the gradient vanish
# ten layers down, and ReLU keeps it when its weights start at the right size (He), with Adam rescaling the rest.
#
# **Exercise.** Change `ACTIVATION_EPOCHS = 5` to 15 and run the cell again: does sigmoid ever start to learn, and
# does the gap between the two ReLU starts grow or close?

# %% [markdown]
# ## 6. Max-pooling
#
# **Question.** Pooling throws numbers away. Which ones does it keep, and how large can a pool get before the
# network cannot read the digit any more? Is that because it keeps too few numbers, or because it forgets *where*?
#
# A 2×2 max-pooling layer cuts each map into 2×2 windows and keeps the largest value of each: a quarter of the
# numbers, the strongest responses, in a map half as wide: whether a stroke is in the window, not exactly where.
# Below, one of the CNN's first-layer maps of the test digit goes through pools from 2×2 to 24×24, all drawn on
# the same colour scale; a 24×24 pool keeps one number per map.

# %%
STEP = "6. max-pooling"
window = np.array([[1, 3, 2, 0], [4, 2, 1, 1], [0, 1, 5, 6], [2, 2, 7, 1]], dtype="float32")
window_pooled = np.asarray(layers.MaxPooling2D(2)(window[None, :, :, None]))[0, :, :, 0]
print(f"a 4×4 map:\n{window}\nafter MaxPooling2D(2):\n{window_pooled}")
stroke_map = maps["relu1"]  # the first ReLU's 24×24 maps of test image 0, from step 3
channel = int(stroke_map.sum(axis=(0, 1)).argmax())  # the map that answers most to this digit
top = float(stroke_map[:, :, channel].max())
pool_sizes = (2, 4, 8, 24)
figure, axes = plt.subplots(1, len(pool_sizes) + 1, figsize=(15, 3.4))
shown = axes[0].imshow(stroke_map[:, :, channel], cmap="viridis", vmin=0, vmax=top)
axes[0].set_title(f"relu1 map {channel}, {stroke_map.shape[0]}×{stroke_map.shape[1]}")
for axis, size in zip(axes[1:], pool_sizes, strict=True):
    shrunk = np.asarray(layers.MaxPooling2D(size)(stroke_map[None]))[0, :, :, channel]
    axis.imshow(shrunk, cmap="viridis", vmin=0, vmax=top)  # the same scale in every panel
    if shrunk.shape[0] <= 3:  # few numbers: write them in
        for (r, c), value in np.ndenumerate(shrunk):
            axis.text(c, r, f"{value:.2f}", ha="center", va="center", color="black" if value > top / 2 else "white")
    axis.set_title(f"{size}×{size} pool → {shrunk.shape[0]}×{shrunk.shape[1]}")
for axis in axes:
    axis.set(xticks=[], yticks=[])
figure.colorbar(shown, ax=axes, shrink=0.85, label="response (one scale for all)")
plt.show()
pool_kept = {size: int(np.asarray(layers.MaxPooling2D(size)(stroke_map[None])).size) for size in pool_sizes}
print(f"A 2×2 pool keeps {window_pooled.size} of {window.size} values, the largest of each window; of the "
      f"24×24×32 = {stroke_map.size:,} numbers of relu1 it keeps {pool_kept[2]:,}, a 24×24 pool {pool_kept[24]}: "
      f"for map {channel}, its largest value, {stroke_map[:, :, channel].max():.2f}.")

# %% [markdown]
# **Too large a pool: fewer numbers, or no more *where*?** A small network (one `Conv2D` of 5×5 kernels, ReLU, a
# max-pool, then the output layer) trains the same short way with pools of 2×2, 4×4, 8×8 and 24×24. The larger the
# pool, the fewer numbers reach the output layer, *and* the less they say about where a stroke was: two effects at
# once. To split them, one more version has a 24×24 (global) pool but 288 kernels instead of 32, so that its output
# layer gets exactly as many numbers as the 8×8 pool's (3×3×32 = 288), with no *where* at all.

# %%
POOL_IMAGES, POOL_EPOCHS = 5_000, 3
POOL_VERSIONS = {"2×2 pool": (2, 32), "4×4 pool": (4, 32), "8×8 pool": (8, 32),
                 "24×24 pool, 288 kernels": (24, 288), "24×24 pool": (24, 32)}  # pool size, kernels
pool_accuracy, pool_features, pool_parameters = {}, {}, {}
for version, (size, count) in POOL_VERSIONS.items():
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.ReLU()(layers.Conv2D(count, 5)(layers.Rescaling(1 / 255)(inputs)))  # 24×24×count
    x = layers.Flatten()(layers.MaxPooling2D(size)(x))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    train(model, x_fit[:POOL_IMAGES], y_fit[:POOL_IMAGES], epochs=POOL_EPOCHS, batch_size=128, learning_rate=3e-3)
    pool_accuracy[version] = float(model.evaluate(x_test, y_test, batch_size=2048, verbose=0)[1])
    pool_features[version], pool_parameters[version] = int(x.shape[1]), model.count_params()

figure, axis = plt.subplots(figsize=(11, 4.4))
bars = axis.bar(list(POOL_VERSIONS), [pool_accuracy[v] * 100 for v in POOL_VERSIONS],
                color=["C0", "C0", "C0", "C3", "C3"])
axis.bar_label(bars, [f"{pool_accuracy[v]:.1%}\n{pool_features[v]:,} numbers in" for v in POOL_VERSIONS])
axis.axhline(CHANCE * 100, color="grey", linestyle=":", label="chance")
axis.set_xticks(range(len(POOL_VERSIONS)), [f"{size}×{size} pool\n{count} kernels"
                                             for size, count in POOL_VERSIONS.values()])
axis.set(ylim=(0, 112), ylabel="test accuracy (%)",
         title=f"One Conv2D and a pool, {POOL_IMAGES:,} images, {POOL_EPOCHS} epochs "
               "(blue: the pool keeps a grid of where; red: one number per map)")
axis.legend(loc="upper right")
plt.show()
total_cost = pool_accuracy["2×2 pool"] - pool_accuracy["24×24 pool"]
where_cost = pool_accuracy["8×8 pool"] - pool_accuracy["24×24 pool, 288 kernels"]
count_cost = pool_accuracy["24×24 pool, 288 kernels"] - pool_accuracy["24×24 pool"]
print("Test accuracy: " + ", ".join(f"{v} {pool_accuracy[v]:.1%} ({pool_features[v]:,} numbers into the output "
                                    f"layer, {pool_parameters[v]:,} parameters)" for v in POOL_VERSIONS) + ".")
print(f"From a 2×2 to a 24×24 pool the network loses {total_cost * 100:.1f} points. With the same 288 numbers "
      f"into the output layer, losing *where* (8×8 pool against a global pool of 288 maps) costs "
      f"{where_cost * 100:.1f} points; with no *where* either way, having 32 numbers instead of 288 costs "
      f"{count_cost * 100:.1f}. "
      + ("Both effects are real: too large a pool keeps too few numbers and forgets where the strokes were."
         if where_cost > 0.01 and count_cost > 0.01 else
         "Here the bigger part is " + ("losing where." if where_cost > count_cost else "keeping fewer numbers.")))

# %% [markdown]
# **What a deep unit sees: the receptive field.** Pooling also lets later layers look at more of the image. A unit
# after `pool2` depends on a square of input pixels whose side $r$ grows layer by layer: a layer with a kernel (or
# window) of $k$ adds $(k - 1)\,j$ to it, where $j$ is how many input pixels one step of that layer's input spans,
# and a stride of $s$ multiplies $j$ by $s$: $r \leftarrow r + (k - 1)\,j$, then $j \leftarrow j\,s$. The cell
# computes it for the CNN, then checks it: a twin of the CNN with the same sizes, kernels of ones and *average*
# pools (so that every path from the input is open), and the gradient of one of its `pool2` units with respect to
# the input: the pixels with a non-zero gradient are the ones it sees.

# %%
field, jump = 1, 1  # r and j, at the input
for layer_name, k, s in (("conv1", 5, 1), ("pool1", 2, 2), ("conv2", 3, 1), ("pool2", 2, 2)):
    field, jump = field + (k - 1) * jump, jump * s
    print(f"after {layer_name} (kernel {k}, stride {s}): receptive field {field}×{field}, step {jump} pixels")
twin = keras.Sequential([keras.Input(shape=(28, 28, 1)),
                         layers.Conv2D(1, 5, kernel_initializer="ones", use_bias=False), layers.AveragePooling2D(2),
                         layers.Conv2D(1, 3, kernel_initializer="ones", use_bias=False), layers.AveragePooling2D(2)])
blank = tf.Variable(tf.zeros((1, 28, 28, 1)))
with tf.GradientTape() as tape:
    unit = twin(blank)[0, 2, 2, 0]  # the unit in the middle of the 5×5 pool2 map
seen = np.asarray(tape.gradient(unit, blank))[0, :, :, 0] != 0
seen_rows, seen_cols = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
receptive_field = {"formula": field, "rows": len(seen_rows), "columns": len(seen_cols)}
print(f"By the gradient, pool2's unit (2, 2) sees rows {seen_rows[0]}–{seen_rows[-1]} and columns "
      f"{seen_cols[0]}–{seen_cols[-1]}: {len(seen_rows)}×{len(seen_cols)} pixels, "
      + ("as the formula says." if len(seen_rows) == len(seen_cols) == field else f"not the formula's {field}."))

# %% [markdown]
# **Summary.** Max-pooling keeps each window's strongest response, which makes maps smaller and lets deeper units
# see more of the image; a pool that is too large both keeps too few numbers and forgets where strokes were.
#
# **Exercise.** Change `POOL_IMAGES = 5_000` to 20,000: do the two costs, of losing *where* and of keeping fewer
# numbers, shrink with more data, or stay?

# %% [markdown]
# ## 7. Dropout
#
# **Question.** A network with hundreds of thousands of weights and a thousand training images can learn each
# image by heart.
# Does switching off random units during training make it memorise less?
#
# While training, a `Dropout(rate)` layer drops each of its inputs (sets it to 0) independently with probability
# `rate`, a new random draw at every call, so how many are dropped varies from call to call (about `rate` of them
# on average); it scales the others up by 1 / (1 − rate) so that their sum stays about the same on average. The
# network cannot rely on any single unit, so it memorises its training images less. When it answers
# (`training=False`, what `predict()` and `evaluate()` use) dropout does nothing. `train_dense.py` puts
# `Dropout(0.5)` after each of its two hidden layers of 512 units; the CNN `Dropout(0.25)` before its output.

# %%
STEP = "7. dropout"
dropout = layers.Dropout(0.5)
ones = np.ones((1, 12), dtype="float32")
first, second = np.asarray(dropout(ones, training=True)), np.asarray(dropout(ones, training=True))
print(f"training=True,  call 1: {first[0]} ({int((first == 0).sum())} of {ones.size} dropped)\n"
      f"training=True,  call 2: {second[0]} ({int((second == 0).sum())} of {ones.size} dropped)")
print(f"training=False, call 1: {np.asarray(dropout(ones, training=False))[0]}")
sample = x_test[:8].astype("float32")
dropout_layer_differ = not np.array_equal(first, second)
dropout_training_differ = not np.allclose(dense(sample, training=True), dense(sample, training=True))
dropout_inference_agree = bool(np.array_equal(dense(sample, training=False), dense(sample, training=False)))
print(f"The trained dense network on the same 8 images: two calls in training mode differ "
      f"({dropout_training_differ}), two calls in testing mode agree ({dropout_inference_agree}).")
print("Its dropout layers: " + ", ".join(f"{layer.name} rate {layer.rate}" for layer in dense.layers
                                         if isinstance(layer, layers.Dropout)) + ", each after a Dense layer.")

# %% [markdown]
# **The overfitting gap.** Train the dense network on few images for many epochs, once without dropout and once
# with `train_dense.py`'s 0.5, and follow the loss on the training images and on images it never trains on (the
# validation images). When the training loss keeps falling while the validation loss stops falling or climbs back,
# the network memorises its training images. The curves' training loss is averaged over each epoch *with dropout
# on* (when there is dropout), which makes it look worse than the trained network is; so the gap is measured after
# training, with `evaluate()` (dropout off for both) on the same training images and on the validation images:
# the validation loss minus the training loss. The effect is small next to the luck of one run, so each version
# trains with three seeds, and an effect is claimed only if every seed shows it.

# %%
DROPOUT_IMAGES, DROPOUT_EPOCHS, DROPOUT_SEEDS = 1_000, 20, (SEED, SEED + 1, SEED + 2)
RATES = (0.0, 0.5)
dropout_histories, dropout_losses = {}, {}
for seed in DROPOUT_SEEDS:
    for rate in RATES:
        keras.utils.set_random_seed(seed)
        model = build_dense(dropout=rate)
        dropout_histories[rate, seed], _ = train(model, x_fit[:DROPOUT_IMAGES], y_fit[:DROPOUT_IMAGES],
                                                 epochs=DROPOUT_EPOCHS, batch_size=64, learning_rate=1e-3,
                                                 validation=(x_val[:2_000], y_val[:2_000]))
        dropout_losses[rate, seed] = {  # after training, dropout off for both: evaluate() returns [loss, accuracy]
            "training": float(model.evaluate(x_fit[:DROPOUT_IMAGES], y_fit[:DROPOUT_IMAGES], batch_size=2048,
                                             verbose=0)[0]),
            "validation": float(model.evaluate(x_val, y_val, batch_size=2048, verbose=0)[0]),
        }
gaps = {rate: [dropout_losses[rate, s]["validation"] - dropout_losses[rate, s]["training"] for s in DROPOUT_SEEDS]
        for rate in RATES}
gap = {rate: float(np.mean(values)) for rate, values in gaps.items()}  # the mean over the seeds
narrowed = [without - with_ for without, with_ in zip(gaps[0.0], gaps[0.5], strict=True)]  # seed by seed

figure, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [2, 2, 1.2]})
for axis, rate in zip(axes[:2], RATES, strict=True):
    history = dropout_histories[rate, SEED]
    on = f"dropout {rate} on" if rate else "no dropout"
    axis.plot(range(1, DROPOUT_EPOCHS + 1), history["loss"], label=f"training loss (epoch mean, {on})")
    axis.plot(range(1, DROPOUT_EPOCHS + 1), history["val_loss"], label="validation loss")
    axis.set(title=f"dropout {rate}, seed {SEED}", xlabel="epoch", ylabel="cross-entropy (log scale)", yscale="log")
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="lower left")
for position, rate in enumerate(RATES):
    axes[2].scatter([position] * len(DROPOUT_SEEDS), gaps[rate], color="C0", label="one seed" if rate else None)
    axes[2].errorbar(position + 0.15, gap[rate], yerr=np.std(gaps[rate]), fmt="s", color="C3", capsize=4,
                     label="mean ± standard deviation" if rate else None)
axes[2].set(xticks=[0, 1], xticklabels=[f"dropout {r}" for r in RATES], xlim=(-0.5, 1.5), ylim=(0, None),
            ylabel="validation − training loss", title="The gap after training, dropout off")
axes[2].legend(loc="lower center", fontsize=8)
figure.tight_layout()
plt.show()
print(f"The gap (validation minus training loss, dropout off, over seeds {', '.join(map(str, DROPOUT_SEEDS))}): "
      f"{gap[0.0]:.3f} ± {np.std(gaps[0.0]):.3f} without dropout, {gap[0.5]:.3f} ± {np.std(gaps[0.5]):.3f} with "
      f"0.5; seed by seed, dropout narrows it by {', '.join(f'{d:+.3f}' for d in narrowed)}: "
      + ("in every seed, so dropout narrows the overfitting gap here."
         if min(narrowed) > 0 else "not in every seed, so these runs do not show that dropout narrows it."))
accuracies = {rate: [dropout_histories[rate, s]["val_accuracy"][-1] for s in DROPOUT_SEEDS] for rate in RATES}
better = [b - a for a, b in zip(accuracies[0.0], accuracies[0.5], strict=True)]
print(f"Validation accuracy: {np.mean(accuracies[0.0]):.1%} ± {np.std(accuracies[0.0]):.1%} without, "
      f"{np.mean(accuracies[0.5]):.1%} ± {np.std(accuracies[0.5]):.1%} with dropout: "
      + ("higher with dropout in every seed." if min(better) > 0 else
         "lower with dropout in every seed." if max(better) < 0 else
         "the seeds disagree on which is higher: no effect on accuracy can be claimed from these runs."))

# %% [markdown]
# **Summary.** Dropout is on only while training: it silences random units so that none can be relied on.
# Whether that narrows the gap between training and validation loss here, the seeds above decide, not one run.
#
# **Exercise.** Change `DROPOUT_IMAGES = 1_000` to 4,000: with four times the images, is there still a gap to
# narrow, and does dropout still narrow it in every seed?

# %% [markdown]
# ## 8. Augmentation
#
# **Question.** With only a few hundred training images, can you get more out of them by showing the network
# slightly turned, zoomed and moved copies?
#
# More data helps most when there is little of it, and new views of the same digits are almost free: turn each
# a little, zoom a little, move it a little, differently in every step. In Keras 3 these are preprocessing layers
# (there is no `ImageDataGenerator` any more) that work only while training, so they can sit inside the model.
# `augmentation()`, defined in step 0 next to the networks that use it, holds the same layers as the training
# scripts' (`--augment`):

# %%
STEP = "8. augmentation"
keras.utils.set_random_seed(SEED)
augment = augmentation()
originals = x_train[:6].astype("float32") / 255
views = [np.asarray(augment(originals, training=True)) for _ in range(5)]
figure, axes = plt.subplots(6, 6, figsize=(6.5, 6.5))
for row in range(6):
    for col in range(6):
        axes[row, col].imshow((originals if col == 0 else views[col - 1])[row, :, :, 0], cmap="gray")
        axes[row, col].axis("off")
axes[0, 0].set_title("original", fontsize=9)
axes[0, 3].set_title("five random views", fontsize=9)
plt.show()
moved = float(np.mean([np.abs(view - originals).mean() for view in views]) / originals.mean())
print(f"Each call gives new views: two calls differ ({not np.allclose(views[0], views[1])}); a view changes the "
      f"pixels by {moved:.0%} of the mean brightness, while the digit stays the same digit.")

# %% [markdown]
# Now the CNN trains on 500 and on 4,000 images, once on the images as they are and once with the augmentation
# layers in front (`build_cnn(augment=True)`), for the same number of steps, each with three seeds, and is tested
# on the 6,000 validation images. A gain is claimed only where every seed shows it.

# %%
AUGMENT_SIZES, AUGMENT_STEPS, AUGMENT_SEEDS = (500, 4_000), 200, (SEED, SEED + 1, SEED + 2)
augment_runs = {"plain": {}, "augmented": {}}  # kind → (size, seed) → validation accuracy
for size in AUGMENT_SIZES:
    epochs = math.ceil(AUGMENT_STEPS / math.ceil(size / 64))  # steps of 64 images
    for seed in AUGMENT_SEEDS:
        for kind, results in augment_runs.items():
            keras.utils.set_random_seed(seed)
            model = build_cnn(augment=kind == "augmented")
            train(model, x_fit[:size], y_fit[:size], epochs=epochs, batch_size=64, learning_rate=3e-3)
            results[size, seed] = float(model.evaluate(x_val, y_val, batch_size=2048, verbose=0)[1])
augment_accuracy = {kind: {size: float(np.mean([results[size, s] for s in AUGMENT_SEEDS])) for size in AUGMENT_SIZES}
                    for kind, results in augment_runs.items()}  # the mean over the seeds
gains = {size: [augment_runs["augmented"][size, s] - augment_runs["plain"][size, s] for s in AUGMENT_SEEDS]
         for size in AUGMENT_SIZES}

figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
positions = np.arange(len(AUGMENT_SIZES))
for offset, (kind, results) in zip((-0.12, 0.12), augment_runs.items(), strict=True):
    for position, size in zip(positions, AUGMENT_SIZES, strict=True):
        values = [results[size, s] * 100 for s in AUGMENT_SEEDS]
        left.scatter([position + offset] * len(values), values, color="C0" if kind == "plain" else "C2", s=18,
                     label=f"{kind}, one seed" if position == 0 else None)
        left.errorbar(position + offset, np.mean(values), yerr=np.std(values), fmt="_", markersize=14, capsize=4,
                      color="black", label="mean ± standard deviation" if position == 0 and kind == "plain" else None)
left.set(xticks=positions, xticklabels=[f"{s:,} images" for s in AUGMENT_SIZES], xlim=(-0.5, len(positions) - 0.5),
         ylabel="validation accuracy (%)", title=f"The CNN, {AUGMENT_STEPS} steps of 64 images")
left.legend(fontsize=8, loc="lower right")
left.grid(alpha=0.3)
for position, size in zip(positions, AUGMENT_SIZES, strict=True):
    right.bar(position, np.mean(gains[size]) * 100, width=0.5, color="C2",
              label="mean over the seeds" if position == 0 else None)
    right.errorbar(position, np.mean(gains[size]) * 100, yerr=np.std(gains[size]) * 100, fmt="none",
                   color="black", capsize=6, label="± standard deviation" if position == 0 else None)
    right.scatter([position + 0.1] * len(AUGMENT_SEEDS), np.array(gains[size]) * 100, color="C3", zorder=3,
                  label="one seed" if position == 0 else None)
right.axhline(0, color="grey", linewidth=1)
right.set(xticks=positions, xticklabels=[f"{s:,} images" for s in AUGMENT_SIZES], xlim=(-0.5, len(positions) - 0.5),
          ylabel="augmented − plain (points)", title="The gain from augmentation, seed by seed")
right.legend(fontsize=8, loc="upper right")
right.grid(alpha=0.3)
plt.show()
for size in AUGMENT_SIZES:
    gain = np.array(gains[size]) * 100
    print(f"{size:,} images: plain {augment_accuracy['plain'][size]:.1%}, augmented "
          f"{augment_accuracy['augmented'][size]:.1%} (means over seeds {', '.join(map(str, AUGMENT_SEEDS))}); "
          f"gain {gain.mean():+.1f} ± {gain.std():.1f} points, seed by seed {', '.join(f'{g:+.1f}' for g in gain)}: "
          + ("augmentation helps in every seed." if gain.min() > 0 else
             "it hurts in every seed." if gain.max() < 0 else "the seeds disagree: no effect can be claimed."))

# %% [markdown]
# **Summary.** Augmentation layers make new views of each training image at every step, only while training.
# Where the seeds agree on a gain, those views stood in for images the network never had.
#
# **Exercise.** Change `AUGMENT_SIZES` to `(500, 4_000, 20_000)`: what happens to the gain as real images
# become plentiful?

# %% [markdown]
# ## 9. The comparison: a CNN against a dense network
#
# **Question.** The CNN has far fewer weights than the dense network (step 0's summaries). Should it be less
# accurate, slower, or neither? And is its lead really about pictures, or would it win on any 784 numbers?
#
# The two networks of step 0, each trained on all 54,000 training images as its script trains it, side by side on
# the 10,000 test images: accuracy, errors, parameters, arithmetic and time. Then two experiments on what the CNN's
# lead comes from: digits *shifted* a few pixels, and *shuffled* pixels.

# %%
STEP = "9. CNN against dense"


def multiply_adds(model) -> int:
    """Multiply-adds for one image: each Conv2D output needs one per kernel weight (height × width × input
    channels), each Dense unit one per input. Pooling, ReLU and biases are left out: they only compare or add."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            height, width, filters = layer.output.shape[1:]
            total += height * width * filters * int(np.prod(layer.kernel.shape[:3]))
        elif isinstance(layer, layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


arithmetic = {name: multiply_adds(model) for name, model in networks.items()}
table, speed = {}, {}
for name, model in networks.items():
    model.predict(x_test[:2048], batch_size=2048, verbose=0)  # a warm-up: the first call builds the function
    started = time.perf_counter()
    model.predict(x_test, batch_size=2048, verbose=0)
    speed[name] = len(x_test) / (time.perf_counter() - started)  # images per second
    table[name] = {"test accuracy": f"{accuracy[name]:.2%}", "parameters": f"{model.count_params():,}",
                   "weights in float32": f"{model.count_params() * 4 / 1024:,.0f} KiB",
                   "multiply-adds/image": f"{arithmetic[name]:,}",
                   "training time": f"{training_seconds[name]:.1f} s ({SETTINGS[name]['epochs']} epochs)",
                   "per epoch": f"{training_seconds[name] / SETTINGS[name]['epochs']:.1f} s",
                   "inference": f"{speed[name]:,.0f} images/s"}
print(f"{'':<20}{'CNN':>24}{'DENSE':>24}")
for key in table["cnn"]:
    print(f"{key:<20}{table['cnn'][key]:>24}{table['dense'][key]:>24}")
conv_share = {layer.name: multiply_adds(keras.Sequential([keras.Input(layer.input.shape[1:]), layer]))
              for layer in cnn.layers if isinstance(layer, layers.Conv2D | layers.Dense)}
print("The CNN's multiply-adds, layer by layer: "
      + ", ".join(f"{name} {count:,}" for name, count in conv_share.items())
      + "; the dense network's: " + ", ".join(f"{layer.name} {np.prod(layer.kernel.shape):,}"
                                               for layer in dense.layers if isinstance(layer, layers.Dense)) + ".")

figure, axes = plt.subplots(1, 2, figsize=(13, 4.2))
for name, history in histories.items():
    axes[0].plot(range(1, len(history["val_accuracy"]) + 1), np.array(history["val_accuracy"]) * 100,
                 marker="o", label=name.upper())
lowest_accuracy = min(min(history["val_accuracy"]) for history in histories.values()) * 100
axes[0].set(title="Validation accuracy per epoch (the axis starts near the lowest value)", xlabel="epoch",
            ylabel="%", ylim=(math.floor(lowest_accuracy) - 0.5, 100))
axes[0].legend(loc="lower right")
axes[0].grid(alpha=0.3)
errors = {name: int((guesses != y_test).sum()) for name, guesses in predicted.items()}
bars = axes[1].bar(["CNN", "Dense"], [errors["cnn"], errors["dense"]], color=["C0", "C1"])
axes[1].bar_label(bars, [f"{errors[n]} errors\n{networks[n].count_params():,} parameters" for n in networks])
axes[1].set(title="Errors on the 10,000 test images", ylim=(0, max(errors.values()) * 1.2))
plt.show()
lead = accuracy["cnn"] - accuracy["dense"]
per_epoch = {name: training_seconds[name] / SETTINGS[name]["epochs"] for name in networks}
print(f"The CNN is {'ahead' if lead > 0 else 'behind'} by {abs(lead) * 100:.2f} points ({errors['cnn']} errors "
      f"against {errors['dense']}) with {dense.count_params() / cnn.count_params():.0f}× fewer parameters, but "
      f"{arithmetic['cnn'] / arithmetic['dense']:.1f}× the multiply-adds per image ({arithmetic['cnn']:,} against "
      f"{arithmetic['dense']:,}): it uses each of its few weights at every position of the image. It took "
      f"{training_seconds['cnn'] / training_seconds['dense']:.1f}× as long to train in all "
      f"({SETTINGS['cnn']['epochs']} epochs against {SETTINGS['dense']['epochs']}), "
      f"{per_epoch['cnn'] / per_epoch['dense']:.1f}× as long per epoch, and answers "
      f"{speed['cnn']:,.0f} images per second against the dense network's {speed['dense']:,.0f}.")

# %% [markdown]
# **What each network gets wrong.** A confusion matrix counts, for every true digit (row), how often each digit
# was predicted (column): the diagonal is right, everything else a mistake. The colours are on a log scale so
# that the rare mistakes show.

# %%
confusion = {}
for name, guesses in predicted.items():
    confusion[name] = np.zeros((10, 10), dtype=int)
    np.add.at(confusion[name], (y_test, guesses), 1)  # one count per (true, predicted) pair
worst = {}
for name, matrix in confusion.items():
    off_diagonal = matrix - np.diag(np.diag(matrix))
    true, guess = np.unravel_index(off_diagonal.argmax(), matrix.shape)
    worst[name] = (int(true), int(guess), int(off_diagonal.max()))

figure, axes = plt.subplots(1, 2, figsize=(13, 5.8))
for axis, (name, matrix) in zip(axes, confusion.items(), strict=True):
    axis.imshow(matrix + 1, cmap="Blues", norm=LogNorm())
    for (true, guess), count in np.ndenumerate(matrix):
        if count:
            axis.text(guess, true, str(count), ha="center", va="center", fontsize=7,
                      color="white" if true == guess else "black")
    axis.set(title=f"{name.upper()}: {errors[name]} errors", xlabel="predicted", ylabel="true",
             xticks=range(10), yticks=range(10))
plt.show()

figure, axes = plt.subplots(4, 12, figsize=(13, 6.2))
for block, name in enumerate(networks):
    wrong = np.flatnonzero(predicted[name] != y_test)[:24]
    for slot, axis in enumerate(axes[block * 2 : block * 2 + 2].flat):
        axis.axis("off")
        if slot < len(wrong):
            index = wrong[slot]
            axis.imshow(x_test[index, :, :, 0], cmap="gray")
            axis.set_title(f"{y_test[index]}→{predicted[name][index]} {probabilities[name][index].max():.0%}",
                           fontsize=8, color="tab:blue" if name == "cnn" else "tab:orange")
        else:
            axis.remove()  # fewer than 24 mistakes: no empty panel
    axes[block * 2, 0].text(-0.5, 0, name.upper(), transform=axes[block * 2, 0].transAxes, rotation=90,
                            fontsize=11, ha="right", va="center")
figure.suptitle("Test digits each network gets wrong: true → predicted (its confidence)")
plt.show()
print(f"Errors on {len(y_test):,} test digits: CNN {errors['cnn']}, dense network {errors['dense']}. Most common "
      f"mix-up: CNN {worst['cnn'][0]}→{worst['cnn'][1]} ({worst['cnn'][2]}×), dense {worst['dense'][0]}→"
      f"{worst['dense'][1]} ({worst['dense'][2]}×); many of the digits above are hard to read for people too.")

# %% [markdown]
# **Shifted digits and shuffled pixels.** First the trained networks get the test digits moved $s$ pixels right
# *and* $s$ pixels down, so $s\sqrt{2}$ pixels along the diagonal (black paper fills in, nothing wraps around, and
# ink pushed past the edge of the 28×28 frame is lost). Neither network saw shifted digits in training: MNIST
# centres every digit. A convolution's maps move with the digit, and max-pooling forgives a pixel or so; but the
# CNN's last layer, a `Dense` layer over the 5×5×64 pooled maps, has one weight for each position in those maps,
# learned where the strokes of centred digits fall.
#
# Then both networks train again from scratch on a slice of the training images, once with the pixels in their
# places and once *shuffled*: the same fixed permutation of the 784 pixels for every image, which keeps every
# pixel's value and destroys the layout, the same way for both networks. A dense network does not know the layout
# in the first place.

# %% tags=["docs/exp_spatial.png"]
shifts = list(range(7))  # s: pixels right, and as many down


def shift(images, pixels):
    """Move every image ``pixels`` right and ``pixels`` down; black comes in at the top and on the left."""
    out = np.zeros_like(images)
    out[:, pixels:, pixels:] = images[:, : 28 - pixels, : 28 - pixels]
    return out


shifted_accuracy = {name: [float(model.evaluate(shift(x_test, s), y_test, batch_size=2048, verbose=0)[1])
                           for s in shifts] for name, model in networks.items()}
at_shift = {name: dict(zip(shifts, values, strict=True)) for name, values in shifted_accuracy.items()}
ink_lost = {s: 1 - float(shift(x_test, s).sum(dtype="float64") / x_test.sum(dtype="float64")) for s in shifts}

permutation = np.random.default_rng(SEED).permutation(28 * 28)


def scramble(images):
    """The same fixed permutation of the 784 pixels for every image: the values stay, the layout is gone."""
    return images.reshape(len(images), -1)[:, permutation].reshape(images.shape)


SHUFFLE_IMAGES, SHUFFLE_EPOCHS = 10_000, 4
retrained = {}
for name, build in (("cnn", build_cnn), ("dense", build_dense)):
    for order, transform in (("original", lambda images: images), ("shuffled", scramble)):
        keras.utils.set_random_seed(SEED)
        model = build()
        train(model, transform(x_fit[:SHUFFLE_IMAGES]), y_fit[:SHUFFLE_IMAGES], epochs=SHUFFLE_EPOCHS,
              batch_size=128, learning_rate=3e-3)
        retrained[name, order] = float(model.evaluate(transform(x_test), y_test, batch_size=2048, verbose=0)[1])

figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.9))
for name, values in shifted_accuracy.items():
    left.plot(shifts, np.array(values) * 100, marker="o", label=name.upper())
left.axhline(CHANCE * 100, color="grey", linestyle=":", label="chance")
left.set(title="Trained networks on shifted test digits", xlabel="shift s: s pixels right and s down",
         ylabel="test accuracy (%)", ylim=(0, 100), xticks=shifts)
left.legend(loc="upper right")
left.grid(alpha=0.3)
for offset, order in ((-0.2, "original"), (0.2, "shuffled")):
    values = [retrained[name, order] * 100 for name in ("cnn", "dense")]
    drawn = middle.bar(np.arange(2) + offset, values, width=0.4, label=f"{order} pixels")
    middle.bar_label(drawn, [f"{v:.1f}" for v in values], fontsize=9)
middle.set(xticks=[0, 1], xticklabels=["CNN", "Dense"], ylim=(0, 110), yticks=range(0, 101, 20),
           ylabel="test accuracy (%)",
           title=f"Trained again on {SHUFFLE_IMAGES:,} images, {SHUFFLE_EPOCHS} epochs")
middle.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)  # below the axes, clear of the bars
right.imshow(np.hstack([x_test[0, :, :, 0], scramble(x_test[:1])[0, :, :, 0]]), cmap="gray")
right.set(title="A digit, and the same pixels shuffled", xticks=[], yticks=[])
figure.tight_layout()
plt.show()
cnn_loss = retrained["cnn", "original"] - retrained["cnn", "shuffled"]
dense_loss = retrained["dense", "original"] - retrained["dense", "shuffled"]
small, large = shifts[len(shifts) // 2], shifts[-1]  # a middling shift and the largest
drop = {name: {s: at_shift[name][shifts[0]] - value for s, value in at_shift[name].items()} for name in networks}
print(f"Shifted {small} pixels right and {small} down ({small * math.sqrt(2):.1f} pixels diagonally), the CNN "
      f"keeps {at_shift['cnn'][small]:.1%} and the dense network {at_shift['dense'][small]:.1%} (from "
      f"{at_shift['cnn'][shifts[0]]:.1%} and {at_shift['dense'][shifts[0]]:.1%}): "
      + ("the CNN degrades more slowly at small shifts, " + ", ".join(
          f"{s} px: CNN −{drop['cnn'][s] * 100:.1f}, dense −{drop['dense'][s] * 100:.1f} points"
          for s in shifts[1:] if s <= small) + "; its maps move with the digit and pooling absorbs a pixel or so."
         if all(drop["cnn"][s] < drop["dense"][s] for s in shifts[1:] if s <= small)
         else "the CNN does not degrade more slowly than the dense network here."))
print(f"At {large} right and {large} down, the CNN is at {at_shift['cnn'][large]:.1%} and the dense network at "
      f"{at_shift['dense'][large]:.1%} (chance: {CHANCE:.0%})"
      + (", the CNN below chance" if at_shift["cnn"][large] < CHANCE else "")
      + (" and below the dense network" if at_shift["cnn"][large] < at_shift["dense"][large] else "")
      + f"; {ink_lost[large]:.1%} of the test digits' ink is pushed off the 28×28 frame. A CNN is not "
      "shift-invariant: its convolutions move their output with the shift, but the final Dense layer reads the "
      "5×5×64 maps position by position, and a digit's features arriving in the wrong cells meet weights learned "
      "for other digits"
      + (", which is how it can do worse than guessing." if at_shift["cnn"][large] < CHANCE else ".")
      + " Training with shifted digits (the augmentation of step 8) is the usual remedy.")
print(f"Shuffling the pixels costs the dense network {dense_loss * 100:.1f} points "
      f"({retrained['dense', 'original']:.1%} → {retrained['dense', 'shuffled']:.1%}) and the CNN "
      f"{cnn_loss * 100:.1f} ({retrained['cnn', 'original']:.1%} → {retrained['cnn', 'shuffled']:.1%}): the CNN's "
      f"lead of {(retrained['cnn', 'original'] - retrained['dense', 'original']) * 100:.1f} points becomes "
      f"{(retrained['cnn', 'shuffled'] - retrained['dense', 'shuffled']) * 100:+.1f}. "
      + ("The CNN's advantage is the picture's spatial structure." if cnn_loss > dense_loss
         else "Here the shuffled pixels did not cost the CNN more."))

# %% [markdown]
# **Summary.** The CNN makes fewer mistakes with far fewer weights, paying in arithmetic per image; it loses
# that lead when the pixels' layout is destroyed, and it is not shift-invariant beyond a pixel or two.
#
# **Exercise.** In `shift`, move the digits right only: `out[:, :, pixels:] = images[:, :, : 28 - pixels]`. Does
# the CNN hold up better along one axis than along the diagonal, and at which shift does it fall below the
# dense network?

# %% [markdown]
# ## Recap: why the CNN wins
#
# 0. **The tools.** Two networks, trained the same way on the same images: the differences below come from
#    their layers.
# 1. **MNIST** is pictures: 28×28 grids in which neighbouring pixels belong together.
# 2. **A convolution** slides one small kernel over the picture: multiply, add, move.
# 3. **Trained kernels are detectors**: smooth stroke and edge patterns, unlike random ones, and gradient descent
#    finds a known detector from one example.
# 4. **Sharing** one kernel across all positions keeps the weights few, whatever the image size, and a kernel
#    spans every channel it reads.
# 5. **ReLU**, started at the right size, lets the gradient reach the first layers, so deep stacks can train.
# 6. **Max-pooling** keeps the strongest responses, shrinks the maps and widens what deeper units see; too large
#    a pool forgets where strokes are.
# 7. **Dropout** and 8. **augmentation** fight memorising, each measured over seeds before it is believed.
# 9. Put together, the CNN makes fewer errors with a fraction of the dense network's weights, because its layers
#    assume that nearby pixels form strokes, wherever they are; shuffle the pixels and that assumption, and the
#    lead, are gone.
#
# ## How long each step computed

# %%
cell_times = list(cell_seconds.values())
section_seconds = {step: sum(seconds for name, seconds in cell_times if name == step)
                   for step in dict.fromkeys(name for name, _ in cell_times)}
total_seconds = sum(section_seconds.values())
for name, seconds in section_seconds.items():
    print(f"{name:<36}{seconds:7.1f} s")
print(f"{'all of it':<36}{total_seconds:7.1f} s ({total_seconds / 60:.1f} minutes of computing; the time spent "
      "reading between cells does not count, and a cell run again counts once)"
      if section_seconds else "The time table needs IPython (Jupyter, VS Code, Colab): run the notebook there.")
