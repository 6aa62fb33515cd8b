"""Verification: scores (deterministic and ensemble), pysteps baselines, ``nowcast evaluate``,
its report and plots, and the speed benchmark. Imports ``model`` and ``radar``, never ``training``."""
