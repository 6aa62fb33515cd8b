"""Radar data: reading event files, coarsening them to model cells, and cutting windows.

Used by training (``training.data``), verification and the service alike; imports neither.
"""
