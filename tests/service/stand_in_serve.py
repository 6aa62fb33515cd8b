"""A test-only ``nowcast serve``: ``python -m tests.service.stand_in_serve PORT REDIS_PORT DATA_DIR``.

The real launcher (``service.serve.serve``: Redis, the API, supervision) with the stand-in
worker (``tests.service.stand_in_worker``) and a short restart back-off.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from service.serve import serve
from service.supervise import Supervisor

if __name__ == "__main__":
    port, redis_port, data_dir = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(serve(host="127.0.0.1", port=port, redis_port=redis_port, data_dir=data_dir, workers=1,
                   worker_command=[sys.executable, "-m", "tests.service.stand_in_worker"],
                   supervisor=Supervisor(initial_backoff=0.5, max_backoff=4.0, stable_seconds=10.0)))
