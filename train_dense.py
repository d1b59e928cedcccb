"""Train a plain dense (fully connected) network on MNIST and save it to models/dense.keras.

It sees each image as 784 unrelated numbers: every hidden unit connects to every pixel, and nothing tells it
that neighbouring pixels belong together, or that a "7" two pixels to the left is still a "7". The CNN in
train_cnn.py builds that knowledge in; compare the two with compare.py. Read top to bottom: flags → data →
the network → compile → fit → test → save.

    python train_dense.py                # ≥ 98.3% test accuracy
    python train_dense.py --help         # every flag

Measured times, per kind of CPU: README "Results".
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mnistlab import cli, data, training
from mnistlab.models import INPUT_SHAPE, NUM_CLASSES, augmentation

import keras
from keras import layers

# Defaults of the flags (measured: docs/). A batch of 1024 with a higher peak learning rate trains as well as
# smaller ones in less time, over 14 short epochs.
DEFAULTS = {"epochs": 14, "batch_size": 1024, "learning_rate": 5e-3}


def build_model(augment: bool = False, units: Sequence[int] = (512, 512), dropout: float = 0.5) -> keras.Model:
    """Flatten → [Dense(512) → ReLU → Dropout 0.5] × 2 → Dense softmax: 670k parameters."""
    inputs = keras.Input(shape=INPUT_SHAPE, name="pixels")  # raw pixels 0–255
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)  # 0–1, inside the model like the CNN's
    if augment:
        x = augmentation()(x)
    x = layers.Flatten(name="flatten")(x)  # 28×28 → 784 numbers: the picture's layout is gone from here on
    for index, width in enumerate(units, start=1):
        # Every one of the 512 units weighs every input: 784 × 512 weights in the first layer alone.
        x = layers.Dense(width, activation="relu", name=f"dense{index}")(x)
        x = layers.Dropout(dropout, name=f"dropout{index}")(x)  # silence half the units in each training step
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="dense")


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.parse_training_flags(__doc__, argv, defaults=DEFAULTS)
    run = training.Run("dense", args)  # checks folders and --resume, seeds, picks precision and devices

    # 1. Data: the same digits as the CNN's, with the same validation slice held out.
    dataset = data.load(args.data).first(args.train_size)
    (x_train, y_train), (x_val, y_val) = data.split_validation(dataset, args.val_split)

    # 2. The network, compiled exactly like the CNN, so that only the architecture differs between the two.
    with run.strategy.scope():
        model = build_model(args.augment)
        optimizer = keras.optimizers.Adam(training.one_cycle(args.learning_rate, run.total_steps(len(x_train))))
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.summary()

    # 3. Train.
    with run.strategy.scope():
        model.fit(
            run.training_batches(x_train, y_train),
            validation_data=run.validation_batches(x_val, y_val),
            shuffle=False,  # the tf.data pipeline reshuffles every epoch itself
            epochs=args.epochs,
            callbacks=run.callbacks(model, dataset),
            verbose=run.verbose,
        )

    # 4. Test once, on the 10,000 test images.
    test_loss, test_accuracy = training.evaluate(model, dataset.x_test, dataset.y_test)

    # 5. Save the model and its records.
    run.save(model, dataset, train_images=len(x_train), test_loss=test_loss, test_accuracy=test_accuracy)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
