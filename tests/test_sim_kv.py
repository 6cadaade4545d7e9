"""sim.kv.RankKV: a rank's KV in tokens, with a hybrid model's fixed per-sequence state (Kimi K3's linear-attention
state, gpt-oss's sliding windows) charged once per resident sequence."""

from sim.config import KVPolicy
from sim.kv import RankKV


def test_each_resident_sequence_holds_its_state_until_it_leaves():
    kv = RankKV(capacity=1000, state_tokens=100)
    assert kv.has_room(KVPolicy.QUEUE, 800, 500) and not kv.has_room(KVPolicy.QUEUE, 901, 500)
    kv.reserve(final_tokens=600, tokens=500)
    assert (kv.used(), kv.committed) == (600, 700)  # 500 of KV + the state; 600 final + the state reserved
    assert not kv.has_room(KVPolicy.QUEUE, 250, 100)  # 700 + 250 + 100 > 1000
    k = kv.start_decoding(500)
    kv.decode_step()
    assert kv.used() == 601
    kv.stop_decoding(500, k, 600)
    assert (kv.used(), kv.committed, kv.resident) == (0, 0, 0)
    kv.reserve(final_tokens=300, tokens=200)
    kv.release(200, 300)
    assert (kv.used(), kv.committed, kv.resident) == (0, 0, 0)


def test_without_state_nothing_changes():
    kv = RankKV(capacity=1000)
    kv.reserve(final_tokens=600, tokens=500)
    assert (kv.used(), kv.committed) == (500, 600)
    assert kv.has_room(KVPolicy.QUEUE, 400, 10)

