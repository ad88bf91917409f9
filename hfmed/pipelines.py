"""One-call inference on medical files: a pipeline that hands raw inputs to the family's processor.

`pipeline("image-classification")` decodes every input with PIL, which cannot read DICOM or NIfTI.
`MedicalImageClassificationPipeline` passes paths, bytes, `pydicom.Dataset`s and arrays untouched to the
model's image processor (which knows the modality) and returns a sigmoid / softmax score per label.
"""

from transformers import AutoModelForImageClassification, ImageClassificationPipeline, pipeline
from transformers.pipelines import PIPELINE_REGISTRY

TASK = "medical-image-classification"


class MedicalImageClassificationPipeline(ImageClassificationPipeline):
    """Image classification whose inputs go to the image processor as they are (DICOM path, bytes, array...)."""

    def preprocess(self, image, timeout=None):
        model_inputs = self.image_processor(images=image, return_tensors="pt")
        return model_inputs.to(self.dtype)

    def postprocess(self, model_outputs, function_to_apply=None, top_k=None):
        # Every label by default: a clinician-facing multi-label answer must not drop findings.
        top_k = self.model.config.num_labels if top_k is None else top_k
        return super().postprocess(model_outputs, function_to_apply=function_to_apply, top_k=top_k)


def register_pipelines() -> None:
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=MedicalImageClassificationPipeline, pt_model=AutoModelForImageClassification
    )


def classify(inputs, model, **kwargs):
    """Classify a DICOM/PNG path, bytes, Dataset or array with a model folder, Hub id or model instance.

    Returns a list of `{"label", "score"}` for every label, highest first (a list of lists for a batch).
    """
    pipe = pipeline(TASK, model=model, **kwargs)
    return pipe(inputs)


__all__ = ["MedicalImageClassificationPipeline", "TASK", "classify", "register_pipelines"]
