"""Prometheus metrics of the worker (the API keeps its own in ``service.routes_health``).

Each :class:`WorkerMetrics` owns a registry, so several workers in one process (tests) do not
collide in prometheus_client's global registry; ``python -m service.worker`` serves it with
``prometheus_client.start_http_server(port, registry=metrics.registry)``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Sampling a CPU ensemble takes seconds to minutes; a GPU batch well under a second.
SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


class WorkerMetrics:
    """Queue depth, batch sizes, sampling time, end-to-end latency, failures, model version."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.queue_depth = Gauge("nowcast_queue_depth", "jobs waiting or running",
                                 registry=self.registry)
        self.batch_size = Histogram("nowcast_batch_jobs", "jobs sampled in one forecast call",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=self.registry)
        self.sampling_seconds = Histogram("nowcast_sampling_seconds", "duration of one forecast call",
                                          buckets=SECONDS_BUCKETS, registry=self.registry)
        self.latency_seconds = Histogram("nowcast_job_latency_seconds",
                                         "from submission to result stored", buckets=SECONDS_BUCKETS,
                                         registry=self.registry)
        self.jobs_done = Counter("nowcast_jobs_done", "jobs finished with a result",
                                 registry=self.registry)
        self.failures = Counter("nowcast_job_failures", "failed job attempts",
                                ["outcome"], registry=self.registry)  # retry | dead_letter | lease_lost
        self.model = Info("nowcast_model", "served checkpoint", registry=self.registry)
