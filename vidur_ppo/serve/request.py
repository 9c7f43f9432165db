"""How a request tells the router its size: keyword arguments of the engine deployment's call.

An ingress (or any caller holding a `DeploymentHandle` to the engine) calls
`handle.remote(prompt_tokens=..., predicted_output_tokens=..., ...)`; the router reads them from
`PendingRequest.kwargs` (or from a dict passed as the only positional argument, e.g. a parsed JSON body).
`predicted_output_tokens` is what a length predictor says (routing/length_predictor.py: routers are never
told true lengths); without it the router takes `max_tokens`, the client's cap. These are the two
`RequestColumn`s a policy reads (`prefix_key` stays 0: the Serve replicas report no prefix cache).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np

from vidur_ppo.sim.driver import request_columns

PROMPT_TOKENS = "prompt_tokens"
PREDICTED_OUTPUT_TOKENS = "predicted_output_tokens"
MAX_TOKENS = "max_tokens"


class MissingRequestSize(ValueError):
    """The request carries no prompt length or no output-length estimate: the router falls back."""


def request_fields(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """The mapping a request's sizes are read from: its kwargs, else a dict passed as the only argument."""
    if PROMPT_TOKENS in kwargs:
        return kwargs
    if len(args) == 1 and isinstance(args[0], Mapping):
        return args[0]
    return kwargs


def request_sizes(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Tuple[float, float]:
    """(prompt tokens, predicted output tokens) of a request; raises MissingRequestSize."""
    fields = request_fields(args, kwargs)
    prompt = fields.get(PROMPT_TOKENS)
    output: Optional[Any] = fields.get(PREDICTED_OUTPUT_TOKENS, fields.get(MAX_TOKENS))
    if prompt is None or output is None:
        raise MissingRequestSize(f"a request needs {PROMPT_TOKENS} and {PREDICTED_OUTPUT_TOKENS} (or {MAX_TOKENS})")
    return float(prompt), float(output)


def request_vector(prompt_tokens: float, predicted_output_tokens: float) -> np.ndarray:
    """The `RequestColumn`s of a request, laid out as the env's (`sim/driver.request_columns`)."""
    return request_columns(prompt_tokens, predicted_output_tokens)
