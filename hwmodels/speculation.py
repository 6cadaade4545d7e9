"""Speculative decoding with a model's own multi-token-prediction (MTP) modules: each decode step verifies the
tokens the MTP modules drafted, so a sequence advances by more than one token per step, at the price of a step
that verifies 1 + draft tokens per sequence and runs the MTP modules (hwmodels.step prices both).

A model with MTP modules in its config.json (DeepSeek-V3/R1/V3.2/V4 `num_nextn_predict_layers`, GLM-5, Qwen3.5,
MiniMax) drafts as many tokens as it has modules; the share accepted is the spec's (`serving.speculative`) or
DeepSeek's published figure for its own MTP module.
"""

from __future__ import annotations

from dataclasses import dataclass

# DeepSeek-V3 Technical Report (arXiv 2412.19437, section 5.4.3): "the acceptance rate of the second token
# prediction ranges between 85% and 90%"; the low end, so the plan does not count on the best case
DEFAULT_ACCEPTANCE = 0.85
DEFAULT_SOURCE = "DeepSeek-V3 Technical Report 5.4.3: 85-90% of second tokens accepted (the low end)"
MAX_DRAFT_TOKENS = 8


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding with the model's MTP module: `draft_tokens` drafted per sequence per step, each
    accepted with probability `acceptance` when the ones before it were (the chain stops at the first miss)."""

    draft_tokens: int
    acceptance: float
    source: str = ""

    def __post_init__(self):
        if self.draft_tokens < 1 or not 0.0 <= self.acceptance <= 1.0:
            raise ValueError(f"invalid speculation {self}")

    @property
    def tokens_per_step(self) -> float:
        """Expected tokens a sequence advances per verify step."""
        return sum(self.acceptance ** i for i in range(self.draft_tokens + 1))

    def describe(self) -> str:
        return (f"MTP speculative decoding: {self.draft_tokens} draft token(s) per step, each accepted with "
                f"{self.acceptance:.0%}: {self.tokens_per_step:.2f} tokens per step ({self.source})")


def model_speculation(mtp_layers: int, draft_tokens: int | None = None, acceptance: float | None = None,
                      source: str = "spec serving.speculative") -> Speculation | None:
    """The speculation a model with `mtp_layers` MTP modules offers the planner: the spec's draft tokens and
    acceptance where given (draft_tokens 0: none), else one draft token per module at DEFAULT_ACCEPTANCE. None for
    a model without MTP modules."""
    if mtp_layers == 0 or draft_tokens == 0:
        return None
    given = draft_tokens is not None or acceptance is not None
    return Speculation(draft_tokens or mtp_layers, DEFAULT_ACCEPTANCE if acceptance is None else acceptance,
                       source if given else DEFAULT_SOURCE)
