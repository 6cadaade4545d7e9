"""The policies of serving as enums: the phase a step runs, and the role a pool of instances serves."""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    DECODE = "decode"  # one new token (plus drafts) per running sequence
    PREFILL = "prefill"  # prompt tokens


class Role(enum.StrEnum):
    DECODE = "decode"
    PREFILL = "prefill"
    AGGREGATED = "aggregated"  # prefill and decode on the same devices
