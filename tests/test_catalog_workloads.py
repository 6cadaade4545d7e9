"""The named workloads are what their traces hold: means, lengths' coefficients of variation, rates and longest
prompts recomputed from the files in ../shared/data (SOURCES.md names them)."""

import numpy as np
import pytest

from hwmodels import catalog
from moeplan import api

TRACES = {
    "mooncake-conversation": ("mooncake/conversation_trace.jsonl", {}),
    "mooncake-synthetic": ("mooncake/synthetic_trace.jsonl", {}),
    "azure-conversation-2023": ("azure-2023/AzureLLMInferenceTrace_conv.csv", {}),
    "sharegpt": ("lengths/sharegpt_8k_filtered_stats_llama2_tokenizer.csv", {"rate_per_s": 1.0}),
    "arxiv-summarization": ("lengths/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv", {"rate_per_s": 1.0}),
}


@pytest.mark.parametrize("name", sorted(TRACES))
def test_a_named_workload_restates_its_trace(shared_data, name):
    path, options = TRACES[name]
    trace = api.read_trace(shared_data / "requests" / path, **options)
    w = catalog.workloads()[name]
    for field, lengths in (("input", trace.input_tokens), ("output", trace.output_tokens)):
        lengths = np.asarray(lengths, dtype=float)
        assert w[f"{field}_tokens"] == round(lengths.mean()), field
        assert w[f"{field}_cv"] == pytest.approx(lengths.std() / lengths.mean(), abs=0.006), field
    if "max_input_tokens" in w:
        assert w["max_input_tokens"] == trace.input_tokens.max()
    if "requests_per_s" in w:
        assert w["requests_per_s"] == pytest.approx(len(trace) / trace.duration_s, abs=0.006)


def test_every_named_workload_states_its_spread():
    for name, w in catalog.workloads().items():
        assert 0 <= w["input_cv"] <= 10 and 0 <= w["output_cv"] <= 10, name
