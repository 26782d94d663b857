"""GenerationConfig validation and the sampler: filtering, greedy, seeded draws."""
import pytest
import torch

from bone.errors import ConfigError
from bone.generation import GenerationConfig, Sampler, filter_logits


@pytest.mark.parametrize("kw, match", [
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"temperature": -1}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"temperature": 1, "top_p": 0}, "top_p"), ({"temperature": 1, "top_p": 1.5}, "top_p"),
    ({"temperature": 1, "top_k": -1}, "top_k"), ({"temperature": 1, "seed": "x"}, "seed"),
    ({"top_p": 0.9}, "only apply when sampling"), ({"seed": 3}, "only apply when sampling"),
])
def test_bad_values_are_refused_with_the_field(kw, match):
    with pytest.raises(ConfigError, match=match):
        GenerationConfig(**kw)


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]
    assert torch.equal(filter_logits(logits, top_k=0), logits)


def test_top_p_keeps_the_fewest_tokens_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.1, 0.3, 0.05]])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.75)).tolist() == [[False, True, False, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.85)).tolist() == [[False, True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).sum() == 1  # the top token always stays


def test_greedy_is_argmax_and_sampling_follows_the_seed():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(Sampler(GenerationConfig())(logits), logits.argmax(-1))

    def draws(seed):
        sampler = Sampler(GenerationConfig(temperature=1.0, seed=seed))
        return torch.stack([sampler(logits) for _ in range(20)])

    assert torch.equal(draws(1), draws(1))
    assert not torch.equal(draws(1), draws(2))
    unseeded = Sampler(GenerationConfig(temperature=1.0))
    assert isinstance(unseeded.seed, int)  # the seed drawn is there to report and reuse
    again = Sampler(GenerationConfig(temperature=1.0, seed=unseeded.seed))
    assert torch.equal(unseeded(logits), again(logits))


def test_sampling_stays_inside_the_filtered_set():
    logits = torch.randn(8, 40, generator=torch.Generator().manual_seed(1))
    sampler = Sampler(GenerationConfig(temperature=2.0, top_k=3, seed=0))
    top3 = logits.topk(3, -1).indices
    for _ in range(30):
        tokens = sampler(logits)
        assert (top3 == tokens[:, None]).any(-1).all()
