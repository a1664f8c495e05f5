"""``data.valid_noisy``: a noisy copy of the validation data (an augment block of batch
transforms drawn with a fixed seed per sample), scored beside the clean one as
``valid_noisy_accuracy`` / ``valid_noisy_eer``; the same copy at every validation of every run."""

from __future__ import annotations

import pytest
import torch
from augment_corpora import build_noise_corpora
from shardgen import make_dataset
from trainer_helpers import small_config

from wds_pipeline.errors import ConfigError
from wds_pipeline.loader import StreamingLoader
from wds_pipeline.train.config import parse_config
from wds_pipeline.train.trainer import Trainer
from wds_pipeline.train.validate import device_batch


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, str]:
    return build_noise_corpora(tmp_path_factory.mktemp("valid-noisy-corpora"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> str:
    return make_dataset(str(tmp_path_factory.mktemp("valid-noisy-speech")), [12, 12], speakers=3)


def config(speech: str, out: str, valid_noisy, seed: int = 0):
    doc = small_config(speech, out)
    doc["data"].update(valid=[speech], valid_noisy=valid_noisy)
    doc["run"]["seed"] = seed
    return parse_config(doc, "test.yaml")


@pytest.mark.parametrize("block,message", [
    ({"noise_index": "x", "noise": {}, "speed": {}}, "test.yaml: data: valid_noisy: only noise, reverb and gain"),
    ({"noise_index": "x", "noise": {}, "spec_augment": {}}, "test.yaml: data: valid_noisy: only noise, reverb"),
    ({"noise_index": "x"}, "test.yaml: data: valid_noisy: configure noise, reverb or gain"),
    ({"noise": {}}, "noise needs noise_index"),
])
def test_bad_valid_noisy_blocks_are_config_errors_naming_the_key(speech, tmp_path, block, message):
    with pytest.raises(ConfigError) as e:
        config(speech, str(tmp_path), block)
    assert message in str(e.value)


def test_noisy_copy_is_scored_beside_the_clean_one_and_is_the_same_every_time(speech, corpora, tmp_path):
    block = {"noise_index": corpora["noise"], "rir_index": corpora["rirs"], "noise": {"probability": 1.0},
             "reverb": {"probability": 0.5}}
    trainer = Trainer(config(speech, str(tmp_path / "a"), block, seed=0))
    first = trainer.validate()
    assert set(first) == {"valid_accuracy", "valid_noisy_accuracy"}  # no trial lists: no EER
    assert trainer.validate() == first
    # Another run (another run.seed, other weights) scores the very same noisy copy.
    other = Trainer(config(speech, str(tmp_path / "b"), block, seed=5))
    other.validate()
    stage_a, stage_b = trainer.valid_noisy_stage, other.valid_noisy_stage
    assert stage_a is not None and stage_b is not None
    loader = StreamingLoader(speech, batch_size=4, shuffle=False, waveform_dtype="int16", last_batch="pad")
    rows = 0
    for batch in loader:
        clean = device_batch(batch, torch.device("cpu"))
        a = stage_a(clean, epoch=0, index=batch.index).wave
        b = stage_b(clean, epoch=0, index=batch.index).wave
        assert torch.equal(a, b)
        valid = torch.arange(a.shape[1])[None, :] < clean.lengths[:, None]
        scaled = clean.wave.float() / 32768
        # Noise on every row (probability 1.0): no valid frame run is left clean.
        assert all(not torch.equal(a[r][valid[r]], scaled[r][valid[r]]) for r in range(len(a)))
        assert torch.all(a[~valid] == 0)
        rows += len(a)
    assert rows == 24


def test_speed_copies_fold_to_their_speaker_for_accuracy():
    from wds_pipeline.train.validate import speed_copy_of

    assert [speed_copy_of(n) for n in ("id10001", "id10001@sp0.9", "id10001@sp1.1", "a@spx", "@sp1.0")] == \
        ["id10001", "id10001", "id10001", "a@spx", "@sp1.0"]
