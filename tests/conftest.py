import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def tiny_config():
    """A configuration small enough to train in a second or two."""
    from punl.config import Config
    return Config(name="tiny", dataset="digits", n_train=300, model="mlp", width=16, runs=2,
                  epochs=5, batch_size=32, lr=0.1, sigma=1.0, clip=10.0, record_every=5,
                  label_noise=0.1, group_size=10, n_groups=3, unlearn_steps=20, n_checkpoints=4,
                  retrain_seeds=2, n_bootstrap=50, barrier_points=5)
