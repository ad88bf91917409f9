"""Slice-CNN (Gupta et al., "Transferring Models Trained on Natural Images to 3D MRI via Position Encoded
Slice Models", arXiv 2303.01491, ISBI 2023; official code github.com/umgupta/2d-slice-set-networks): a 2-D
encoder on every slice of a 3-D MRI volume, a learned slice-position encoding, and mean / max / attention over
slices."""

from .configuration_slice_cnn import AGGREGATIONS, ENCODERS, PRESETS, TASKS, SliceCNNConfig, slice_cnn_config
from .image_processing_slice_cnn import SliceCNNImageProcessor
from .modeling_slice_cnn import (
    SliceCNNForVolumeClassification,
    SliceCNNForVolumePrediction,
    SliceCNNForVolumeRegression,
    SliceCNNModel,
    SliceCNNModelOutput,
    SliceCNNOutput,
    SliceCNNPreTrainedModel,
    convert_original_state_dict,
)

__all__ = [
    "AGGREGATIONS",
    "ENCODERS",
    "PRESETS",
    "TASKS",
    "SliceCNNConfig",
    "slice_cnn_config",
    "SliceCNNImageProcessor",
    "SliceCNNForVolumeClassification",
    "SliceCNNForVolumePrediction",
    "SliceCNNForVolumeRegression",
    "SliceCNNModel",
    "SliceCNNModelOutput",
    "SliceCNNOutput",
    "SliceCNNPreTrainedModel",
    "convert_original_state_dict",
]
