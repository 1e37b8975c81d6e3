"""Optimiser registry: name -> factory, default learning rate and two settings presets.

Presets:
- ``paper``: the Nero paper's out-of-the-box comparison, no momentum anywhere (SGD momentum 0; Adam and
  LAMB betas (0, 0.999)), as its released code ran CIFAR-10, WikiText-2, translation and the PPO betas.
  Some of the paper's tasks gave a baseline other settings; a task declares those itself
  (``Task.paper_settings``), and :func:`nero_study.tasks.settings.trial_settings` applies them on top of
  this preset for trials of that task.
- ``library``: each library's own defaults (torch's Adam betas (0.9, 0.999), LAMB's (0.9, 0.999), ...).

Default learning rates (the out-of-the-box point added to every sweep's grid) come from different places,
and only Nero's is the paper's out-of-the-box lr: each ``OptimizerInfo.default_lr_source`` says where.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from nero_study.errors import UnknownOptimizerError

# Arguments that are not hyperparameters a study may set.
_NOT_SETTINGS = {"params", "lr", "differentiable", "capturable", "fused", "decoupled_weight_decay", "foreach"}


@dataclass(frozen=True)
class OptimizerInfo:
    """One registered optimiser: how to build it, its default lr and its presets."""

    name: str
    description: str
    factory: Callable[..., torch.optim.Optimizer]
    default_lr: float
    presets: Mapping[str, Mapping[str, Any]]
    default_lr_source: str = ""

    @property
    def hyperparameters(self) -> tuple[str, ...]:
        """Names a sweep may set (the factory's keyword arguments other than ``params`` and ``lr``)."""
        signature = inspect.signature(self.factory)
        return tuple(name for name in signature.parameters if name not in _NOT_SETTINGS)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "default_lr": self.default_lr,
            "default_lr_source": self.default_lr_source,
            "presets": {name: dict(values) for name, values in self.presets.items()},
            "hyperparameters": list(self.hyperparameters),
        }


def _nero(params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    from nero_study.optim.nero import Nero

    return Nero(params, **kwargs)


def _lamb(params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    from nero_study.optim.lamb import Lamb

    return Lamb(params, **kwargs)


def _madam(params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    from nero_study.optim.madam import Madam

    return Madam(params, **kwargs)


def _signature_of(cls_path: str) -> Callable[..., torch.optim.Optimizer]:
    """Give a lazy factory the signature of the class it builds (so settings can be listed)."""

    def decorate(factory: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
        module_name, class_name = cls_path.rsplit(".", 1)
        cls = getattr(__import__(module_name, fromlist=[class_name]), class_name)
        factory.__signature__ = inspect.signature(cls)  # type: ignore[attr-defined]
        return factory

    return decorate


OPTIMIZERS: dict[str, OptimizerInfo] = {
    "nero": OptimizerInfo(
        name="nero",
        description="Nero (Liu et al. 2021): per-neuron relative updates, neurons kept at zero mean, unit norm",
        factory=_signature_of("nero_study.optim.nero.Nero")(_nero),
        default_lr=0.01,
        presets={"paper": {"beta": 0.999, "constraints": True}, "library": {"beta": 0.999, "constraints": True}},
        default_lr_source=(
            "the paper's out-of-the-box lr (Liu et al. 2021; the authors' README: 'lr = 0.01 is the "
            "recommended default')"
        ),
    ),
    "sgd": OptimizerInfo(
        name="sgd",
        description="torch.optim.SGD",
        factory=torch.optim.SGD,
        default_lr=0.1,
        presets={"paper": {"momentum": 0.0}, "library": {"momentum": 0.0}},
        default_lr_source=(
            "the default --lr of the paper's CIFAR-10 and ImageNet scripts (cifar/train.py, imagenet/main.py); "
            "torch.optim.SGD has none"
        ),
    ),
    "adam": OptimizerInfo(
        name="adam",
        description="torch.optim.Adam",
        factory=torch.optim.Adam,
        default_lr=0.001,
        default_lr_source="torch.optim.Adam's default lr",
        presets={"paper": {"betas": (0.0, 0.999), "eps": 1e-8}, "library": {"betas": (0.9, 0.999), "eps": 1e-8}},
    ),
    "lamb": OptimizerInfo(
        name="lamb",
        description=(
            "LAMB (You et al. 2019) as in the Nero paper: trust ratio, weight norm clamped to [0, 10]; "
            "constraints=both is the paper's constrained LAMB (LambCS)"
        ),
        factory=_signature_of("nero_study.optim.lamb.Lamb")(_lamb),
        default_lr=0.01,
        default_lr_source=(
            "this project's choice: Nero's out-of-the-box lr, as both make relative updates of about lr per "
            "step; the paper defines no out-of-the-box lr for LAMB, and pytorch-lamb's own default is 1e-3"
        ),
        presets={
            "paper": {"betas": (0.0, 0.999), "eps": 1e-6},
            "library": {"betas": (0.9, 0.999), "eps": 1e-6},
        },
    ),
    "madam": OptimizerInfo(
        name="madam",
        description=(
            "Madam (Bernstein et al. 2020): per-synapse multiplicative updates; constraints=both is the "
            "paper's constrained Madam (MadamCS)"
        ),
        factory=_signature_of("nero_study.optim.madam.Madam")(_madam),
        default_lr=0.01,
        default_lr_source="the default lr of the authors' Madam (jxbz/madam; optim/madam.py in jxbz/nero)",
        presets={"paper": {"beta": 0.999}, "library": {"beta": 0.999}},
    ),
}


def list_optimizers() -> list[OptimizerInfo]:
    return list(OPTIMIZERS.values())


def get_optimizer(name: str) -> OptimizerInfo:
    """The registered optimiser ``name``; unknown names fail with the list of valid ones."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise UnknownOptimizerError(f"Unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}") from None


def _normalise(name: str, value: Any) -> Any:
    # YAML/JSON give lists, and integers where a float is meant ([0, 0.999]); torch wants a tuple of floats.
    if name == "betas" and isinstance(value, list | tuple):
        return tuple(float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value)
    return value


def resolve_settings(name: str, preset: str = "paper", overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The preset's settings with ``overrides`` applied, checked by building the optimiser on a dummy tensor.

    Unknown presets or setting names fail with the valid ones; bad values fail with the optimiser's message.
    """
    info = get_optimizer(name)
    if preset not in info.presets:
        raise ValueError(f"Invalid preset {preset!r}; valid: {', '.join(info.presets)}")
    overrides = dict(overrides or {})
    if "lr" in overrides:
        raise ValueError("Invalid setting 'lr': the learning rate is the sweep's axis, set it as the lr grid")
    valid = info.hyperparameters
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"Invalid setting(s) {', '.join(unknown)} for optimizer {name!r}; valid: {', '.join(valid)}"
        )
    settings = {key: _normalise(key, value) for key, value in {**info.presets[preset], **overrides}.items()}
    probe = torch.zeros(2, 2, requires_grad=True)
    try:
        info.factory([probe], lr=info.default_lr, **settings)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid settings for optimizer {name!r}: {exc}") from exc
    return settings


def build(
    name: str,
    params: Iterable[Any],
    lr: float | None = None,
    preset: str = "paper",
    **overrides: Any,
) -> torch.optim.Optimizer:
    """Build optimiser ``name`` at ``lr`` (its default when None) with a preset and overrides."""
    info = get_optimizer(name)
    settings = resolve_settings(name, preset, overrides)
    return info.factory(params, lr=info.default_lr if lr is None else lr, **settings)
