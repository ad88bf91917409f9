"""Training policy: which parameters train, with which learning rate and weight decay, and when.

The model declares its own optimisation facts, as timm models do with `no_weight_decay()`, through optional
methods of its `PreTrainedModel` (in the model folder, so they travel to the Hub with it). Each returns
parameter names relative to the model it is called on; a name covers the parameter of that name and every
parameter below it (`"backbones"` covers `"backbones.0.conv1.weight"`):

    no_weight_decay()       names that take no weight decay (biases and other 0-/1-D parameters never do)
    learning_rate_groups()  {group: names}: groups a recipe may give their own learning rate, by group name
                            (`training.module_learning_rates: {<group>: 1.0e-3}`)
    frozen_parameters()     names that never train: requires_grad is switched off and the optimizer never
                            holds them

`TrainingPolicy` reads these declarations, and is the one extension point of the training loop: a family
that must change what trains at an epoch boundary (staged strategies), add model inputs it can compute once
and reuse (`prepare_batch`: a frozen sub-network's cached outputs), or add a loss term, subclasses it in its family
module and sets `Family(training_policy=...)`:

    class StagedPolicy(TrainingPolicy):
        def on_epoch_start(self, model, epoch):
            model.prompt.requires_grad_(epoch >= model.config.warmup_epochs)

        def loss(self, model, batch, outputs):
            return outputs.loss + 0.1 * outputs.discrepancy_loss

Every parameter that is not declared frozen is in the optimizer, even while `on_epoch_start` has switched its
`requires_grad` off: torch's optimizers skip a parameter without a gradient (no update, no weight decay), so
a stage can switch it back on without rebuilding the optimizer.
"""

from __future__ import annotations

from .recipe import RecipeError


def _declared(model, method: str) -> tuple[str, ...]:
    declare = getattr(model, method, None)
    return tuple(declare()) if callable(declare) else ()


def covers(name: str, declared) -> bool:
    """Whether the parameter `name` is one of the `declared` names or lies below one of them."""
    return any(name == d or name.startswith(d + ".") for d in declared)


class TrainingPolicy:
    """The default policy: the model's declarations, no epoch hook, the model's own loss."""

    def frozen(self, model) -> tuple[str, ...]:
        return _declared(model, "frozen_parameters")

    def no_weight_decay(self, model) -> tuple[str, ...]:
        return _declared(model, "no_weight_decay")

    def learning_rate_groups(self, model) -> dict[str, tuple[str, ...]]:
        declare = getattr(model, "learning_rate_groups", None)
        return {group: tuple(names) for group, names in (declare() if callable(declare) else {}).items()}

    def apply(self, model) -> None:
        """Switch the frozen parameters' `requires_grad` off (called once, before the optimizer is built)."""
        frozen = self.frozen(model)
        for name, param in model.named_parameters():
            if covers(name, frozen):
                param.requires_grad_(False)

    def on_epoch_start(self, model, epoch: int) -> None:
        """Called on the unwrapped model before every epoch (0-based; also when a run resumes inside an epoch).
        Change what trains here (`requires_grad`); the default changes nothing."""

    def prepare_batch(self, model, batch: dict) -> dict:
        """Called on the unwrapped model with every batch, in training and in evaluation, right before the
        forward; returns the batch the model is called with (and `loss` sees). The default returns it unchanged.
        Inputs added here must equal what the model would compute itself, so a run does not depend on them."""
        return batch

    def loss(self, model, batch, outputs):
        """The loss the loop backpropagates and logs; the default is the model's `outputs.loss`."""
        return outputs.loss


def parameter_groups(model, training, policy: TrainingPolicy | None = None) -> list[dict]:
    """Optimizer groups for a model: `training.learning_rate`, or the rate of the longest matching
    `training.module_learning_rates` key (a declared learning-rate group, or a parameter-name prefix); weight
    decay except on 0-/1-D parameters and the declared no-decay names. Frozen parameters are left out.

    Raises `RecipeError` for a `module_learning_rates` key that names neither a group nor any parameter.
    """
    policy = policy or TrainingPolicy()
    declared_groups = policy.learning_rate_groups(model)
    names = [name for name, _ in model.named_parameters()]
    rates: dict[str, float] = {}
    for key, lr in training.module_learning_rates.items():
        prefixes = declared_groups.get(key, (key,))
        if not any(n.startswith(p) for n in names for p in prefixes):
            raise RecipeError(
                f"training.module_learning_rates: no parameter name starts with {key!r}, and the model declares "
                f"no such learning-rate group (its groups: {sorted(declared_groups)})"
            )
        rates.update(dict.fromkeys(prefixes, lr))
    prefixes = sorted(rates, key=len, reverse=True)
    frozen, no_decay = policy.frozen(model), policy.no_weight_decay(model)
    groups: dict[tuple, dict] = {}
    for name, param in model.named_parameters():
        if covers(name, frozen):
            continue
        lr = next((rates[p] for p in prefixes if name.startswith(p)), training.learning_rate)
        decay = 0.0 if param.ndim <= 1 or covers(name, no_decay) else training.weight_decay
        group = groups.setdefault((lr, decay), {"params": [], "lr": lr, "weight_decay": decay, "names": []})
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def parameter_counts(model, policy: TrainingPolicy | None = None) -> tuple[int, int]:
    """(trainable, total) parameters of `model` under `policy`: trainable are those the optimizer holds (every
    parameter the policy does not freeze, whichever stage trains it), total every parameter. Works on the meta
    device."""
    frozen = (policy or TrainingPolicy()).frozen(model)
    named = list(model.named_parameters())
    trainable = sum(param.numel() for name, param in named if not covers(name, frozen))
    return trainable, sum(param.numel() for _, param in named)


__all__ = ["TrainingPolicy", "covers", "parameter_counts", "parameter_groups"]
