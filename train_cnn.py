"""Train a convolutional neural network (CNN) on MNIST and save it to models/cnn.keras.

A CNN slides small learned kernels over the image: a stroke detector learned in one corner works everywhere
(parameter sharing), and pooling keeps the strongest responses while it shrinks the maps. Read this file top to
bottom: flags → data → the network → compile → fit → test → save. The plumbing (checked data, --resume,
records, atomic saves, tf.distribute) sits behind a few calls into mnistlab/.

    python train_cnn.py                  # the default CNN: ≥ 99.0% test accuracy in 5 epochs
    python train_cnn.py --preset best    # a deeper CNN, 30 epochs of augmented digits: ~99.6%
    python train_cnn.py --help           # every flag, with the chosen preset's defaults

Measured times, per kind of CPU: README "Results".
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mnistlab import cli, data, training
from mnistlab.models import INPUT_SHAPE, NUM_CLASSES, augmentation

import keras
from keras import layers

# Each preset sets the defaults of the flags it names; a flag on the command line wins (measured: docs/).
PRESETS = {
    "fast": {"epochs": 5, "batch_size": 384, "learning_rate": 6e-3, "augment": False, "val_split": 0.1},
    "best": {"epochs": 30, "batch_size": 256, "learning_rate": 3e-3, "augment": True, "val_split": 0.0},
}


def build_model(augment: bool = False) -> keras.Model:
    """The CNN: [Conv2D → ReLU → MaxPooling2D] × 2 → Flatten → Dropout → Dense softmax, 35k parameters."""
    inputs = keras.Input(shape=INPUT_SHAPE, name="pixels")  # raw pixels 0–255, 28×28×1
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)  # 0–1, inside the model: the saved file takes raw pixels
    if augment:
        x = augmentation()(x)  # random small rotations, zooms and shifts, only while training
    # 32 kernels of 5×5, each a stroke detector with 25 weights, slid over every position of the image.
    x = layers.Conv2D(32, 5, name="conv1")(x)  # → 24×24×32 feature maps: "where is each kind of stroke?"
    x = layers.ReLU(name="relu1")(x)  # keep the positive responses, zero the rest
    x = layers.MaxPooling2D(2, name="pool1")(x)  # → 12×12×32: the strongest response in each 2×2 window
    # 64 kernels of 3×3 over those 32 maps: combinations of strokes (corners, loops, crossings).
    x = layers.Conv2D(64, 3, name="conv2")(x)  # → 10×10×64
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)  # → 5×5×64
    x = layers.Flatten(name="flatten")(x)  # → 1,600 features
    x = layers.Dropout(0.25, name="dropout")(x)  # silence a random quarter of them in each training step
    # Ten class probabilities, in float32 even when the layers above compute in bfloat16 (a stable softmax).
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")


def build_best_model(augment: bool = True) -> keras.Model:
    """--preset best: two convolutions per block, a dense layer of 256, dropout after every block.

    The same idea, deeper and wider. No batch normalisation, on purpose: Keras 3's BatchNormalization is not
    a fused op and tripled the training step here (docs/performance.md); that time buys more epochs instead.
    """
    inputs = keras.Input(shape=INPUT_SHAPE, name="pixels")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    if augment:
        x = augmentation()(x)
    for block, filters in enumerate((32, 64), start=1):
        for conv in (1, 2):  # "same" padding keeps the map size, so two 3×3 convolutions see 5×5 of the input
            x = layers.Conv2D(filters, 3, padding="same", name=f"conv{block}_{conv}")(x)
            x = layers.ReLU(name=f"relu{block}_{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)  # 28 → 14 → 7
        x = layers.Dropout(0.25, name=f"dropout{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, name="dense")(x)
    x = layers.ReLU(name="dense_relu")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn_best")


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.parse_training_flags(__doc__, argv, presets=PRESETS)
    run = training.Run("cnn", args)  # checks folders and --resume, seeds, picks precision and devices

    # 1. Data: 28×28 grey images of handwritten digits, pixels 0–255, labels 0–9 (checked when loaded).
    dataset = data.load(args.data).first(args.train_size)
    (x_train, y_train), (x_val, y_val) = data.split_validation(dataset, args.val_split)

    # 2. The network, and how it learns: Adam with a one-cycle learning rate (warm up, then cosine decay to 0),
    #    minimising cross-entropy. tf.distribute's scope places the weights: one device unless --distribute.
    with run.strategy.scope():
        model = build_best_model(args.augment) if args.preset == "best" else build_model(args.augment)
        model.compile(
            optimizer=keras.optimizers.Adam(training.one_cycle(args.learning_rate, run.total_steps(len(x_train)))),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    model.summary()

    # 3. Train: Keras' fit loop, with a backup after every epoch (for --resume) and a stop if the loss is NaN.
    with run.strategy.scope():
        model.fit(
            run.training_batches(x_train, y_train),
            validation_data=run.validation_batches(x_val, y_val),  # None with --val-split 0
            shuffle=False,  # the tf.data pipeline reshuffles every epoch itself
            epochs=args.epochs,
            callbacks=run.callbacks(model, dataset),
            verbose=run.verbose,
        )

    # 4. Test, once, on the 10,000 test images that no step of training has seen.
    test_loss, test_accuracy = training.evaluate(model, dataset.x_test, dataset.y_test)

    # 5. Save the model and its records (atomically: a crash never leaves half a file).
    run.save(model, dataset, train_images=len(x_train), test_loss=test_loss, test_accuracy=test_accuracy)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
