"""The package's public surface: top-level names, typed loader keywords kept in step with
LoaderConfig, internals not re-exported."""

from __future__ import annotations

import subprocess
import sys

import pytest

import wds_pipeline


def test_top_level_exports_build_and_load_names():
    assert set(wds_pipeline.__all__) == {
        "Batch", "BuildOptions", "DatasetIndex", "LoaderConfig", "LoaderState",
        "StreamingLoader", "__version__", "build_dataset", "load_index",
    }
    from wds_pipeline.builder import BuildOptions, build_dataset
    from wds_pipeline.loader import LoaderState, StreamingLoader

    assert wds_pipeline.build_dataset is build_dataset
    assert wds_pipeline.BuildOptions is BuildOptions
    assert wds_pipeline.LoaderState is LoaderState
    assert wds_pipeline.StreamingLoader is StreamingLoader
    with pytest.raises(AttributeError, match="no attribute 'make_loader'"):
        wds_pipeline.make_loader  # noqa: B018


def test_import_stays_light():
    # The CLI and corpus scanning import the package: torch must come only with the loader.
    code = "import sys, wds_pipeline; wds_pipeline.BuildOptions; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_loader_exports_only_public_names():
    from wds_pipeline import loader

    assert set(loader.__all__) == {
        "Batch", "LoaderConfig", "LoaderState", "StreamingLoader", "load_yaml_config",
    }


def test_unknown_loader_keyword_is_refused(tmp_path):
    from wds_pipeline.loader import StreamingLoader

    with pytest.raises(ValueError, match=r"unknown loader options \['batchsize'\]"):
        StreamingLoader(str(tmp_path / "index.json"), batchsize=4)  # type: ignore[call-arg]
