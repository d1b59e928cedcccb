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
# **Where it runs.** Jupyter, JupyterLab, VS Code or Colab (upload this file alone). It needs only Keras with
# TensorFlow, NumPy and matplotlib. It reads MNIST from `data/mnist.npz` when that file exists (offline:
# `python get_mnist.py` in the project makes it), else downloads it through `keras.datasets` (11 MB, once). It is
# meant to run top to bottom in five minutes on two CPU cores: most experiments train on slices of MNIST, and only
# the project's two networks (trained in step 3, compared in step 9) train on all of it, as `train_cnn.py` and
# `train_dense.py` train them. The last cell prints how long each step took on your computer.
#
# **Words.** A *network* (Keras: a `Model`) is a chain of *layers*; each layer turns an array into another. Its
# *weights* (*parameters*) start random; *training* shows it a *batch* of images at a time (one *step*) and nudges
# the weights to make its answers less wrong; an *epoch* is one pass over all the training images. *Validation*
# images are held out of training to check, after every epoch, how the network does on images it has not learned
# from; the *test* images are used once, at the end.

# %%
import math
import time
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from keras import layers
from matplotlib.colors import LogNorm

section_started = {"1. MNIST": time.perf_counter()}  # when each step began: the last cell prints the times
keras.utils.set_random_seed(1)  # the same seed, the same weights, shuffling and dropout (as the scripts' --seed 1)
print(f"Keras {keras.__version__}, TensorFlow {tf.__version__}, NumPy {np.__version__}")

# %% [markdown]
# ## 1. MNIST: 28×28 grey images, pixels 0–255, labels 0–9
#
# 70,000 handwritten digits: 60,000 to train on and 10,000 to test on, kept apart until the end. Each image is a
# 28×28 array of whole numbers from 0 (black paper) to 255 (white ink); each label says which digit it is.

# %%
DATA = Path("data/mnist.npz")  # python get_mnist.py writes it; without it, Keras downloads MNIST once
if DATA.is_file():
    with np.load(DATA, allow_pickle=False) as archive:  # never unpickle: a data file cannot run code
        x_train, y_train = archive["x_train"], archive["y_train"]
        x_test, y_test = archive["x_test"], archive["y_test"]
    source = f"{DATA} (a local file: no internet needed)"
else:
    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    source = "keras.datasets.mnist (downloaded once, then read from ~/.keras/datasets)"
print(f"MNIST from {source}")
print(f"x_train {x_train.shape} {x_train.dtype}, y_train {y_train.shape}; x_test {x_test.shape}, y_test {y_test.shape}")
print(f"pixels from {x_train.min()} to {x_train.max()}; labels {sorted(np.unique(y_train).tolist())}")
digits, counts = np.unique(y_train, return_counts=True)
print("training images per digit: " + ", ".join(f"{d}: {c:,}" for d, c in zip(digits, counts, strict=True)))

# %%
figure, axes = plt.subplots(4, 10, figsize=(12, 5.4))
for index, axis in enumerate(axes.flat):
    axis.imshow(x_train[index], cmap="gray")
    axis.set_title(f"label {y_train[index]}", fontsize=9)
    axis.axis("off")
figure.suptitle("The first 40 training images and their labels")
plt.show()

# %% [markdown]
# **The shape the networks take.** A Keras layer takes a *batch*: many images at once, each with a channel axis
# (1 for grey, 3 for colour). So a batch of N grey images is an array of shape `(N, 28, 28, 1)`, not
# `(N, 28, 28)`. Add that axis once, here, and use this one shape everywhere: a model built for one shape fails
# with an error on the other. One image is a batch of one: `x_test[:1]`, not `x_test[0]`.

# %%
x_train, x_test = x_train[..., None], x_test[..., None]  # (N, 28, 28) → (N, 28, 28, 1): one grey channel
INPUT_SHAPE = x_train.shape[1:]
# As train_cnn.py does: the last 10% of the training images are held out to validate on after every epoch.
x_fit, y_fit, x_val, y_val = x_train[:54_000], y_train[:54_000], x_train[54_000:], y_train[54_000:]
print(f"every network here takes batches of shape (N, {', '.join(map(str, INPUT_SHAPE))}): x_train {x_train.shape}, "
      f"x_test {x_test.shape}; one image: x_test[:1] {x_test[:1].shape}")
print(f"{len(x_fit):,} images to train on, {len(x_val):,} to validate on, {len(x_test):,} to test on, "
      f"{np.mean(x_train > 0):.0%} of all pixels are ink (not 0)")

# %% [markdown]
# ## 2. A convolution by hand
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
section_started["2. convolution by hand"] = time.perf_counter()
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
# **Stride and padding.** With an input of n pixels, a kernel of k and a stride s, `valid` gives
# floor((n − k) / s) + 1 positions per side and `same` gives ceil(n / s). The cell computes every map by hand,
# then asks a real Keras `Conv2D` layer, given the same kernel as its weights, for the same maps.

# %%
strides, paddings = (1, 2, 3, 4), ("valid", "same")
conv_sizes, keras_sizes, conv_max_difference = {}, {}, 0.0
figure, axes = plt.subplots(2, 4, figsize=(13, 7))
for row, padding in enumerate(paddings):
    conv_sizes[padding], keras_sizes[padding] = {}, {}
    for col, stride in enumerate(strides):
        mine = convolve(digit, edge, stride, padding)
        conv = layers.Conv2D(1, 3, strides=stride, padding=padding, use_bias=False)
        conv.build((None, 28, 28, 1))
        conv.set_weights([edge[:, :, None, None]])  # kernel shape: (height, width, input channels, filters)
        theirs = np.asarray(conv(digit[None, :, :, None]))[0, :, :, 0]
        conv_sizes[padding][stride], keras_sizes[padding][stride] = list(mine.shape), list(theirs.shape)
        conv_max_difference = max(conv_max_difference, float(np.abs(mine - theirs).max()))
        shown = axes[row, col].imshow(mine, cmap="coolwarm", vmin=-4, vmax=4)  # ±4: the most a 0-1 image gives
        axes[row, col].set(title=f"stride {stride}, {padding}: {mine.shape[0]}×{mine.shape[1]}", xticks=[], yticks=[])
figure.suptitle("One 3×3 edge detector over a 28×28 digit, by hand: the map shrinks with the stride")
figure.colorbar(shown, ax=axes, shrink=0.6, label="response: red +, blue −, white 0")
plt.show()
print("valid padding: " + ", ".join(f"stride {s} → {h}×{w}" for s, (h, w) in conv_sizes["valid"].items()))
print("same padding:  " + ", ".join(f"stride {s} → {h}×{w}" for s, (h, w) in conv_sizes["same"].items()))
print(f"Keras' Conv2D gives the same sizes ({keras_sizes == conv_sizes}) and the same numbers: the largest "
      f"difference from the maps by hand is {conv_max_difference:.1e}, rounding in the last digits of float32. "
      f"A convolution is nothing but multiply, add, move by the stride.")

# %% [markdown]
# ## 3. Kernels are feature detectors
#
# A CNN is not given its kernels: it learns them. To see what it learns we need a trained CNN, so here are the
# project's two networks, copied layer for layer from `build_model()` in `train_cnn.py` and in `train_dense.py`
# (a test checks that they stay the same), trained with those scripts' default settings on the 54,000 training
# images. They take raw pixels 0–255 and scale them to 0–1 themselves (`Rescaling`).

# %% [markdown]
# **Keras in a few words** (what the code below uses):
#
# - **Building a network.** `keras.Input(shape=(28, 28, 1))` stands for the images that will come in. A layer is
#   made in two calls: `layers.Conv2D(32, 5)` *creates* the layer (its settings), and the second call `(x)` *applies*
#   it to the output `x` of the layer before: `x = layers.Conv2D(32, 5)(x)`. `keras.Model(inputs, outputs)` turns
#   that chain, from the input to the last output, into one network you can train and call.
# - **The layers.** `Conv2D(32, 5)` slides 32 *filters* (filter is Keras' word for a kernel) of 5×5 over its input
#   (step 2), each giving one feature map. `ReLU` keeps positive numbers and sets negative ones to 0 (more in step 5).
#   `MaxPooling2D(2)` keeps the largest number of each 2×2 window (step 6). `Flatten` lays the maps out as one long
#   row. `Dropout` silences some numbers while training (step 7). `Dense(n)` has n *units*: each unit computes a
#   weighted sum of *every* input plus a bias, so a Dense layer has one weight per (input, unit) pair.
# - **Softmax and probabilities.** The last layer, `Dense(10, activation="softmax")`, turns its ten sums into ten
#   positive numbers that add up to 1: the network's probability for each digit. Its answer is the largest one.
# - **Loss and cross-entropy.** Training makes the *loss* small: here cross-entropy, minus the log of the
#   probability given to the right digit (0 when it is sure and right, large when it is sure and wrong). The labels
#   can be given as integers 0–9 (`sparse_categorical_crossentropy`, used here) or *one-hot*: ten numbers, all 0
#   except a 1 at the right digit (`categorical_crossentropy`, used by the scripts); both give the same loss.
# - **Training.** `compile(optimizer, loss, metrics)` says how to train. The optimizer is the rule that nudges the
#   weights against the gradient (step 5); the *learning rate* sets the size of the nudges. *Adam* is a common
#   optimizer that adapts the step for each weight; here its learning rate warms up, then cools down. `fit(x, y)`
#   trains and returns the loss and accuracy per epoch; `predict(x)` returns the probabilities;
#   `evaluate(x, y)` returns `[loss, accuracy]` on the images given, so `evaluate(...)[1]` is the accuracy.
# - **Training or not.** Some layers (`Dropout`, the augmentation of step 8) act only while training. Calling a
#   model yourself, `model(x, training=False)` asks for its answering behaviour, as `predict` and `evaluate` do.

# %%
section_started["3. kernels are feature detectors"] = time.perf_counter()


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
    x = layers.Conv2D(64, 3, name="conv2")(x)  # 64 kernels of 3×3 over those 32 maps → 10×10×64
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
    keras.utils.set_random_seed(1)
    networks[name] = build()
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
# **The first layer's kernels.** Each of the CNN's 32 first-layer kernels is a 5×5 grid of learned weights:
# drawn as a tiny image (bright: a positive weight, grey: 0, dark: a negative one). Look at them: which ones look
# like a stroke, or a change from dark to bright, at some angle, and which look like nothing in particular? The
# same kernel is slid over the whole image, so its map lights up wherever its pattern is.

# %%
kernels = np.asarray(cnn.get_layer("conv1").kernel)[:, :, 0, :]  # (5, 5, 1 channel, 32 filters) → (5, 5, 32)
limit = np.abs(kernels).max()
figure, axes = plt.subplots(4, 8, figsize=(9, 5))
for index, axis in enumerate(axes.flat):
    axis.imshow(kernels[:, :, index], cmap="gray", vmin=-limit, vmax=limit)
    axis.axis("off")
figure.suptitle(f"The {kernels.shape[2]} learned kernels of conv1, {kernels.shape[0]}×{kernels.shape[1]} each")
plt.show()
both_signs = int(((kernels.max(axis=(0, 1)) > limit / 4) & (kernels.min(axis=(0, 1)) < -limit / 4)).sum())
print(f"{kernels.shape[2]} kernels of {kernels.shape[0]}×{kernels.shape[1]} = {kernels[:, :, 0].size} weights each, "
      f"from {kernels.min():.2f} to {kernels.max():.2f}; {both_signs} of the {kernels.shape[2]} hold both strong "
      f"positive and strong negative weights (beyond ±{limit / 4:.2f}, a quarter of the largest).")

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
figure.suptitle("Test image 0 after each layer of the CNN (input on the left, first 8 maps of each layer)")
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
# **What each network gets wrong.** A confusion matrix counts, for every true digit (row), how often each digit
# was predicted (column): the diagonal is right, everything else a mistake. The colours are on a log scale so
# that the rare mistakes show.

# %%
confusion = {}
for name, guesses in predicted.items():
    confusion[name] = np.zeros((10, 10), dtype=int)
    np.add.at(confusion[name], (y_test, guesses), 1)  # one count per (true, predicted) pair
errors = {name: int(matrix.sum() - np.trace(matrix)) for name, matrix in confusion.items()}
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
    axes[block * 2, 0].text(-0.5, 0, name.upper(), transform=axes[block * 2, 0].transAxes, rotation=90,
                            fontsize=11, ha="right", va="center")
figure.suptitle("Test digits each network gets wrong: true → predicted (its confidence)")
plt.show()
print(f"Errors on {len(y_test):,} test digits: CNN {errors['cnn']}, dense network {errors['dense']}. Most common "
      f"mix-up: CNN {worst['cnn'][0]}→{worst['cnn'][1]} ({worst['cnn'][2]}×), dense {worst['dense'][0]}→"
      f"{worst['dense'][1]} ({worst['dense'][2]}×); many of the digits above are hard to read for people too.")

# %% [markdown]
# ## 4. Parameter sharing
#
# A `Conv2D` layer's weights are its kernels, whatever the size of the image: each kernel is used at every
# position (*shared*). A `Dense` layer has one weight for every pair of input and output. So compare a `Conv2D`
# with 32 kernels of 3×3 on a 28×28 image with a `Dense` layer that gives as many outputs (26×26×32). On a colour
# (RGB) image a 3×3 kernel spans the three channels: it is 3×3×3. And pooling, by shrinking the maps, shrinks
# the layer that comes after it.

# %%
section_started["4. parameter sharing"] = time.perf_counter()
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
# ## 5. ReLU against sigmoid and tanh
#
# Training follows the *gradient*: how much the loss changes with each weight. It is computed from the output
# back to the input, layer by layer, multiplying by each layer's slope on the way. Sigmoid's slope is at most
# 0.25 and tanh's at most 1, and both are near 0 wherever the unit is saturated; ReLU's is exactly 1 for every
# positive input. Ten layers deep, the gradient that reaches the first layer *vanishes* with sigmoid. The cell
# measures it in a deep, narrow dense network (10 hidden layers of 64 units), then trains each version the same
# short way.

# %%
section_started["5. ReLU, sigmoid, tanh"] = time.perf_counter()


def deep_dense(activation: str, depth: int = 10, width: int = 64) -> keras.Model:
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Flatten()(layers.Rescaling(1 / 255)(inputs))
    for index in range(depth):
        x = layers.Dense(width, activation=activation, name=f"hidden{index + 1}")(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name=f"deep_{activation}")


def gradient_norms(model, images, labels) -> list:
    """The size (L2 norm) of the loss's gradient for each hidden layer's weights, the first layer first."""
    kernels_ = [layer.kernel for layer in model.layers if layer.name.startswith("hidden")]
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(labels, model(images.astype("float32"), training=True))
        loss = tf.reduce_mean(loss)
    return [float(tf.norm(gradient)) for gradient in tape.gradient(loss, kernels_)]


ACTIVATION_IMAGES, ACTIVATION_EPOCHS = 10_000, 5
gradients, gradients_trained, activation_accuracy = {}, {}, {}
for activation in ("sigmoid", "tanh", "relu"):
    keras.utils.set_random_seed(1)
    model = deep_dense(activation)
    gradients[activation] = gradient_norms(model, x_fit[:256], y_fit[:256])
    history, _ = train(model, x_fit[:ACTIVATION_IMAGES], y_fit[:ACTIVATION_IMAGES], epochs=ACTIVATION_EPOCHS,
                       batch_size=128, learning_rate=1e-3, validation=(x_val, y_val))
    gradients_trained[activation] = gradient_norms(model, x_fit[:256], y_fit[:256])
    activation_accuracy[activation] = history["val_accuracy"]

figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.4))
for activation, norms in gradients.items():
    hidden = range(1, len(norms) + 1)
    left.semilogy(hidden, norms, marker="o", label=activation)
    middle.semilogy(hidden, gradients_trained[activation], marker="o", label=activation)
    right.plot(range(1, ACTIVATION_EPOCHS + 1), np.array(activation_accuracy[activation]) * 100, marker="o",
               label=activation)
left.set(title="Gradient per layer, before training", xlabel="hidden layer (1: next to the input)",
         ylabel="size of the weights' gradient (log scale)")
middle.set(title=f"... after {ACTIVATION_EPOCHS} epochs", xlabel="hidden layer",
           ylabel="size of the weights' gradient (log scale)")
right.set(title=f"Validation accuracy, {ACTIVATION_IMAGES:,} training images", xlabel="epoch", ylabel="%")
for axis in (left, middle, right):
    axis.grid(alpha=0.3, which="both")
    axis.legend()
plt.show()
first_to_last = {name: norms[0] / norms[-1] for name, norms in gradients.items()}
print(f"Before training, the gradient reaching the first hidden layer is {first_to_last['sigmoid']:.1e} times the "
      f"last layer's with sigmoid, {first_to_last['tanh']:.2f} times with tanh and {first_to_last['relu']:.2f} "
      f"times with ReLU: {gradients['relu'][0] / gradients['sigmoid'][0]:,.0f}× more reaches ReLU's first layer "
      "than sigmoid's.")
final = {name: values[-1] for name, values in activation_accuracy.items()}
CHANCE = 0.1  # ten digits: guessing, or always answering the same digit, is right about one time in ten
print(f"After the same {ACTIVATION_EPOCHS} epochs: sigmoid {final['sigmoid']:.1%}, tanh {final['tanh']:.1%}, ReLU "
      f"{final['relu']:.1%} validation accuracy: "
      + ("where the gradient vanishes, the first layers barely learn and the network lags."
         if final["relu"] > final["sigmoid"] else "here sigmoid kept up all the same.")
      + (f" Sigmoid's {final['sigmoid']:.1%} is chance level (one digit in ten): in {ACTIVATION_EPOCHS} epochs it "
         "learned nothing." if final["sigmoid"] < CHANCE * 1.5 else "")
      + (f" On this short run tanh ({final['tanh']:.1%}) ends ahead of ReLU ({final['relu']:.1%}): "
         f"{ACTIVATION_EPOCHS} epochs on {ACTIVATION_IMAGES:,} images do not settle which of the two is better; "
         "ReLU is the usual choice because it is cheap and does not saturate for positive inputs."
         if final["tanh"] > final["relu"] else
         f" ReLU ends ahead of tanh by {(final['relu'] - final['tanh']) * 100:.1f} points."))

# %% [markdown]
# ## 6. Max-pooling
#
# A 2×2 max-pooling layer cuts each map into 2×2 windows and keeps the largest value of each: a quarter of the
# numbers, the strongest responses, in a map half as wide: whether a stroke is in the window, not exactly where.
# A pool that is too large throws away *where* things are: the experiment below trains the same
# small network (one `Conv2D` of 32 kernels of 5×5, a pool, then the output layer) with pools from 2×2 to 24×24,
# where each 24×24 map shrinks to one number.

# %%
section_started["6. max-pooling"] = time.perf_counter()
window = np.array([[1, 3, 2, 0], [4, 2, 1, 1], [0, 1, 5, 6], [2, 2, 7, 1]], dtype="float32")
pooled = np.asarray(layers.MaxPooling2D(2)(window[None, :, :, None]))[0, :, :, 0]
print(f"a 4×4 map:\n{window}\nafter MaxPooling2D(2):\n{pooled}")
stroke_map = maps["relu1"]  # the first ReLU's 24×24 maps of test image 0, from step 3
pool_sizes = (2, 4, 8, 24)
figure, axes = plt.subplots(1, len(pool_sizes) + 1, figsize=(14, 3.2))
axes[0].imshow(stroke_map[:, :, 0], cmap="viridis")
axes[0].set_title(f"relu1 map 0, {stroke_map.shape[0]}×{stroke_map.shape[1]}")
for axis, size in zip(axes[1:], pool_sizes, strict=True):
    shrunk = np.asarray(layers.MaxPooling2D(size)(stroke_map[None]))[0]
    axis.imshow(shrunk[:, :, 0], cmap="viridis")
    axis.set_title(f"{size}×{size} pool → {shrunk.shape[0]}×{shrunk.shape[1]}")
for axis in axes:
    axis.set(xticks=[], yticks=[])
plt.show()
pool_kept = {size: int(np.asarray(layers.MaxPooling2D(size)(stroke_map[None])).size) for size in pool_sizes}

POOL_IMAGES, POOL_EPOCHS = 5_000, 3
pool_accuracy, pool_parameters = {}, {}
for size in pool_sizes:
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.ReLU()(layers.Conv2D(32, 5)(layers.Rescaling(1 / 255)(inputs)))  # 24×24×32
    x = layers.Flatten()(layers.MaxPooling2D(size)(x))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    train(model, x_fit[:POOL_IMAGES], y_fit[:POOL_IMAGES], epochs=POOL_EPOCHS, batch_size=128, learning_rate=3e-3)
    pool_accuracy[size] = float(model.evaluate(x_test, y_test, batch_size=2048, verbose=0)[1])
    pool_parameters[size] = model.count_params()
print(f"A 2×2 pool keeps {pooled.size} of {window.size} values, the largest of each window; of the 24×24×32 = "
      f"{stroke_map.size:,} numbers of relu1 it keeps {pool_kept[2]:,}, a 24×24 pool {pool_kept[24]}.")
print("Test accuracy after the same training (" + f"{POOL_IMAGES:,} images, {POOL_EPOCHS} epochs): "
      + ", ".join(f"{s}×{s} pool {pool_accuracy[s]:.1%} ({pool_parameters[s]:,} parameters)" for s in pool_sizes)
      + f". Too large a pool costs {(pool_accuracy[2] - pool_accuracy[24]) * 100:.1f} points: it keeps that a "
      "stroke is there, and loses where.")

# %% [markdown]
# ## 7. Dropout
#
# While training, a `Dropout(rate)` layer drops each of its inputs (sets it to 0) independently with probability
# `rate`, a new random draw at every call, so how many are dropped varies from call to call (about `rate` of them
# on average); it scales the others up by 1 / (1 − rate) so that their sum stays about the same on average. The network
# cannot rely on any single unit, so it memorises its training images less. When it answers (`training=False`,
# what `predict()` and `evaluate()` use) dropout does nothing. `train_dense.py` puts `Dropout(0.5)` after each
# of its two hidden layers of 512 units; the CNN `Dropout(0.25)` before its output.

# %%
section_started["7. dropout"] = time.perf_counter()
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
# **The overfitting gap.** Train the dense network on few images for many epochs, once without dropout
# and once with `train_dense.py`'s 0.5, and follow the loss on the training images and on images it never trains
# on (the validation images). Watch whether the training loss keeps falling while the validation loss stops
# falling or climbs back: then the network memorises its training images. The curves' training loss is averaged
# over each epoch *with dropout on*, which makes it look worse than the trained network is; so the gap is measured
# after training, with `evaluate()` (dropout off) on the same training images and on the validation images: the
# validation loss minus the training loss measures the overfitting.

# %%
DROPOUT_IMAGES, DROPOUT_EPOCHS = 2_000, 40
dropout_histories, dropout_losses = {}, {}
for rate in (0.0, 0.5):
    keras.utils.set_random_seed(1)
    model = build_dense(dropout=rate)
    dropout_histories[rate], _ = train(model, x_fit[:DROPOUT_IMAGES], y_fit[:DROPOUT_IMAGES],
                                       epochs=DROPOUT_EPOCHS, batch_size=64, learning_rate=1e-3,
                                       validation=(x_val, y_val))
    dropout_losses[rate] = {  # after training, dropout off for both: evaluate() returns [loss, accuracy]
        "training": float(model.evaluate(x_fit[:DROPOUT_IMAGES], y_fit[:DROPOUT_IMAGES], batch_size=2048,
                                         verbose=0)[0]),
        "validation": float(model.evaluate(x_val, y_val, batch_size=2048, verbose=0)[0]),
    }
figure, axes = plt.subplots(1, 2, figsize=(13, 4.4), sharey=True)
for axis, (rate, history) in zip(axes, dropout_histories.items(), strict=True):
    axis.plot(range(1, DROPOUT_EPOCHS + 1), history["loss"], label="training loss (dropout on, epoch mean)")
    axis.plot(range(1, DROPOUT_EPOCHS + 1), history["val_loss"], label="validation loss")
    axis.set(title=f"dense network, dropout {rate}: validation accuracy {history['val_accuracy'][-1]:.1%}",
             xlabel="epoch", ylabel="cross-entropy (log scale)", yscale="log")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
plt.show()
gap = {rate: losses["validation"] - losses["training"] for rate, losses in dropout_losses.items()}
rise = {rate: h["val_loss"][-1] - min(h["val_loss"]) for rate, h in dropout_histories.items()}
lowest = {rate: int(np.argmin(h["val_loss"])) + 1 for rate, h in dropout_histories.items()}
print(f"After training on {DROPOUT_IMAGES:,} images, with dropout off for both: without dropout the training loss "
      f"is {dropout_losses[0.0]['training']:.4f} and the validation loss {dropout_losses[0.0]['validation']:.3f}, "
      f"a gap of {gap[0.0]:.3f}; with dropout 0.5, {dropout_losses[0.5]['training']:.4f} and "
      f"{dropout_losses[0.5]['validation']:.3f}, a gap of {gap[0.5]:.3f}: dropout "
      f"{'narrows' if gap[0.5] < gap[0.0] else 'does not narrow'} the overfitting gap here.")
print("; ".join(
    f"{'Without' if rate == 0 else 'with'} dropout the validation loss was lowest at epoch {lowest[rate]}"
    + (f" and climbed {rise[rate]:.3f} back from there by epoch {DROPOUT_EPOCHS}: memorising" if rise[rate] > 0.01
       else " and stayed about there") for rate in (0.0, 0.5))
    + f". Validation accuracy: {dropout_histories[0.0]['val_accuracy'][-1]:.1%} without, "
    f"{dropout_histories[0.5]['val_accuracy'][-1]:.1%} with.")

# %% [markdown]
# ## 8. Augmentation
#
# More data helps most when there is little of it, and new views of the same digits are almost free: turn each
# a little, zoom a little, move it a little, differently in every step. In Keras 3 these are preprocessing layers
# (there is no `ImageDataGenerator` any more) that work only while training, so they can sit inside the model.
# `augmentation()`, defined in step 3 next to the networks that use it, holds the same layers as the training
# scripts' (`--augment`):

# %%
section_started["8. augmentation"] = time.perf_counter()
keras.utils.set_random_seed(1)
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
# Now the CNN trains on a few hundred and on a few thousand images, once on the images as they are and once with
# the augmentation layers in front (`build_cnn(augment=True)`), for about the same number of steps, and is tested
# on all 10,000 test images.

# %%
AUGMENT_SIZES, AUGMENT_STEPS = (500, 1_000, 4_000), 250  # training images; steps of 64 images for each
augment_accuracy = {"plain": {}, "augmented": {}}
for size in AUGMENT_SIZES:
    epochs = math.ceil(AUGMENT_STEPS / math.ceil(size / 64))
    for kind, results in augment_accuracy.items():
        keras.utils.set_random_seed(1)
        model = build_cnn(augment=kind == "augmented")
        train(model, x_fit[:size], y_fit[:size], epochs=epochs, batch_size=64, learning_rate=3e-3)
        results[size] = float(model.evaluate(x_test, y_test, batch_size=2048, verbose=0)[1])
figure, axis = plt.subplots(figsize=(7, 4.2))
for kind, results in augment_accuracy.items():
    axis.plot(list(results), np.array(list(results.values())) * 100, marker="o", label=kind)
axis.set(xscale="log", xticks=AUGMENT_SIZES, xticklabels=[f"{s:,}" for s in AUGMENT_SIZES], xlabel="training images",
         ylabel="test accuracy (%)", title="The CNN with and without augmentation")
axis.grid(alpha=0.3, which="both")
axis.legend()
plt.show()
print("Test accuracy, plain → augmented: " + ", ".join(
    f"{size:,} images {augment_accuracy['plain'][size]:.1%} → {augment_accuracy['augmented'][size]:.1%}"
    for size in AUGMENT_SIZES) + ". The gain is "
    + ", ".join(f"{(augment_accuracy['augmented'][s] - augment_accuracy['plain'][s]) * 100:+.1f} points with {s:,}"
                for s in AUGMENT_SIZES) + ": new views of the same digits stand in for more digits.")

# %% [markdown]
# ## 9. The comparison: a CNN against a dense network
#
# The two networks of step 3, each trained on all 54,000 training images as its script trains it, side by side on
# the 10,000 test images: accuracy, errors, parameters, time. Then two experiments on what the CNN's lead comes
# from: digits *shifted* a few pixels (a convolution's maps move along with the digit, but both networks end in
# `Dense` layers whose weights are tied to positions: the cell measures how much that costs each),
# and *shuffled* pixels: the same fixed permutation of the 784 pixels for every image, which keeps every pixel's
# value and destroys the layout. A dense network does not know the layout in the first place.

# %%
section_started["9. CNN against dense"] = time.perf_counter()
rows, speed = {}, {}
for name, model in networks.items():
    model.predict(x_test[:2048], batch_size=2048, verbose=0)  # a warm-up: the first call builds the function
    started = time.perf_counter()
    model.predict(x_test, batch_size=2048, verbose=0)
    speed[name] = len(x_test) / (time.perf_counter() - started)  # images per second
    rows[name] = {"test accuracy": f"{accuracy[name]:.2%}", "errors / 10,000": f"{errors[name]}",
                  "parameters": f"{model.count_params():,}",
                  "weights in float32": f"{model.count_params() * 4 / 1024:,.0f} KiB",
                  "training time": f"{training_seconds[name]:.1f} s ({SETTINGS[name]['epochs']} epochs)",
                  "per epoch": f"{training_seconds[name] / SETTINGS[name]['epochs']:.1f} s",
                  "inference": f"{speed[name]:,.0f} images/s"}
print(f"{'':<20}{'CNN':>24}{'DENSE':>24}")
for key in rows["cnn"]:
    print(f"{key:<20}{rows['cnn'][key]:>24}{rows['dense'][key]:>24}")

figure, axes = plt.subplots(1, 2, figsize=(13, 4.2))
for name, history in histories.items():
    axes[0].plot(range(1, len(history["val_accuracy"]) + 1), np.array(history["val_accuracy"]) * 100,
                 marker="o", label=name.upper())
lowest_accuracy = min(min(history["val_accuracy"]) for history in histories.values()) * 100
axes[0].set(title="Validation accuracy per epoch", xlabel="epoch", ylabel="%",
            ylim=(math.floor(lowest_accuracy) - 0.5, 100))
axes[0].legend()
axes[0].grid(alpha=0.3)
bars = axes[1].bar(["CNN", "Dense"], [errors["cnn"], errors["dense"]], color=["C0", "C1"])
axes[1].bar_label(bars, [f"{errors[n]} errors, {networks[n].count_params():,} parameters" for n in networks])
axes[1].set(title="Errors on the 10,000 test images")
plt.show()
lead = accuracy["cnn"] - accuracy["dense"]
per_epoch = {name: training_seconds[name] / SETTINGS[name]["epochs"] for name in networks}
print(f"The CNN is {'ahead' if lead > 0 else 'behind'} by {abs(lead) * 100:.2f} points ({errors['cnn']} errors "
      f"against {errors['dense']}) with {dense.count_params() / cnn.count_params():.0f}× fewer parameters; it took "
      f"{training_seconds['cnn'] / training_seconds['dense']:.1f}× as long to train in all "
      f"({training_seconds['cnn']:.0f} s for {SETTINGS['cnn']['epochs']} epochs against "
      f"{training_seconds['dense']:.0f} s for "
      f"{SETTINGS['dense']['epochs']}), {per_epoch['cnn'] / per_epoch['dense']:.1f}× as long per epoch "
      f"({per_epoch['cnn']:.1f} s against {per_epoch['dense']:.1f} s), and it answers "
      f"{speed['cnn']:,.0f} images per second against the dense network's {speed['dense']:,.0f}"
      + (": it uses each of its few weights at every position of the image, which is more arithmetic."
         if speed["cnn"] < speed["dense"] else "."))

# %% [markdown]
# **Shifted digits and shuffled pixels.** First the trained networks get the test digits moved a few pixels
# right and down (black paper fills in, nothing wraps around, and ink pushed past the edge of the 28×28 frame is
# lost). Neither network saw shifted digits in training: MNIST centres every digit. A convolution's maps move with
# the digit, and max-pooling forgives a pixel or so; but the CNN's last layer, a `Dense` layer over the 5×5×64
# pooled maps, has one weight for each position in those maps, learned where the strokes of centred digits fall.
#
# Then both networks train again from scratch on a
# slice of the training images, once with the pixels in their places and once shuffled, the same way for both.

# %% tags=["docs/exp_spatial.png"]
shifts = list(range(7))  # pixels


def shift(images, pixels):
    """Move every image ``pixels`` right and down; black comes in at the top and on the left."""
    out = np.zeros_like(images)
    out[:, pixels:, pixels:] = images[:, : 28 - pixels, : 28 - pixels]
    return out


shifted_accuracy = {name: [float(model.evaluate(shift(x_test, s), y_test, batch_size=2048, verbose=0)[1])
                           for s in shifts] for name, model in networks.items()}
at_shift = {name: dict(zip(shifts, values, strict=True)) for name, values in shifted_accuracy.items()}
ink_lost = {s: 1 - float(shift(x_test, s).sum(dtype="float64") / x_test.sum(dtype="float64")) for s in shifts}

permutation = np.random.default_rng(1).permutation(28 * 28)


def scramble(images):
    """The same fixed permutation of the 784 pixels for every image: the values stay, the layout is gone."""
    return images.reshape(len(images), -1)[:, permutation].reshape(images.shape)


SHUFFLE_IMAGES, SHUFFLE_EPOCHS = 10_000, 4
retrained = {}
for name, build in (("cnn", build_cnn), ("dense", build_dense)):
    for order, transform in (("original", lambda images: images), ("shuffled", scramble)):
        keras.utils.set_random_seed(1)
        model = build()
        train(model, transform(x_fit[:SHUFFLE_IMAGES]), y_fit[:SHUFFLE_IMAGES], epochs=SHUFFLE_EPOCHS,
              batch_size=128, learning_rate=3e-3)
        retrained[name, order] = float(model.evaluate(transform(x_test), y_test, batch_size=2048, verbose=0)[1])

figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.6))
for name, values in shifted_accuracy.items():
    left.plot(shifts, np.array(values) * 100, marker="o", label=name.upper())
left.set(title="Trained networks on shifted test digits", xlabel="shift right and down (pixels)",
         ylabel="test accuracy (%)")
left.legend()
left.grid(alpha=0.3)
for offset, order in ((-0.2, "original"), (0.2, "shuffled")):
    values = [retrained[name, order] * 100 for name in ("cnn", "dense")]
    drawn = middle.bar(np.arange(2) + offset, values, width=0.4, label=f"{order} pixels")
    middle.bar_label(drawn, [f"{v:.1f}" for v in values], fontsize=9)
middle.set(xticks=[0, 1], xticklabels=["CNN", "Dense"], ylim=(min(retrained.values()) * 100 - 8, 100),
           ylabel="test accuracy (%)",
           title=f"Trained again on {SHUFFLE_IMAGES:,} images, {SHUFFLE_EPOCHS} epochs")
middle.legend(loc="lower right")
right.imshow(np.hstack([x_test[0, :, :, 0], scramble(x_test[:1])[0, :, :, 0]]), cmap="gray")
right.set(title="A digit, and the same pixels shuffled", xticks=[], yticks=[])
figure.tight_layout()
plt.show()
cnn_loss = retrained["cnn", "original"] - retrained["cnn", "shuffled"]
dense_loss = retrained["dense", "original"] - retrained["dense", "shuffled"]
small, large = shifts[len(shifts) // 2], shifts[-1]  # a middling shift and the largest
drop = {name: {s: at_shift[name][shifts[0]] - value for s, value in at_shift[name].items()} for name in networks}
print(f"Shifted by {small} pixels, the CNN keeps {at_shift['cnn'][small]:.1%} and the dense network "
      f"{at_shift['dense'][small]:.1%} (from {at_shift['cnn'][shifts[0]]:.1%} and "
      f"{at_shift['dense'][shifts[0]]:.1%}): "
      + ("the CNN degrades more slowly at small shifts, " + ", ".join(
          f"{s} px: CNN −{drop['cnn'][s] * 100:.1f}, dense −{drop['dense'][s] * 100:.1f} points"
          for s in shifts[1:] if s <= small) + "; its maps move with the digit and pooling absorbs a pixel or so."
         if all(drop["cnn"][s] < drop["dense"][s] for s in shifts[1:] if s <= small)
         else "the CNN does not degrade more slowly than the dense network here."))
print(f"By {large} pixels, the CNN is at {at_shift['cnn'][large]:.1%} and the dense network at "
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
# ## How long each step took

# %%
section_started["end"] = time.perf_counter()
names = list(section_started)
section_seconds = {name: section_started[after] - section_started[name] for name, after in zip(names[:-1], names[1:],
                                                                                                strict=True)}
total_seconds = section_started["end"] - section_started["1. MNIST"]
for name, seconds in section_seconds.items():
    print(f"{name:<36}{seconds:7.1f} s")
print(f"{'all of it':<36}{total_seconds:7.1f} s ({total_seconds / 60:.1f} minutes)")
