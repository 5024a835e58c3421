"""`train --setting 2` written plainly in PyTorch (CPU), as a whole process to compare with.

    python benchmarks/torch_loop.py --data-dir DIR

The same work as cifarlin's setting 2: the default split (data_batch_1, data_batch_2, test_batch)
read and normalised by cifarlin's loader, W and b from N(0, 0.01^2), 40 epochs of mini-batch
gradient descent with batch 100 and eta 0.001, the cost and accuracy on the training and
validation sets after every epoch, and the test accuracy at the end. Prints one JSON line with its
phases' seconds and the test accuracy. Run it with a Python that has torch (2.13 CPU here).
"""

from __future__ import annotations

import argparse
import time

from common import report_torch

t_start = time.perf_counter()
import torch  # noqa: E402

t_torch = time.perf_counter()

from cifarlin.core import config  # noqa: E402
from cifarlin.data import cifar as data  # noqa: E402
from cifarlin.work.prepare import prepare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    p = prepare(data.find(args.data_dir), config.SplitSpec())
    t1 = time.perf_counter()
    X = {k: torch.from_numpy(v) for k, v in p.X.items()}
    Y = {k: torch.from_numpy(v) for k, v in p.y.items()}
    g = torch.Generator().manual_seed(0)
    W = (torch.randn(10, 3072, generator=g) * 0.01).requires_grad_()
    b = (torch.randn(10, generator=g) * 0.01).requires_grad_()
    lam, eta, batch, epochs = 0.0, 0.001, 100, 40

    def metrics(name: str) -> tuple[float, float]:
        with torch.no_grad():
            S = X[name] @ W.T + b
            loss = torch.nn.functional.cross_entropy(S.double(), Y[name])
            return float(loss + lam * (W.double() ** 2).sum()), float((S.argmax(1) == Y[name]).float().mean())

    n = len(p.y["train"])
    for _ in range(epochs):
        for j in range(0, n, batch):
            S = X["train"][j : j + batch] @ W.T + b
            J = torch.nn.functional.cross_entropy(S, Y["train"][j : j + batch]) + lam * (W**2).sum()
            gW, gb = torch.autograd.grad(J, (W, b))
            with torch.no_grad():
                W -= eta * gW
                b -= eta * gb
        metrics("train"), metrics("val")
    acc = metrics("test")[1]
    t2 = time.perf_counter()
    report_torch(t_torch - t_start, t1 - t0, t2 - t1, acc)


if __name__ == "__main__":
    main()
