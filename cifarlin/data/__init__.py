"""CIFAR-10 itself: downloading, verifying and unpacking the archive safely, unpickling without
``pickle.load``, and reading the batches of either official version into arrays."""
