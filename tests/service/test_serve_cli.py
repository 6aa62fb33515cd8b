"""``nowcast serve`` pieces (a real redis-server) and the ``nowcast submit`` client."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import redis as redis_lib

from cli.main import build_parser
from service import cli, serve

EVENT = Path(__file__).resolve().parents[2].parent / "shared" / "radar" / "events" / "fmi_20160928.nc"
MODEL = {"t_in": 5, "t_out": 20, "step_minutes": [5], "size": 128, "size_multiple": 64}


def test_serve_starts_redis_without_eviction_and_with_an_append_only_file(tmp_path):
    port = serve.free_port()
    process = serve.start_redis(port=port, data_dir=tmp_path / "redis")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        serve.wait_until(lambda: serve.redis_answers(url), what="redis-server", timeout=20, process=process)
        client = redis_lib.Redis.from_url(url)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.close()
    finally:
        serve.stop([("redis", process)])
    assert process.returncode is not None
    assert not serve.redis_answers(url, timeout=0.2)


def test_wait_until_reports_a_child_that_exits():
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited with code 3"):
        serve.wait_until(lambda: False, what="child", timeout=10, process=process)


def test_serve_and_submit_are_nowcast_subcommands():
    args = build_parser().parse_args(["submit", "radar.nc", "--members", "4", "--format", "json"])
    assert args.func is cli.submit and args.members == 4 and args.url == cli.DEFAULT_URL
    assert cli.request_options(args) == {"members": 4, "seed": 0}  # the rest: the model's defaults
    args = build_parser().parse_args(["submit", "radar.nc", "--advection", "bulk", "--matching", "none"])
    chosen = cli.request_options(args)
    assert chosen["advection"] == "bulk" and chosen["matching"] == "none"
    args = build_parser().parse_args(["serve", "--port", "8123"])
    assert args.port == 8123 and args.host == "127.0.0.1"


@pytest.mark.skipif(not EVENT.is_file(), reason=f"{EVENT} not found")
def test_submit_cuts_the_last_frames_of_an_event_to_the_model_grid():
    body = cli.cut_input(EVENT, MODEL, coarsen=4)
    assert body["frames"]["shape"] == [5, 128, 128] and body["unit"] == "dBZ"
    assert body["timestamps"][-1] == "2016-09-28T18:00:00Z"  # the event's last frame
    assert body["grid_spacing_km"] == pytest.approx(4.0, rel=0.01)
    values = np.frombuffer(__import__("base64").b64decode(body["frames"]["data"]), "<f4")
    assert np.nanmax(values) > 20  # the wettest window holds rain


def test_wait_for_job_polls_with_the_etag_until_done():
    seen = []
    states = iter(["queued", "running", "running", "done"])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("if-none-match"))
        state = next(states)
        if seen[-1] == f'"{state}"':
            return httpx.Response(304, headers={"ETag": f'"{state}"'})
        return httpx.Response(200, headers={"ETag": f'"{state}"'},
                              json={"id": "j1", "status": state, "queue_position": None})

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://service") as client:
        status = cli.wait_for_job(client, "http://service/v1/nowcasts/j1", timeout=10, poll=0)
    assert status["status"] == "done"
    assert seen == [None, '"queued"', '"running"', '"running"']


def test_wait_for_job_raises_with_the_error_of_a_failed_job():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "j1", "status": "failed", "error": "boom"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client, \
            pytest.raises(cli.SubmitError, match="boom"):
        cli.wait_for_job(client, "http://service/v1/nowcasts/j1", timeout=10, poll=0)


def test_serve_never_logs_the_redis_password(caplog, monkeypatch, tmp_path):
    monkeypatch.setenv("NOWCAST_REDIS__URL", f"redis://:hunter2-pass@127.0.0.1:{serve.free_port()}/0")
    with caplog.at_level("INFO"):
        assert serve.serve(host="127.0.0.1", port=serve.free_port(), redis_port=0, data_dir=tmp_path,
                           workers=1) == 2  # that Redis does not answer
    assert "redis://:***@127.0.0.1" in caplog.text and "hunter2" not in caplog.text
