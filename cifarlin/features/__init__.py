"""Coates and Ng's single-layer features on a data set: a run's data as features (and a feature map
learnt from its training rows), their extraction ahead of training (on threads here or on a Dask
cluster) and the cache of extracted features. The map's mathematics is :mod:`cifarlin.core.kmeans`,
its file :mod:`cifarlin.store.featuremap`."""
