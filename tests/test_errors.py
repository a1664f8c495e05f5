"""The package's one error family: every exception class wds_pipeline defines derives from
``WdsPipelineError`` and keeps the builtin base callers already catch."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import wds_pipeline
from wds_pipeline.errors import (
    ConfigError,
    ResumeMismatch,
    ShardError,
    ShardFormatError,
    WdsPipelineError,
)

OPTIONAL = {"ray"}  # modules importing optional packages are skipped when these are missing


def _package_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for mod in pkgutil.walk_packages(wds_pipeline.__path__, "wds_pipeline."):
        try:
            module = importlib.import_module(mod.name)
        except ImportError as e:  # an optional extra that is not installed
            if e.name and e.name.split(".")[0] in OPTIONAL:
                continue
            raise
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__.startswith("wds_pipeline")
                    and not issubclass(obj, Warning)):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_package_exception_is_in_the_family():
    found = _package_exceptions()
    assert len(found) >= 20
    outside = sorted(name for name, cls in found.items() if not issubclass(cls, WdsPipelineError))
    assert outside == []


@pytest.mark.parametrize("name, builtin", [
    ("wds_pipeline.errors.ConfigError", ValueError),
    ("wds_pipeline.builder.options.BuildConfigError", ValueError),
    ("wds_pipeline.builder.options.BuildError", RuntimeError),
    ("wds_pipeline.errors.ShardFormatError", ValueError),
    ("wds_pipeline.storage.access.DiskFullError", OSError),
    ("wds_pipeline.storage.retry.StorageError", OSError),
    ("wds_pipeline.train.checkpoint_io.CheckpointError", RuntimeError),
    ("wds_pipeline.audio.errors.AudioDecodeError", ValueError),
    ("wds_pipeline.index.IndexFormatError", ValueError),
])
def test_family_keeps_builtin_bases(name, builtin):
    assert issubclass(_package_exceptions()[name], builtin)


def test_shard_branch_and_config_branch():
    found = {cls.__name__: cls for cls in _package_exceptions().values()}
    for name in ("ShardFormatError", "ShardIntegrityError", "ShardReadError", "SampleDecodeError"):
        assert issubclass(found[name], ShardError), name
    assert issubclass(found["ShardIntegrityError"], ShardFormatError)
    assert issubclass(found["ShardReadError"], OSError)
    assert issubclass(found["BuildConfigError"], ConfigError)
    # one class for a resume that does not fit, raised by the loader and the trainer alike
    assert [n for n in found if "Mismatch" in n] == ["ResumeMismatch"]
    assert issubclass(ResumeMismatch, ValueError) and issubclass(ResumeMismatch, RuntimeError)


def test_loader_resume_mismatch_is_the_family_class(tmp_path):
    from wds_pipeline import LoaderConfig, StreamingLoader
    from wds_pipeline.testing import write_synthetic_dataset

    url = write_synthetic_dataset(str(tmp_path / "ds"), [4])
    a = StreamingLoader([url], LoaderConfig(batch_size=2, num_workers=0, seed=1))
    b = StreamingLoader([url], LoaderConfig(batch_size=3, num_workers=0, seed=1))
    with pytest.raises(ResumeMismatch, match="different dataset or loader configuration"):
        b.load_state_dict(a.state_dict())
