"""Task registry: name -> task class, imported lazily so that listing tasks stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from functools import cache
from typing import Any

from nero_study.errors import UnknownTaskError
from nero_study.tasks.base import Task

# name -> "module:Class". Proxy tasks run on a CPU in a minute; paper tasks use the paper's settings.
TASKS: dict[str, str] = {
    # proxies (real data shipped with installed packages)
    "digits-mlp": "nero_study.tasks.digits_mlp:DigitsMLP",
    "digits-vgg": "nero_study.tasks.digits_vgg:DigitsVGG",
    "digits-resnet": "nero_study.tasks.digits_resnet:DigitsResNet",
    "digits-deep-mlp": "nero_study.tasks.digits_deep_mlp:DigitsDeepMLP",
    "digits-gan": "nero_study.tasks.digits_gan:DigitsGAN",
    "text-lm": "nero_study.tasks.text_lm:TextLM",
    "seq2seq": "nero_study.tasks.seq2seq:Seq2Seq",
    "ppo-cartpole": "nero_study.tasks.ppo_cartpole:PPOCartPole",
    # the paper's tasks (data from NERO_STUDY_DATA_DIR in each data set's standard format)
    "cifar10-vgg11": "nero_study.tasks.cifar10_vgg11:Cifar10VGG11",
    "cifar10-resnet18": "nero_study.tasks.cifar10_resnet18:Cifar10ResNet18",
    "wikitext2-transformer": "nero_study.tasks.wikitext2_transformer:WikiText2Transformer",
    "translation-transformer": "nero_study.tasks.translation_transformer:TranslationTransformer",
    "cifar10-cgan": "nero_study.tasks.cifar10_cgan:Cifar10CGAN",
    "ppo-pong": "nero_study.tasks.ppo_pong:PPOPong",
    "mnist-mlp100": "nero_study.tasks.mnist_mlp100:MnistMLP100",
    "imagenet-resnet50": "nero_study.tasks.imagenet_resnet50:ImageNetResNet50",
}


def task_names() -> list[str]:
    return list(TASKS)


@cache
def get_task(name: str) -> Task:
    """The task instance for ``name``; unknown names fail with the list of valid ones."""
    if name not in TASKS:
        raise UnknownTaskError(f"Unknown task {name!r}; valid: {', '.join(TASKS)}")
    module_name, class_name = TASKS[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()


def list_tasks() -> list[Task]:
    return [get_task(name) for name in TASKS]


def task_caveats(names: Iterable[str]) -> dict[str, str]:
    """The known limits (``Task.caveat``) of the named tasks that have one; unknown names are left out.

    Listings, the report and the sweep page show them beside the task's results."""
    caveats = {}
    for name in names:
        try:
            caveat = get_task(str(name)).caveat
        except UnknownTaskError:
            continue
        if caveat:
            caveats[str(name)] = caveat
    return caveats


def optimizer_task_overrides(optimizer: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task and network, the settings a task gives ``optimizer`` on top of the registry's ``paper``
    preset (``Task.paper_settings``), as JSON values: what the optimiser listings show beside its presets.

    Tasks whose module cannot be imported in this installation are left out.
    """
    from nero_study.tasks.base import settings_as_json

    overrides: dict[str, dict[str, dict[str, Any]]] = {}
    for name in TASKS:
        try:
            task = get_task(name)
        except ImportError:
            continue
        per_network = {
            network: values for network in task.networks if (values := task.paper_overrides(optimizer, network))
        }
        if per_network:
            overrides[name] = settings_as_json(per_network)
    return overrides
