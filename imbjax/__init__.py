"""imbjax: the class-imbalance study of Buda et al. (2018) in JAX, trained as populations.

Modules own one concept each (see README's architecture section):
`datasets` sources, `imbalance` class-count profiles, `sampling` index plans,
`thresholding` prior correction, `metrics` scores, `losses` the loss family,
`models` the paper's networks and the model registry, `ops` the convolution
lowerings, `optim` SGD and schedules, `population` the vmapped
trainer, `train` the study driver, `store` results, `figures` the paper's plots.
"""

__version__ = "0.1.0"
