"""The streamed JSON result says exactly what ``render.result_json`` says, in strict JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service import render, result_stream
from tests.service.test_render import result  # noqa: F401 (the fixture)


def strict(text: bytes):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("encoding", ["base64", "list"])
@pytest.mark.parametrize("members", [False, True])
def test_streamed_json_equals_the_rendered_body(result, encoding, members):  # noqa: F811
    streamed = strict(b"".join(result_stream.json_chunks("j1", result, members=members, encoding=encoding)))
    assert streamed == json.loads(json.dumps(render.result_json("j1", result, members=members,
                                                                encoding=encoding)))


def test_lists_close_their_brackets_for_any_rank_and_chunking(monkeypatch):
    monkeypatch.setattr(result_stream, "LIST_CHUNK_BYTES", 10)  # a chunk per row
    rng = np.random.default_rng(1)
    for shape in [(3,), (2, 3), (2, 3, 4), (2, 1, 3, 2), (1, 1, 1, 1)]:
        values = rng.random(shape).astype(np.float32)
        values.flat[0] = np.nan
        values.flat[-1] = np.inf  # never in a result, but strict JSON has no token for it either
        text = b"".join(result_stream._lists(values))
        expected = values.astype(object)
        expected[~np.isfinite(values)] = None
        assert strict(text) == expected.tolist()


def test_base64_chunks_concatenate_to_the_whole(monkeypatch):
    monkeypatch.setattr(result_stream, "CHUNK_VALUES", 3)
    values = np.arange(20, dtype=np.float32).reshape(4, 5)
    body = strict(b"".join(result_stream._base64(values)))
    np.testing.assert_array_equal(
        np.frombuffer(__import__("base64").b64decode(body["data"]), "<f4").reshape(body["shape"]), values)
