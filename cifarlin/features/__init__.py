"""Coates and Ng's single-layer features: the k-means feature map, its extraction from a data set
(on threads here or on a Dask cluster) and the cache of extracted features."""
