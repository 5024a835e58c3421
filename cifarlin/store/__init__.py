"""Files that are written whole or not at all and read without trusting them.

Atomic writes (a temporary file, then ``os.replace``), HDF5 read first in a child process of one
single-threaded helper process (the one place the package forks), the arithmetic a file was
computed with, and the formats of a run's files: model, checkpoint and history, and of a feature map.
"""
