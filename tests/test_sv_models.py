"""The speaker-verification models behind ``model.factory``: ECAPA-TDNN and ResNet34.

Their parameter counts against the published ones, the shapes of ``forward`` and ``embed``,
and that an utterance's embedding does not depend on the padding of its batch.
"""

from __future__ import annotations

import pytest
import torch

from wds_pipeline.errors import ConfigError
from wds_pipeline.train.config import parse_config
from wds_pipeline.train.ecapa import ecapa_tdnn
from wds_pipeline.train.models import build_model
from wds_pipeline.train.resnet import resnet34

# Published parameter counts of the embedding networks (80 fbank bins, no classifier head):
# ECAPA-TDNN, Desplanques et al. 2020, Table 2; ResNet34-TSTP-emb256, WeSpeaker's VoxCeleb v2 results.
PUBLISHED = {"ecapa512": 6.2e6, "ecapa1024": 14.7e6, "resnet34": 6.63e6}
FACTORIES = {
    "ecapa512": lambda: ecapa_tdnn(1000, channels=512),
    "ecapa1024": lambda: ecapa_tdnn(1000, channels=1024),
    "resnet34": lambda: resnet34(1000),
}


def embedding_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("classifier."))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_within_5_percent_of_the_published_one(name):
    model = FACTORIES[name]()
    count = embedding_parameters(model)
    assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 0.05, (name, count)
    # The head is a linear classifier on the embedding, outside the count.
    dim = 192 if name.startswith("ecapa") else 256
    assert model.classifier.weight.shape == (1000, dim)


# Small widths: the same structure, fast on a CPU.
SMALL = {
    "ecapa": (lambda n: ecapa_tdnn(n, channels=64), 192),
    "resnet34": (lambda n: resnet34(n, base_channels=8), 256),
}


@pytest.fixture(scope="module", params=sorted(SMALL))
def small(request) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(0)
    make, dim = SMALL[request.param]
    model = make(7)
    model.train()  # batch-norm statistics that are not the identity, for the eval-mode checks
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 8000) * 0.1, torch.full((4,), 8000))
    model.eval()
    return model, dim


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([16000, 9000, 5500, 12345])
    wave = torch.randn(4, 16000, generator=g) * 0.1
    for row, n in enumerate(lengths.tolist()):
        wave[row, n:] = 0.0
    return wave, lengths


def test_forward_and_embed_shapes(small):
    model, dim = small
    wave, lengths = batch()
    with torch.no_grad():
        assert model(wave, lengths).shape == (4, 7)
        assert model.embed(wave, lengths).shape == (4, dim)
        # int16 input (what the validation loader gives) is the same signal.
        int16 = (wave * 32768).round().clamp(-32768, 32767).to(torch.int16)
        assert model.embed(int16, lengths).shape == (4, dim)


def test_an_utterances_embedding_does_not_depend_on_the_padding_of_its_batch(small):
    model, _ = small
    wave, lengths = batch()
    with torch.no_grad():
        together = model.embed(wave, lengths)
        alone = torch.cat([model.embed(wave[i:i + 1, :n], lengths[i:i + 1])
                           for i, n in enumerate(lengths.tolist())])
        # Padded further still: twice the longest row.
        wider = model.embed(torch.nn.functional.pad(wave, (0, 16000)), lengths)
    scale = alone.abs().max()
    assert (together - alone).abs().max() <= 1e-5 * scale
    assert (wider - alone).abs().max() <= 1e-5 * scale
    # Rows are distinct utterances: the check is not vacuous.
    assert (alone[0] - alone[1]).abs().max() > 100 * 1e-5 * scale


def test_training_step_reaches_every_parameter(small):
    model, _ = small
    wave, lengths = batch()
    model.train()
    try:
        loss = torch.nn.functional.cross_entropy(model(wave, lengths), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert missing == []
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_factories_load_by_name_with_their_options():
    doc = {"data": {"train": ["x/index.json"]},
           "model": {"factory": "wds_pipeline.train.ecapa:ecapa_tdnn", "channels": 64, "embedding_dim": 32}}
    cfg = parse_config(doc, "t.yaml")
    model = build_model(cfg.model.factory, dict(cfg.model.options), num_classes=3, sample_rate=16000)
    assert model.classifier.weight.shape == (3, 32) and hasattr(model, "feature_hook")
    model = build_model("wds_pipeline.train.resnet:resnet34", {"base_channels": 8}, num_classes=3,
                        sample_rate=16000)
    assert model.classifier.weight.shape == (3, 256)
    doc["model"] = {"factory": "wds_pipeline.train.resnet:resnet34", "chanels": 8}
    with pytest.raises(ConfigError, match="t.yaml: model.chanels: not an option of wds_pipeline.train.resnet:"
                                          "resnet34; valid options: base_channels, embedding_dim"):
        parse_config(doc, "t.yaml")
    with pytest.raises(ValueError, match="model.channels must be a multiple of the Res2Net scale 8, got 60"):
        ecapa_tdnn(3, channels=60)


def test_bf16_autocast_gives_the_float32_embedding_closely(small):
    """Under autocast (bf16 is the trainer's choice on CUDA) the pooling statistics stay in
    float32: the embedding is the float32 one up to bf16 rounding of the convolutions."""
    model, _ = small
    wave, lengths = batch()
    with torch.no_grad():
        exact = model.embed(wave, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.embed(wave, lengths).float()
    assert torch.isfinite(low).all()
    assert torch.nn.functional.cosine_similarity(low, exact).min() > 0.99
