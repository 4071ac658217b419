"""ebmref: a compact, verified reference implementation of MCMC-based training of energy-based
models, following Gagnon & Lajoie, "Clarifying MCMC-based training of modern EBMs"."""

__version__ = "0.1.0"
