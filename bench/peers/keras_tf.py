"""Peer: Keras 3 on TensorFlow (CPU), the report's own framework, same model and recipe.

Run by bench/cpu_speed.py with the interpreter of a separate virtual environment
(`python3 -m venv .venv-keras && .venv-keras/bin/pip install tensorflow-cpu keras`), on the same
arrays as cnnlab. Images are scaled to [0, 1] up front as the reports do; model.fit with Adam
(lr 1e-3), batch 32, shuffling. The layer lists mirror cnnlab's zoo entries (checked by parameter count).

Prints one JSON line: train_time_s (the epochs only), epoch_times_s, test_accuracy, params."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def build(name: str, input_shape: tuple[int, int, int]):
    import keras
    from keras import layers

    if name == "keras/mnist/model1":
        stack = [layers.Conv2D(32, 3, activation="relu"), layers.Flatten(), layers.Dense(10, activation="softmax")]
    elif name == "torch/cifar10/praisnet":  # PyTorch's Conv2d/Linear carry no activation unless listed
        stack = [layers.Conv2D(64, 5), layers.Conv2D(64, 5), layers.MaxPooling2D(2), layers.BatchNormalization(),
                 layers.Conv2D(128, 5), layers.Conv2D(128, 5), layers.MaxPooling2D(2), layers.BatchNormalization(),
                 layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")]
    else:
        raise SystemExit(f"no Keras version of {name}")
    return keras.Sequential([keras.Input(input_shape), *stack])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import keras

    keras.utils.set_random_seed(args.seed)
    arrays = np.load(args.data)
    to_keras = lambda images: images.transpose(0, 2, 3, 1).astype("float32") / 255.0  # NCHW uint8 -> NHWC float
    x_train, x_test = to_keras(arrays["train_images"]), to_keras(arrays["test_images"])
    model = build(args.model, x_train.shape[1:])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    epoch_times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.started)

    model.fit(x_train, arrays["train_labels"], batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
              verbose=0, callbacks=[Timer()])
    _, accuracy = model.evaluate(x_test, arrays["test_labels"], batch_size=1000, verbose=0)
    print(json.dumps({"train_time_s": sum(epoch_times), "epoch_times_s": epoch_times, "test_accuracy": float(accuracy),
                      "params": int(model.count_params())}))


if __name__ == "__main__":
    main()
