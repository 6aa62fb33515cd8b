"""The ``nowcast`` command line, above every other package (forecast, train, evaluate, serve, bench)."""
