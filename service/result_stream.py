"""The JSON body of a result, written piece by piece (``GET /v1/nowcasts/{id}/result``).

The body is the one :func:`service.render.result_json` describes (``schemas.NowcastResult``),
but it is produced as a stream of byte chunks: the API holds one chunk of encoded text at a
time instead of the whole body several times over (the base64 strings, the dict, the JSON text,
its bytes). It is strict JSON: no-data cells are ``null`` in ``encoding=list`` arrays and NaN
inside the float32 bytes of ``encoding=base64`` arrays; no ``NaN`` or ``Infinity`` token is ever
written.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from service.render import metadata

CHUNK_VALUES = 3 * 2**16  # float32 values per base64 chunk (a multiple of 3: chunks concatenate)
LIST_CHUNK_BYTES = 2**20
ARRAYS = ("mean", "percentiles", "probability", "members")


def _base64(values: np.ndarray) -> Iterator[bytes]:
    flat = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    yield b'{"data":"'
    for start in range(0, flat.size, CHUNK_VALUES):
        yield base64.b64encode(flat[start:start + CHUNK_VALUES].tobytes())
    yield b'","shape":' + json.dumps(list(values.shape)).encode() + b',"dtype":"float32"}'


def _row(row: np.ndarray) -> str:
    cells = row.astype(object)
    cells[~np.isfinite(row)] = None
    return json.dumps(cells.tolist(), allow_nan=False, separators=(",", ":"))


def _lists(values: np.ndarray) -> Iterator[bytes]:
    """Nested lists of ``values`` (..., W), one text row per last axis, in ~1 MiB chunks."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 0:
        yield _row(values.reshape(1))[1:-1].encode()
        return
    if values.ndim == 1:
        yield _row(values).encode()
        return
    rows = values.reshape(-1, values.shape[-1])
    outer = values.shape[:-1]
    # The brackets that open and close between consecutive rows follow the row index' carries.
    parts: list[str] = ["[" * len(outer)]
    size = 0
    for i, row in enumerate(rows):
        if i:
            index, closes = i, 0
            for n in reversed(outer):
                if index % n:
                    break
                index //= n
                closes += 1
            parts.append("]" * closes + "," + "[" * closes)
        text = _row(row)
        parts.append(text)
        size += len(text)
        if size >= LIST_CHUNK_BYTES:
            yield "".join(parts).encode()
            parts, size = [], 0
    parts.append("]" * len(outer))
    yield "".join(parts).encode()


def json_chunks(job_id: str, result: dict[str, Any], *, members: bool, encoding: str) -> Iterator[bytes]:
    """The JSON body of ``result`` in chunks; ``members`` adds the members (then ``result`` must hold
    them), ``encoding`` is ``base64`` or ``list``.

    The metadata is encoded before the first chunk is returned, so that a value that is not
    valid JSON fails the request, not a response already under way.
    """
    if encoding not in ("base64", "list"):
        raise ValueError(f"unknown encoding {encoding!r}; valid encodings: ['base64', 'list']")
    # pydantic writes a non-finite float as null: strict JSON whatever the metadata holds
    head = ('{"id":' + json.dumps(job_id) + ',"metadata":' + metadata(result).model_dump_json()).encode()
    encode = _base64 if encoding == "base64" else _lists

    def chunks() -> Iterator[bytes]:
        yield head
        for name in ARRAYS:
            yield f',"{name}":'.encode()
            if name == "members" and not members:
                yield b"null"
            else:
                yield from encode(result[name])
        yield b"}"

    return chunks()
