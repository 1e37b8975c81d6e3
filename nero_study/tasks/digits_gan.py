"""digits-gan: an MLP GAN with the hinge loss on scikit-learn's real 8x8 digits (proxy task).

The CPU-minute stand-in for the paper's class-conditional BigGAN-like GAN on CIFAR-10 (Liu et al. 2021,
Fig. 5: hinge loss, the same optimiser for generator and discriminator, FID). Here: an unconditional MLP
generator (noise -> 128 -> 256 -> 64 pixels, ReLU, tanh output) and discriminator (64 -> 256 -> 128 -> 1,
LeakyReLU 0.2), one discriminator step then one generator step per batch, both trained by the trial's
optimiser at the trial's learning rate, constant lr.

Metric: the Fréchet distance (the formula of FID) between the 357 real test digits and generated digits
(fixed noise drawn once per trial), both embedded by the last hidden layer of a fixed digits classifier.
That classifier is trained once per process, deterministically (its own seed, Adam at fixed settings,
whatever the trial's optimiser and seed), so every trial is scored by the same yardstick. Lower is better;
``chance_metric`` is the distance of an untrained generator (measured at seed 0: about 650; each trial's own
step-0 value is its ``initial_metric``).

Divergence: the discriminator's hinge loss is >= 0 and starts near 2, so it is the loss checked against
``divergence_factor`` x its start; the generator's loss (-D(G(z)), which may be negative) is checked for
NaN/inf only. The curve's ``train_loss`` is the discriminator's loss.

Budgets: ``smoke`` a few steps (tests); ``proxy`` 40 epochs of batch 64 (880 steps per network);
``paper`` the proxy with 3x the epochs (the paper's own setting is the cifar10-cgan task).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nero_study.data.digits import DIGITS_CLASSES, DigitsSplit, load_digits_split
from nero_study.tasks.base import Diverged, Task, TrialContext
from nero_study.tasks.common import minibatch_indices, steps_per_epoch
from nero_study.tasks.models_small import check_positive

# The fixed feature classifier: its own seed and settings, independent of every trial.
FEATURE_CLASSIFIER_SEED = 1234
FEATURE_CLASSIFIER_EPOCHS = 20
FEATURE_CLASSIFIER_BATCH = 64
FEATURE_CLASSIFIER_LR = 1e-3


class Generator(nn.Module):
    """Noise (N, noise_dim) -> flat 8x8 images (N, 64) with pixels in [-1, 1]."""

    def __init__(self, noise_dim: int = 32, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(noise_dim, width),
            nn.ReLU(),
            nn.Linear(width, 2 * width),
            nn.ReLU(),
            nn.Linear(2 * width, 64),
            nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.net(noise)


class Discriminator(nn.Module):
    """Flat 8x8 images with pixels in [-1, 1] -> one unbounded score per image (hinge loss)."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, 2 * width),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * width, width),
            nn.LeakyReLU(0.2),
            nn.Linear(width, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1)


class FeatureClassifier(nn.Module):
    """A digits MLP 64-128-64-10 (ReLU); :meth:`features` is its last hidden layer (64-d)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, DIGITS_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@functools.cache
def feature_classifier() -> FeatureClassifier:
    """The fixed yardstick: trained once per process with a fixed seed and Adam, then frozen (CPU).

    Run under a forked torch RNG so that training it (in whichever trial comes first) leaves the trial's
    own random state untouched: a trial's result does not depend on whether the cache was warm.
    """
    data = load_digits_split()
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(FEATURE_CLASSIFIER_SEED)
        generator = torch.Generator().manual_seed(FEATURE_CLASSIFIER_SEED)
        model = FeatureClassifier()
        optimizer = torch.optim.Adam(model.parameters(), lr=FEATURE_CLASSIFIER_LR)
        model.train()
        for _ in range(FEATURE_CLASSIFIER_EPOCHS):
            for index in minibatch_indices(len(data.train_x), FEATURE_CLASSIFIER_BATCH, generator):
                loss = nn.functional.cross_entropy(model(data.train_x[index]), data.train_y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    model.eval()
    model.requires_grad_(False)
    return model


def _feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = features.double()
    return features.mean(dim=0), torch.cov(features.T)


@functools.cache
def _real_test_statistics() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits_split()
    with torch.no_grad():
        return _feature_statistics(feature_classifier().features(data.test_x))


def frechet_distance(
    mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor, cov_b: torch.Tensor
) -> float:
    """``|mean_a - mean_b|^2 + Tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2))`` between two Gaussians (float64).

    The trace of the matrix square root is the sum of the square roots of the eigenvalues of the symmetric
    ``cov_a^(1/2) cov_b cov_a^(1/2)``, which avoids a non-symmetric ``sqrtm``.
    """
    mean_a, cov_a, mean_b, cov_b = (t.double() for t in (mean_a, cov_a, mean_b, cov_b))
    values, vectors = torch.linalg.eigh(cov_a)
    sqrt_a = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    difference = mean_a - mean_b
    return float(difference @ difference + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_sqrt)


@torch.no_grad()
def generator_frechet_distance(generator: Generator, noise: torch.Tensor, data: DigitsSplit) -> float:
    """Fréchet distance of ``generator(noise)`` to the real test digits in the fixed classifier's features."""
    was_training = generator.training
    generator.eval()
    pixels = (generator(noise).float().cpu() + 1) / 2
    generator.train(was_training)
    if not torch.isfinite(pixels).all():
        return math.nan
    fake_mean, fake_cov = _feature_statistics(feature_classifier().features(data.standardise(pixels)))
    real_mean, real_cov = _real_test_statistics()
    return frechet_distance(real_mean, real_cov, fake_mean, fake_cov)


@dataclass(frozen=True)
class DigitsGANConfig:
    """Network sizes, batch and epochs (passes over the 1440 training digits); ``max_steps`` cuts a run."""

    noise_dim: int = 32
    width: int = 128
    batch_size: int = 64
    epochs: int = 40
    evals_per_epoch: int = 1
    eval_samples: int = 1000
    max_steps: int | None = None

    def __post_init__(self) -> None:
        check_positive(
            self, "noise_dim", "width", "batch_size", "epochs", "evals_per_epoch", "eval_samples", "max_steps"
        )


class DigitsGAN(Task):
    name = "digits-gan"
    description = (
        "MLP GAN, hinge loss, on scikit-learn's 8x8 digits; Fréchet distance in a fixed classifier's features"
    )
    metric_name = "frechet_distance"
    lower_is_better = True
    chance_metric = 650.0
    divergence_factor = 10.0
    budgets: ClassVar[dict[str, DigitsGANConfig]] = {
        "smoke": DigitsGANConfig(width=32, epochs=1, evals_per_epoch=2, eval_samples=200, max_steps=12),
        "proxy": DigitsGANConfig(),
        "paper": DigitsGANConfig(epochs=120),
    }

    def train(self, config: DigitsGANConfig, ctx: TrialContext) -> None:
        data = load_digits_split()
        device = ctx.device
        generator = Generator(config.noise_dim, config.width).to(device)
        discriminator = Discriminator(config.width).to(device)
        optimizer_g = ctx.build_optimizer(generator.parameters())
        optimizer_d = ctx.build_optimizer(discriminator.parameters())
        eval_noise = torch.randn(config.eval_samples, config.noise_dim, generator=ctx.generator).to(device)
        real_images = (data.train_pixels * 2 - 1).to(device)
        per_epoch = steps_per_epoch(len(real_images), config.batch_size)
        total_steps = config.epochs * per_epoch
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        eval_every = max(1, per_epoch // config.evals_per_epoch)

        def evaluate(step: int, loss: float) -> None:
            metric = generator_frechet_distance(generator, eval_noise, data)
            ctx.evaluate(step=step, epoch=step / per_epoch, train_loss=loss, metric=metric)

        step, last_loss = 0, math.nan
        evaluate(0, last_loss)
        while step < total_steps:
            for index in minibatch_indices(len(real_images), config.batch_size, ctx.generator):
                if step >= total_steps:
                    break
                real = real_images[index.to(device)]
                noise = torch.randn(len(index), config.noise_dim, generator=ctx.generator).to(device)
                fake = generator(noise)
                loss_d = (
                    torch.relu(1 - discriminator(real)).mean()
                    + torch.relu(1 + discriminator(fake.detach())).mean()
                )
                optimizer_d.zero_grad(set_to_none=True)
                loss_d.backward()
                optimizer_d.step()

                discriminator.requires_grad_(False)  # the generator's step needs no discriminator grads
                loss_g = -discriminator(fake).mean()
                optimizer_g.zero_grad(set_to_none=True)
                loss_g.backward()
                optimizer_g.step()
                discriminator.requires_grad_(True)

                step += 1
                last_loss = ctx.check_loss(loss_d)
                if not math.isfinite(float(loss_g.detach())):
                    raise Diverged(f"generator loss became {float(loss_g)} at step {step}")
                if step % eval_every == 0 and step < total_steps:
                    evaluate(step, last_loss)
        evaluate(step, last_loss)
