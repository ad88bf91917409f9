"""One-call inference on medical files: pipelines that hand raw inputs to the family's processor.

`pipeline("image-classification")` decodes every input with PIL, which cannot read DICOM or NIfTI.
`MedicalImageClassificationPipeline` passes paths, bytes, `pydicom.Dataset`s and arrays untouched to the
model's image processor (which knows the modality) and returns a sigmoid / softmax score per label.
`MedicalVolumePipeline` does the same for 3-D volumes (NIfTI paths, nibabel images, arrays) and returns
the model's prediction (a value for a regression model, a probability per label for a classifier) with
the per-slice attention weights when the model has them.
"""

import os
from pathlib import Path

from transformers import AutoModelForImageClassification, ImageClassificationPipeline, Pipeline, pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .hub import trust_remote_code_for
from .tasks import task_for

TASK = "medical-image-classification"
VOLUME_TASK = "medical-volume-prediction"


class MedicalImageClassificationPipeline(ImageClassificationPipeline):
    """Image classification whose inputs go to the image processor as they are (DICOM path, bytes, array...)."""

    # No video processor: left at None, `pipeline()` looks for one, derives its `auto_map` entry from the
    # image processor's and, finding no registered class, asks on the terminal whether to run custom code.
    _load_video_processor = False

    def preprocess(self, image, timeout=None):
        model_inputs = self.image_processor(images=image, return_tensors="pt")
        return model_inputs.to(self.dtype)

    def postprocess(self, model_outputs, function_to_apply=None, top_k=None):
        # Every label by default: a clinician-facing multi-label answer must not drop findings.
        top_k = self.model.config.num_labels if top_k is None else top_k
        return super().postprocess(model_outputs, function_to_apply=function_to_apply, top_k=top_k)


class MedicalVolumePipeline(Pipeline):
    """Prediction on one 3-D volume per call (a NIfTI path, bytes, a nibabel image or an array).

    Returns `{"task", "predictions", "slice_weights", "slice_axis"}`: `task` is "regression" or
    "classification"; `predictions` has one entry per output, `{"label", "value"}` (regression, in the
    target's unit) or `{"label", "score"}` (sigmoid probability); `slice_weights` is the list of per-slice
    weights of an attention-pooling model (summing to 1, in slice order along `slice_axis`), else `None`.
    """

    _load_processor = False
    _load_image_processor = True
    _load_video_processor = False  # see MedicalImageClassificationPipeline
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, **kwargs):
        if kwargs:
            raise ValueError(f"{VOLUME_TASK} takes no call arguments, got {sorted(kwargs)}")
        return {}, {}, {}

    def preprocess(self, inputs):
        return self.image_processor(inputs, return_tensors="pt")

    def _forward(self, model_inputs):
        outputs = self.model(pixel_values=model_inputs["pixel_values"].to(self.dtype))
        weights = getattr(outputs, "slice_weights", None)
        return {"logits": outputs.logits, "slice_weights": weights}

    def postprocess(self, model_outputs):
        config = self.model.config
        names = [config.id2label[i] for i in range(config.num_labels)]
        task = task_for(config)
        weights = model_outputs["slice_weights"]
        return {
            "task": task.report_name,
            "predictions": task.predictions(model_outputs["logits"][0], names),
            "slice_weights": None if weights is None else weights[0].float().tolist(),
            "slice_axis": getattr(config, "slice_axis", None),
        }


def register_pipelines() -> None:
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=MedicalImageClassificationPipeline, pt_model=AutoModelForImageClassification
    )
    PIPELINE_REGISTRY.register_pipeline(
        VOLUME_TASK, pipeline_class=MedicalVolumePipeline, pt_model=AutoModelForImageClassification
    )


def _check_model_source(model) -> None:
    """A one-line error for a local path that is not a model folder: transformers would call it a malformed
    Hub repo id, or ask for a `model_type` key in a config.json that does not exist."""
    if not isinstance(model, (str, os.PathLike)):
        return
    path = Path(model)
    if path.is_dir():
        if (path / "config.json").is_file():
            return
        if (path / "model" / "config.json").is_file():
            raise ValueError(f"{model} is a training run folder, not a model folder: pass {path / 'model'}")
        raise ValueError(
            f"{model} has no config.json, so it is not a model folder: pass a folder written by save_pretrained "
            "or `hfmed train` (a run's model/ subfolder), or a Hub repo id 'org/name'"
        )
    text = os.fspath(model)
    # A Hub id is "name" or "org/name"; anything else that does not exist is a mistyped local path.
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or os.sep in text.replace("/", ""):
        raise FileNotFoundError(f"No model folder {text!r}: check the path (a run's model folder is <run>/model)")


def _pipeline(task, model, kwargs):
    _check_model_source(model)
    hub_kwargs = {key: kwargs[key] for key in ("revision", "token") if key in kwargs}
    kwargs["trust_remote_code"] = trust_remote_code_for(model, kwargs.get("trust_remote_code"), **hub_kwargs)
    pipe = pipeline(task, model=model, **kwargs)
    _check_input_kind(task, pipe.model.config, model)
    return pipe


def _check_input_kind(task, config, model) -> None:
    from .cards import FAMILY_CARDS

    card = FAMILY_CARDS.get(getattr(config, "model_type", None))
    if card is None:
        return
    if task == VOLUME_TASK and card.input_kind != "volume":
        raise ValueError(
            f"{model} is a {config.model_type} model for 2-D images, not 3-D volumes: use "
            "hfmed.pipelines.classify, not predict_volume"
        )
    if task == TASK and card.input_kind == "volume":
        raise ValueError(
            f"{model} is a {config.model_type} model for 3-D volumes: use hfmed.pipelines.predict_volume, "
            "not classify"
        )


def classify(inputs, model, **kwargs):
    """Classify a DICOM/PNG path, bytes, Dataset or array with a model folder, Hub id or model instance.

    Returns a list of `{"label", "score"}` for every label, highest first (a list of lists for a batch).
    An hfmed family loads with the installed classes; a folder with other custom code needs
    `trust_remote_code=True` (`hfmed.hub.trust_remote_code_for`).
    """
    return _pipeline(TASK, model, kwargs)(inputs)


def predict_volume(inputs, model, **kwargs):
    """Predict on a NIfTI path, bytes, nibabel image or array with a model folder, Hub id or instance.

    Returns the `MedicalVolumePipeline` dict (prediction and slice weights); a list of them for a list.
    Loads like `classify`.
    """
    return _pipeline(VOLUME_TASK, model, kwargs)(inputs)


__all__ = [
    "MedicalImageClassificationPipeline",
    "MedicalVolumePipeline",
    "TASK",
    "VOLUME_TASK",
    "classify",
    "predict_volume",
    "register_pipelines",
]
