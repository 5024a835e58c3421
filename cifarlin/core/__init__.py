"""The mathematics, in pure NumPy: no files, no processes.

The linear model ``s = W x + b`` and its five losses with their gradients, numerical gradients,
learning-rate schedules, augmentation, the training loop (mini-batch gradient descent, readable top
to bottom, its speed machinery in a module of its own), the training history, normalisation, the
exact ridge solution and the k-means feature map. Every other layer builds on this one; it imports
none of them.
"""
