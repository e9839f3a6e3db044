"""imbjax: the class-imbalance study of Buda et al. (2018) in JAX, trained as populations.

Modules own one concept each (see README's architecture section):
`datasets` sources, `imbalance` class-count profiles, `sampling` index plans,
`thresholding` prior correction, `metrics` scores, `losses` the loss family,
`models` the paper's networks and the model registry, `ops` the convolution
lowerings, `optim` SGD and schedules, `engine` the vmapped population trainer,
`posthoc` post-hoc decisions, `study` the study driver, `store` results, `figures` the
paper's plots, `stats` paired tests and ranks, `conclusions` the paper's claims as
checks, `report` the study report.
"""

__version__ = "0.1.0"
