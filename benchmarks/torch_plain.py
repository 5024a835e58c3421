"""`train --setting 2` as a PyTorch user writes it: the idiomatic CPU loop, as a whole process.

    python benchmarks/torch_plain.py --data-dir DIR

The textbook PyTorch version of the same work: the three batch files unpickled and normalised
with NumPy (x / 255, the training set's per-feature mean and std), ``nn.Linear(3072, 10)`` with
W and b from N(0, 0.01^2), ``DataLoader(TensorDataset(...), batch_size=100)``,
``nn.CrossEntropyLoss``, ``optim.SGD(lr=0.001)``; after every epoch the cost and accuracy on the
training and validation sets, and the test accuracy at the end. No tuning beyond what the
tutorials show. Prints one JSON line with its phases' seconds and the test accuracy.
(benchmarks/torch_loop.py is the hand-tuned version: cifarlin's loader, slices instead of a
DataLoader, autograd.grad.)
"""

from __future__ import annotations

import argparse
import pickle
import time
from pathlib import Path

from common import report_torch

t_start = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

t_torch = time.perf_counter()


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")  # the local stand-in is trusted here: a benchmark
    return d[b"data"].astype(np.float64) / 255, np.array(d[b"labels"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    args = ap.parse_args()
    root = Path(args.data_dir)
    root = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    t0 = time.perf_counter()
    Xtr, ytr = load(root / "data_batch_1")
    Xva, yva = load(root / "data_batch_2")
    Xte, yte = load(root / "test_batch")
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
    data = {
        name: (torch.tensor((X - mean) / std, dtype=torch.float32), torch.tensor(y))
        for name, X, y in (("train", Xtr, ytr), ("val", Xva, yva), ("test", Xte, yte))
    }
    t1 = time.perf_counter()
    torch.manual_seed(0)
    model = nn.Linear(3072, 10)
    nn.init.normal_(model.weight, std=0.01)
    nn.init.normal_(model.bias, std=0.01)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    loader = DataLoader(TensorDataset(*data["train"]), batch_size=100, shuffle=False)

    def evaluate(name: str) -> tuple[float, float]:
        X, y = data[name]
        with torch.no_grad():
            S = model(X)
            return loss_fn(S, y).item(), (S.argmax(1) == y).float().mean().item()

    history = []
    for _ in range(40):
        for xb, yb in loader:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        history.append((evaluate("train"), evaluate("val")))
    acc = evaluate("test")[1]
    t2 = time.perf_counter()
    report_torch(t_torch - t_start, t1 - t0, t2 - t1, acc)


if __name__ == "__main__":
    main()
