"""Builder modules declare themselves: named by their builder key, with their own path arguments; the
transforms read the channel count from the processor's input contract."""

import importlib
import inspect
import pkgutil

import pytest

import hfmed.data
from hfmed.data import BUILDER_SPECS, BUILDERS, Builder, check_builder_args
from hfmed.data.transforms import BatchTransform, _num_channels
from hfmed.models.lt_vit import LTViTImageProcessor
from hfmed.models.scopeformer.image_processing_scopeformer import ScopeformerImageProcessor
from hfmed.models.slice_cnn import SliceCNNImageProcessor


def test_every_builder_module_is_registered_under_its_own_name():
    declared = {}
    for info in pkgutil.iter_modules(hfmed.data.__path__):
        module = importlib.import_module(f"hfmed.data.{info.name}")
        if isinstance(getattr(module, "BUILDER", None), Builder):
            declared[info.name] = module.BUILDER
    assert set(declared) == set(BUILDER_SPECS) == set(BUILDERS)
    for name, spec in declared.items():
        assert spec.name == name and BUILDERS[name] is spec.load


def test_declared_path_arguments_are_parameters_of_the_builder():
    for spec in BUILDER_SPECS.values():
        assert set(spec.path_args) <= set(inspect.signature(spec.load).parameters), spec.name
    assert BUILDER_SPECS["rsna_ich"].path_args == ("root",)
    assert BUILDER_SPECS["nifti_csv"].path_args == ("csv_path",)
    assert BUILDER_SPECS["synthetic_cxr"].label_regions  # the twin draws each finding in a known box


def test_builder_arguments_are_checked_before_any_data_is_read():
    with pytest.raises(TypeError, match="dataset builder 'synthetic_ct': .*num_patiens.*its parameters are"):
        check_builder_args("synthetic_ct", {"num_patiens": 3})
    with pytest.raises(ValueError, match="unknown dataset builder 'mnist'"):
        check_builder_args("mnist", {})


@pytest.mark.parametrize(
    ("processor", "channels"),
    [
        (lambda: SliceCNNImageProcessor(), 1),
        (lambda: LTViTImageProcessor(), 3),
        (lambda: ScopeformerImageProcessor(windows=[[40, 80], [80, 200]], window_names=["brain", "subdural"],
                                           image_mean=[0.5, 0.5], image_std=[0.5, 0.5]), 2),
    ],
)
def test_the_channel_count_comes_from_the_input_contract(processor, channels):
    processor = processor()
    assert _num_channels(processor) == processor.input_contract()["num_channels"] == channels
    transform = BatchTransform(processor, {"rotate_degrees": 10}, train=True)
    assert len(transform.augmentation.fill) == channels  # the normalised black of each channel
