"""``python -m benchmarks NAME [--threads N] [--tiny]``: run one benchmark and print its table."""
from __future__ import annotations

import argparse
import importlib

import torch

BENCHMARKS = {
    "train": "16 noisy-SGD runs trained together vs one model at a time",
    "unlearn": "one forget group's retraining and trajectories together vs one at a time",
    "pergrad": "per-example gradient norms vs a plain minibatch gradient",
    "privacy": "per-instance RDP tables vs direct dp_accounting calls",
    "evaluation": "evaluating many models stacked (vmap) vs one by one",
    "resnet": "the cifar10 configuration's ResNet step, its runs stacked vs one by one",
    "plan": "punl plan's predicted stage times vs the stages run afterwards",
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS),
                        help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (the pipeline's default is 1)")
    parser.add_argument("--tiny", action="store_true",
                        help="a few repetitions on small inputs (checks that it runs)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (train, unlearn, pergrad, resnet)")
    parser.add_argument("--config", default="digits-quick", help="plan: the configuration")
    parser.add_argument("--measured", default=None, metavar="FOLDER",
                        help="plan: compare with the finished run in FOLDER instead of running it")
    parser.add_argument("--record", default=None, metavar="CSV", help="plan: add the rows to CSV")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"device: {args.device}")
    extra = dict(config=args.config, measured=args.measured, record_to=args.record) \
        if args.name == "plan" else {}
    importlib.import_module(f"benchmarks.{args.name}").main(tiny=args.tiny, device=args.device,
                                                            **extra)


if __name__ == "__main__":
    main()
