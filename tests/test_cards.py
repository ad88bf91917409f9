"""Model cards: the best model's results on every extra split, and a family's facts about the trained model
(`Family.card_model_facts`), with the numbers checked against counts made here."""

import timm

from hfmed import MoVLImageProcessor, movl_config
from hfmed.cards import build_model_card
from hfmed.registry import FAMILIES

NAMES = {i: f"class{i}" for i in range(4)}
METRICS = {
    "best": {"epoch": 3, "step": 12, "metrics": {"accuracy": 0.75, "balanced_accuracy": 0.7, "macro_auroc": 0.9}},
    "splits": {
        "test": {"accuracy": 0.8125, "balanced_accuracy": 0.8, "macro_auroc": 0.95, "recall_class0": 1.0},
        "test_ood": {"accuracy": 0.625, "balanced_accuracy": 0.6, "macro_auroc": None},
    },
}


def movl_card(**config):
    config = movl_config("movl-tiny", id2label=NAMES, **config)
    processor = MoVLImageProcessor(size={"height": 32, "width": 32})
    return build_model_card(config, processor, "org/movl", METRICS, {"data": {"builder": "synthetic_shift"}})


def test_the_card_tables_each_extra_split_and_puts_it_in_the_metadata():
    card = movl_card()
    text = str(card)
    assert "### Split `test`\n" in text and "### Split `test_ood`\n" in text
    test = text.split("### Split `test`\n")[1].split("###")[0]
    assert "| accuracy | 0.8125 |" in test and "| macro AUROC (one-vs-rest) | 0.9500 |" in test
    assert "recall_class0" not in test  # the task's card metrics only
    ood = text.split("### Split `test_ood`\n")[1].split("##")[0]
    assert "| accuracy | 0.6250 |" in ood and "| macro AUROC (one-vs-rest) | - |" in ood  # NaN: no value
    results = [(r.dataset_split, r.metric_type, r.metric_value) for r in card.data.eval_results]
    assert results == [
        ("validation", "accuracy", 0.75), ("validation", "balanced_accuracy", 0.7), ("validation", "roc_auc", 0.9),
        ("test", "accuracy", 0.8125), ("test", "balanced_accuracy", 0.8), ("test", "roc_auc", 0.95),
        ("test_ood", "accuracy", 0.625), ("test_ood", "balanced_accuracy", 0.6),
    ]  # fmt: skip


def test_a_card_without_extra_splits_has_no_split_tables():
    config = movl_config("movl-tiny", id2label=NAMES)
    card = build_model_card(config, MoVLImageProcessor(size={"height": 32, "width": 32}), "org/m",
                            {"best": METRICS["best"]}, {"data": {"builder": "medmnist"}})  # fmt: skip
    assert "### Split" not in str(card)
    assert {r.dataset_split for r in card.data.eval_results} == {"validation"}


def section(text: str, title: str) -> str:
    return text.split(f"## {title}\n")[1].split("\n## ")[0]


def test_the_movl_card_states_strategy_trainable_parameters_prompt_and_backbone():
    backbone = sum(p.numel() for p in timm.create_model("test_resnet", num_classes=0).parameters())
    head = 96 * 4 + 4  # the 96-d pooled feature -> 4 classes
    prompt = 2 * 3 * 4 * 32 + 2 * 3 * (32 - 2 * 4) * 4  # padding 4 px wide at 32 px, 3 channels
    facts = section(str(movl_card(lp_warmup_epochs=3)), "This model")
    assert f"- Trainable parameters: {prompt + head:,} of {backbone + head + prompt:,} " in facts
    assert f"prompt {prompt:,}, linear probe {head:,}, backbone {backbone:,} (frozen)" in facts
    assert "- Strategy: `movl` (from epoch 1: linear probe; from epoch 4: prompt + linear probe with the `mse` " \
           "discrepancy term (lambda 0.1))" in facts
    assert f"- Prompt: `padding`, four border strips 4 px wide ({prompt:,} parameters)" in facts
    assert "- Backbone: timm `test_resnet` (96-d pooled features), frozen" in facts

    lp = section(str(movl_card(strategy="lp")), "This model")
    assert f"- Trainable parameters: {head:,} of {backbone + head:,} (" in lp and "- Prompt: none" in lp
    full = section(str(movl_card(strategy="full_finetune")), "This model")
    assert f"- Trainable parameters: {backbone + head:,} of {backbone + head:,} (100.00 %)" in full
    assert "(fine-tuned)" in full


def test_the_movl_card_counts_bahngs_padding_prompt_on_clip():
    # the published-size preset is counted on the meta device: no weights are downloaded or allocated
    config = movl_config("movl-clip-b32", id2label={i: f"c{i}" for i in range(9)})
    card = build_model_card(config, MoVLImageProcessor(size={"height": 224, "width": 224}), "org/clip", None, None)
    facts = section(str(card), "This model")
    assert "- Prompt: `padding`, four border strips 30 px wide (69,840 parameters)" in facts
    assert f"- Trainable parameters: {69_840 + 512 * 9 + 9:,} of " in facts
    assert "CLIP vision tower `openai/clip-vit-base-patch32` (512-d projected embedding)" in facts


def test_the_diamant_card_names_its_frozen_vit_and_counts_what_trains():
    family = FAMILIES["diamant"]
    config = family.make_config("diamant-tiny")
    model = family.head_class(config)
    vit = sum(p.numel() for p in model.diamant.dino.parameters())
    total = sum(p.numel() for p in model.parameters())
    processor = family.image_processor_class(**family.processor_kwargs_for(config))
    facts = section(str(build_model_card(config, processor, "org/d", None, None)), "This model")
    assert f"- Frozen ViT ({vit:,} parameters, patch {config.patch_size}): random initialisation" in facts
    assert f"- Trainable parameters: {total - vit:,} of {total:,} (" in facts
    dino = family.make_config("diamant-tiny", pretrained_dino="vit_small_patch8_224.dino")
    assert "the DINO weights `vit_small_patch8_224.dino`" in str(build_model_card(dino, processor, "org/d", None, None))


def test_a_family_without_model_facts_has_no_such_section():
    family = next(f for f in FAMILIES.values() if f.card_model_facts is None)
    config = family.make_config(next(p for p in family.presets if p.endswith("-tiny")))
    processor = family.image_processor_class(**family.processor_kwargs_for(config))
    assert "## This model" not in str(build_model_card(config, processor, "org/x", None, None))


def test_the_intended_use_sentence_names_modality_input_and_task_without_a_repeated_word():
    # "Research on <modality> <input kind> <task>": a modality that already ends in the input kind read
    # "any 2-D medical image image classification".
    import re

    text = str(movl_card())
    sentence = next(line for line in text.splitlines() if line.startswith("Research on "))
    assert sentence.startswith("Research on 2-D medical image classification:")
    assert not re.search(r"\b(\w+) \1\b", sentence)
