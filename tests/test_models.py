"""Models: attention policy equivariance and size-independence, hidden resets, learning a rule;
the legacy GRU's fixed input size is a clear error."""

import pytest
import torch

from vidur_ppo.models import make_model

ATTN = {"name": "attn_gru", "embed_dim": 32, "heads": 4, "attn_layers": 1, "gru_hidden": 32}


def _model(**kw):
    torch.manual_seed(0)
    return make_model({**ATTN, **kw}, 4, 5)


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("gated", [False, True])
def test_permuting_replicas_permutes_the_action_probabilities(share, gated):
    m = _model(share_encoder=share, gated=gated).eval()
    x = torch.randn(6, 3, 4, 5)
    starts = torch.zeros(6, 3)
    starts[0] = 1
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        la, va, _ = m(x, m.initial_state(3), starts)
        lb, vb, _ = m(x[:, :, perm], m.initial_state(3), starts)
    torch.testing.assert_close(lb, la[:, :, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vb, va, atol=1e-5, rtol=1e-5)  # the value is permutation-invariant


def test_same_weights_run_on_2_4_8_replicas():
    m = _model().eval()
    for r in (2, 4, 8):
        logits, value, _ = m(torch.rand(3, 2, r, 5), m.initial_state(2), torch.ones(3, 2))
        assert logits.shape == (3, 2, r) and value.shape == (3, 2)


def test_legacy_gru_refuses_another_replica_count_with_a_clear_message():
    g = make_model({"name": "gru", "actor_hidden": 16, "actor_layers": 1, "critic_hidden": 16, "critic_layers": 1}, 4, 5)
    with pytest.raises(ValueError, match="built for 4 replicas x 5 features.*attn_gru"):
        g(torch.rand(1, 1, 8, 5), g.initial_state(1), torch.ones(1, 1))


@pytest.mark.parametrize("spec", [ATTN, {"name": "gru", "actor_hidden": 16, "actor_layers": 2, "critic_hidden": 16,
                                         "critic_layers": 2}])
def test_hidden_state_resets_at_episode_starts(spec):
    torch.manual_seed(0)
    m = make_model(spec, 4, 5).eval()
    x = torch.randn(5, 1, 4, 5)
    with torch.no_grad():
        _, _, h = m(x[:3], m.initial_state(1), torch.tensor([[1.0], [0.0], [0.0]]))
        # an episode starts at step 3: whatever came before must not matter
        a, _, _ = m(x[3:], h, torch.tensor([[1.0], [0.0]]))
        b, _, _ = m(x[3:], m.initial_state(1), torch.tensor([[1.0], [0.0]]))
        c, _, _ = m(x[3:], h, torch.tensor([[0.0], [0.0]]))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_attention_weights_are_returned_for_logging():
    m = _model().eval()
    m.record_attention = True
    with torch.no_grad():
        m(torch.rand(1, 2, 4, 5), m.initial_state(2), torch.ones(1, 2))
    w = m.attention_weights()
    assert w.shape == (2, 4, 4) and torch.allclose(w.sum(-1), torch.ones(2, 4), atol=1e-5)


def test_overfits_shortest_queue_rule():
    """A tiny supervised check: the attention model learns to pick the replica with the shortest queue."""
    torch.manual_seed(1)
    m = make_model({**ATTN, "embed_dim": 32}, 4, 5)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)

    def batch(n=256, r=4):
        x = torch.rand(1, n, r, 5, generator=gen)
        return x, x[0, :, :, 0].argmin(-1)  # feature 0 = queue length

    for _ in range(300):
        x, y = batch()
        logits, _, _ = m(x, m.initial_state(x.shape[1]), torch.ones(1, x.shape[1]), with_value=False)
        loss = torch.nn.functional.cross_entropy(logits[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for r in (4, 8):  # and it generalises to a cluster size it never saw
            x, y = batch(1000, r)
            acc = (m(x, m.initial_state(1000), torch.ones(1, 1000), with_value=False)[0][0].argmax(-1) == y).float().mean()
            assert acc > (0.9 if r == 4 else 0.75), (r, float(acc))
