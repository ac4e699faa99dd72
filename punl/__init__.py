"""punl: per-instance privacy for machine unlearning."""
__version__ = "0.1.0"
