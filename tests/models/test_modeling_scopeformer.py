import torch
import torch.nn.functional as F

from hfmed import ScopeformerForImageClassification, ScopeformerImageProcessor, ScopeformerModel, scopeformer_config
from tests.model_tester import FamilyTester


class TestScopeformer(FamilyTester):
    base_class = ScopeformerModel
    head_class = ScopeformerForImageClassification

    @staticmethod
    def config_factory():
        return scopeformer_config("scopeformer-tiny")

    @staticmethod
    def processor_factory(config):
        return ScopeformerImageProcessor(size={"height": config.image_size, "width": config.image_size})

    def reference_loss(self, logits, labels, config):
        # RSNA 2019 weighted multi-label log loss, written out: "any" weighs 2, the five subtypes 1.
        p = torch.sigmoid(logits)
        log_loss = -(labels * torch.log(p) + (1 - labels) * torch.log(1 - p)).mean(0)
        w = torch.tensor([2.0, 1, 1, 1, 1, 1])
        return (log_loss * w).sum() / w.sum()


class TestScopeformerChannelTokensJointProjection(TestScopeformer):
    @staticmethod
    def config_factory():
        return scopeformer_config(
            "scopeformer-tiny", token_layout="channel", projection_type="joint", pooling="mean",
            feature_resize="bilinear", freeze_backbones=False,
        )
