"""ae_parity: the CLI, demo, benchmark and parity harness over ae_torch, ae_jax and ae_core."""

__version__ = "0.1.0"
