"""The one loop that turns a model's declared inputs into arrays: activation's zero-filled
sample inputs and ``modelcast acceptance make``'s seeded random ones both go through it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from runtime.errors import ModelCheckError
from runtime.model_check import model_inputs, sample_inputs


@dataclass(frozen=True)
class _Input:
    name: str
    type: str
    shape: list[Any]


class _Session:
    def __init__(self, *inputs: _Input) -> None:
        self._inputs = list(inputs)

    def get_inputs(self) -> list[_Input]:
        return self._inputs


SESSION = _Session(
    _Input("x", "tensor(float)", ["batch", 3, None]),
    _Input("ids", "tensor(int64)", [2, -1]),
)


def test_symbolic_dimensions_become_one_and_dtypes_follow_the_declared_type() -> None:
    seen: list[tuple[str, list[int], Any]] = []

    def fill(shape: list[int], dtype: Any) -> np.ndarray:
        seen.append((str(np.dtype(dtype)), shape, dtype))
        return np.full(shape, 7, dtype=dtype)

    feeds = model_inputs(SESSION, fill)
    assert [(d, s) for d, s, _ in seen] == [("float32", [1, 3, 1]), ("int64", [2, 1])]
    assert list(feeds) == ["x", "ids"]
    assert feeds["ids"].dtype == np.int64 and int(feeds["ids"][0, 0]) == 7


def test_sample_inputs_are_zeros() -> None:
    feeds = sample_inputs(SESSION)
    assert feeds["x"].shape == (1, 3, 1) and feeds["x"].dtype == np.float32
    assert not feeds["x"].any() and not feeds["ids"].any()


def test_an_unsupported_input_type_raises_the_callers_error() -> None:
    odd = _Session(_Input("s", "tensor(string)", [1]))
    with pytest.raises(ModelCheckError, match="'s' has unsupported type tensor\\(string\\)"):
        sample_inputs(odd)
    with pytest.raises(ValueError, match="unsupported type") as info:
        model_inputs(odd, lambda shape, dtype: np.zeros(shape), error=ValueError)
    assert type(info.value) is ValueError
