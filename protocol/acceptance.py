"""Acceptance vectors: inputs, expected outputs and a tolerance, signed inside the manifest.

Each edge runs them on its own hardware and runtime after the model loads and before it is
activated; the largest absolute difference between an output and its expected value must not
exceed ``tolerance``. A miss is an activation failure, reported with that largest error.

Tensors travel as ``{"dtype": str, "shape": [int], "data": bin}`` (raw little-endian, C order);
only plain numeric dtypes are accepted, and the whole block is capped
(``Limits.max_acceptance_bytes``) so a manifest stays well inside one MQTT message. Decoding checks
every shape against its data length; turning the bytes into arrays is the edge's business
(``protocol`` stays free of numpy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import MalformedMessage, OversizedMessage
from .limits import DEFAULT_LIMITS, Limits

#: dtype name -> item size in bytes
DTYPES = {
    "float16": 2,
    "float32": 4,
    "float64": 8,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "bool": 1,
}


@dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "data": self.data}

    @classmethod
    def from_dict(cls, raw: object, what: str, limits: Limits = DEFAULT_LIMITS) -> Tensor:
        if not isinstance(raw, dict):
            raise MalformedMessage(f"{what}: a tensor must be a map")
        dtype, shape, data = raw.get("dtype"), raw.get("shape"), raw.get("data")
        if dtype not in DTYPES:
            raise MalformedMessage(f"{what}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        if (
            not isinstance(shape, list)
            or len(shape) > limits.max_tensor_rank
            or any(type(d) is not int or d < 0 for d in shape)
        ):
            raise MalformedMessage(
                f"{what}: shape must be a list of at most {limits.max_tensor_rank} sizes"
            )
        if not isinstance(data, bytes):
            raise MalformedMessage(f"{what}: data must be bytes")
        if math.prod(shape) * DTYPES[str(dtype)] != len(data):
            raise MalformedMessage(
                f"{what}: {len(data)} bytes do not make a {dtype} tensor of shape {shape}"
            )
        return cls(str(dtype), tuple(shape), data)


@dataclass(frozen=True)
class Case:
    inputs: Mapping[str, Tensor]
    outputs: Mapping[str, Tensor]


@dataclass(frozen=True)
class Acceptance:
    cases: tuple[Case, ...]
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "tolerance": self.tolerance,
            "cases": [
                {
                    "inputs": {k: t.to_dict() for k, t in sorted(c.inputs.items())},
                    "outputs": {k: t.to_dict() for k, t in sorted(c.outputs.items())},
                }
                for c in self.cases
            ],
        }

    @property
    def size(self) -> int:
        return sum(
            len(t.data) for c in self.cases for t in (*c.inputs.values(), *c.outputs.values())
        )

    def check(self, limits: Limits = DEFAULT_LIMITS) -> None:
        what = "acceptance vectors"
        most = limits.max_acceptance_cases
        if not self.cases or len(self.cases) > most:
            raise MalformedMessage(f"{what}: 1 to {most} cases, got {len(self.cases)}")
        if not math.isfinite(self.tolerance) or self.tolerance < 0:
            raise MalformedMessage(f"{what}: tolerance must be a finite number >= 0")
        if self.size > limits.max_acceptance_bytes:
            raise OversizedMessage(
                f"{what}: {self.size} bytes of tensors exceeds {limits.max_acceptance_bytes}"
            )
        for case in self.cases:
            if not case.inputs or not case.outputs:
                raise MalformedMessage(f"{what}: every case needs inputs and expected outputs")
            most = limits.max_acceptance_tensors
            if len(case.inputs) > most or len(case.outputs) > most:
                raise OversizedMessage(f"{what}: at most {most} tensors a side")

    @classmethod
    def from_dict(cls, raw: object, limits: Limits = DEFAULT_LIMITS) -> Acceptance:
        what = "acceptance vectors"
        if not isinstance(raw, dict) or not isinstance(raw.get("cases"), list):
            raise MalformedMessage(f"{what}: must be a map with a list of 'cases'")
        tolerance = raw.get("tolerance")
        if type(tolerance) not in (int, float):
            raise MalformedMessage(f"{what}: tolerance must be a number")
        if len(raw["cases"]) > limits.max_acceptance_cases:
            raise OversizedMessage(f"{what}: more than {limits.max_acceptance_cases} cases")
        cases = []
        for i, c in enumerate(raw["cases"]):
            if not isinstance(c, dict):
                raise MalformedMessage(f"{what}: case {i} must be a map")
            sides = []
            for side in ("inputs", "outputs"):
                tensors = c.get(side)
                if not isinstance(tensors, dict) or len(tensors) > limits.max_acceptance_tensors:
                    raise MalformedMessage(f"{what}: case {i} {side} must be a small map")
                sides.append(
                    {
                        str(k): Tensor.from_dict(t, f"{what} case {i} {side} {k!r}", limits)
                        for k, t in tensors.items()
                    }
                )
            cases.append(Case(sides[0], sides[1]))
        acceptance = cls(tuple(cases), float(tolerance))  # type: ignore[arg-type]
        acceptance.check(limits)
        return acceptance
