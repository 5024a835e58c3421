"""cifarlin: a linear softmax classifier for CIFAR-10, trained, checked and explained."""

__version__ = "0.1.0"
