"""An online model of what an engine step costs on this machine, fitted as it runs.

    seconds ~ fixed + per_prefill_token * prefill tokens + per_decode_seq * decode sequences
              + per_cached_token * KV tokens the decodes attend to

fitted by recursive least squares with forgetting (recent steps weigh more, so the model
follows a machine whose speed drifts). Every cost is physical, so predictions use the
coefficients clamped at 0 (a noisy early fit can give one a negative sign). The scheduler
asks it how many prefill tokens of throughput work fit next to latency-critical decodes
within a step-time target.
"""
from __future__ import annotations

from typing import NamedTuple

# Feature scales: keep the fitted coefficients of similar magnitude (numerically stable).
_SCALE = (1.0, 1 / 256, 1 / 16, 1 / 16384)
_N = len(_SCALE)


class StepFeatures(NamedTuple):
    num_prefill_tokens: int
    num_decode_seqs: int
    num_cached_tokens: int  # sum of the decodes' KV lengths

    def vector(self) -> list[float]:
        raw = (1.0, self.num_prefill_tokens, self.num_decode_seqs, self.num_cached_tokens)
        return [v * s for v, s in zip(raw, _SCALE)]


class StepCostModel:
    """Plain Python floats: it runs on the event loop every step, where torch ops have no
    place (and a 4 x 4 update costs less than their dispatch)."""

    MIN_OBSERVATIONS = 32  # before this many steps, `is_warm` is False and callers use a fallback

    def __init__(self, forgetting: float = 0.995) -> None:
        self.forgetting = forgetting
        self.theta = [0.0] * _N  # seconds per scaled feature
        # inverse information: a weak prior
        self.p = [[1e3 if i == j else 0.0 for j in range(_N)] for i in range(_N)]
        self.num_observations = 0

    @property
    def is_warm(self) -> bool:
        return self.num_observations >= self.MIN_OBSERVATIONS

    def observe(self, features: StepFeatures, seconds: float) -> None:
        x = features.vector()
        px = [sum(p_ij * x_j for p_ij, x_j in zip(row, x)) for row in self.p]
        gain = [v / (self.forgetting + _dot(x, px)) for v in px]
        error = seconds - _dot(x, self.theta)
        self.theta = [t + g * error for t, g in zip(self.theta, gain)]
        self.p = [[(self.p[i][j] - gain[i] * px[j]) / self.forgetting for j in range(_N)] for i in range(_N)]
        self.num_observations += 1

    def predict(self, features: StepFeatures) -> float:
        return _dot(features.vector(), [max(0.0, t) for t in self.theta])

    @property
    def per_prefill_token(self) -> float:
        return max(0.0, self.theta[1] * _SCALE[1])

    def prefill_tokens_within(self, base: StepFeatures, target_s: float) -> int:
        """Most prefill tokens to add to `base` while the step stays within `target_s`
        (0 if base alone reaches it, or if the fit gives prefill no positive cost)."""
        slack = target_s - self.predict(base)
        per_token = self.per_prefill_token
        if slack <= 0 or per_token <= 0:
            return 0
        return int(slack / per_token)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))
