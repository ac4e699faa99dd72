"""The names punl knows: datasets and model families (unlearning methods: :mod:`punl.methods`).

A leaf module without heavy imports, so that a configuration can be validated without loading
torch or any stage. The implementations live in :mod:`punl.data`, :mod:`punl.models` and
:mod:`punl.methods`, and tests check that each name here has one there.
"""
from __future__ import annotations

DATASETS = ("digits", "mnist5k", "mnist", "svhn", "cifar10", "synthetic")
MODELS = ("logreg", "mlp", "cnn", "resnet")
