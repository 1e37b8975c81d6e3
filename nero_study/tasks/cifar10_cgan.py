"""cifar10-cgan: a class-conditional BigGAN-like GAN on CIFAR-10, scored by FID (Liu et al. 2021).

Evidence (the paper's released code, ``jxbz/nero`` ``cGAN/``, forked from ``jxbz/madam``; runs in
``cGAN/figure5.sh``):
- generator (``architecture/generator.py``): base width 64; an 80-d latent split into four chunks of 20;
  the class one-hot, **1000 wide** (only the first 10 used), through a spectrally normalised Linear to an
  80-d embedding; the first chunk through a Linear to a 4x4x256 map; three residual up-blocks
  256 -> 256 -> 128 -> 64 (conditional BatchNorm whose gain and bias are Linear functions of [embedding,
  next chunk], with ``affine=False`` and momentum 0.001; ReLU; nearest 2x upsampling; 3x3 convolutions;
  1x1 learned shortcut where widths change), a self-attention block (``architecture/self_attention.py``:
  1x1 theta/phi to C/8, g to C/2, 2x2 max-pooled keys and values, softmax attention, 1x1 output, added
  with a fixed gain of 1) at 16x16 after the second block, then BatchNorm, ReLU, 3x3 convolution to RGB
  and tanh. 2,183,091 parameters.
- discriminator (``architecture/discriminator.py``): a pre-block (3x3 conv to 64, ReLU, 3x3 conv, 2x2
  average pool, plus a shortcut that average-pools the image and projects it by a 1x1 conv) to 16x16;
  residual blocks (ReLU, 3x3 conv, ReLU, 3x3 conv, then 2x2 average pooling of both branches where they
  downsample; a 1x1 conv shortcut, applied before the pooling, where widths change or they downsample)
  64 -> 128 (-> 8x8), the self-attention block on 128 channels at 8x8, 128 -> 256 (-> 4x4),
  256 -> 256; ReLU and global **average** pooling to 256 features; the score is
  ``out_scale * (linear(features) + <embedding(label), features>)`` with ``out_scale = 10`` and a
  **1000-row** class embedding (projection). 2,644,129 parameters.
- every convolution, Linear and the embedding is spectrally normalised with the classic
  ``torch.nn.utils.spectral_norm`` the released code uses (one power iteration per training forward, u
  and v drawn at random when the layer is built). Initialisation (``architecture/init_weight.py``,
  applied to both networks): weights of every convolution, Linear and Embedding orthogonal with gain 1,
  their biases N(0, 0.01^2); BatchNorm gains 1 and biases N(0, 0.01^2).
- training (``main.py``): hinge loss (D: ``relu(1 - D(real)) + relu(1 + D(fake))``, the released form
  plus a constant 2; G: ``-D(fake)``), one D step then one G step per batch with fresh latents, batch 256,
  random horizontal flip, pixels scaled to [-1, 1]; 120 epochs with the learning rate divided by 10 at
  epoch 100 (the code's 121-epoch loop measures FID last before its final epoch).
- optimisers (``main.py`` lines 136-150), one per network at the trial's lr: Adam with betas (0, 0.999) for
  the generator but (0.9, 0.999) for the discriminator; LAMB (0, 0.999) for both; SGD momentum 0; Nero's
  defaults. The task names its networks ``generator`` and ``discriminator`` and declares the
  discriminator's Adam betas as its ``network_paper_settings``.
- metric: FID every 10 epochs between 10,000 generated images (labels those of the reference images,
  generator in eval mode) and a reference set: the 10,000 test images (``fid_reference="test"``) or the
  first 10,000 training images (``"train"``; the code logs both and leaves open which the paper's figure
  used, as it does final vs best: the trial's ``metric`` is the FID after the last epoch, ``best_metric``
  the lowest along the way). Images were written to PNG with ``save_image(normalize=True)``, i.e. each
  stretched to its own min/max and quantised to 8 bits (``fid_per_image_minmax``), then scored by
  pytorch-fid's Inception at 299 px (:mod:`nero_study.tasks.fid`).

The Inception weights are a state-dict file given by path (``inception_weights``; default
``<NERO_STUDY_DATA_DIR>/pt_inception-2015-12-05.pth``); nothing is downloaded. ``inception_size`` below
299 (minimum 75) gives a cheaper, non-standard FID for reduced budgets. The adversarial losses have no
meaningful "far above the start" level, so only non-finite losses or FID count as divergence.

Budgets: ``paper`` the above; ``proxy`` width 8 on the first 2,048 training images, 3 epochs of batch 64
(96 steps, lr /10 at epoch 2.5), FID of 250 samples at 75 px every epoch — CPU-feasible, and only a
coarse, non-standard FID; ``smoke`` two steps of a width-8 pair and an 8-sample FID at 75 px.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from nero_study.data.cifar10 import CIFAR10_CLASSES, check_cifar10, load_cifar10, random_flip
from nero_study.data.paths import data_dir
from nero_study.tasks.base import Task, TaskConfigError, TrialContext
from nero_study.tasks.common import StepSchedule, minibatch_indices, set_lr_factor
from nero_study.tasks.fid import (
    MIN_INPUT_SIZE,
    fid_pixels,
    frechet_distance_of_features,
    inception_features,
    load_fid_inception,
    resolve_inception_weights,
)

CLASS_TABLE_SIZE = 1000
"""Rows of the class tables of both networks in the paper's code (CIFAR-10 uses the first 10)."""


def sn(module: nn.Module) -> nn.Module:
    """Spectral normalisation as the paper's code applies it (``torch.nn.utils.spectral_norm``)."""
    return spectral_norm(module)


@torch.no_grad()
def init_weights_(model: nn.Module) -> None:
    """The released ``init_weight.py`` applied to every layer of ``model``: orthogonal weights (gain 1) and
    N(0, 0.01^2) biases for convolutions, Linears and Embeddings; BatchNorm gains 1 and biases N(0, 0.01^2).

    Under spectral normalisation the trained tensor is ``weight_orig``, which is what gets initialised.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.normal_(module.bias, 0.0, 0.01)
        elif isinstance(module, nn.Conv2d | nn.Linear | nn.Embedding):
            nn.init.orthogonal_(getattr(module, "weight_orig", module.weight), gain=1.0)
            if getattr(module, "bias", None) is not None:
                nn.init.normal_(module.bias, 0.0, 0.01)


class SelfAttention(nn.Module):
    """Non-local block: attention over positions with 2x2 max-pooled keys/values, ``x + gain * out``."""

    def __init__(self, channels: int, gain: float = 1.0) -> None:
        super().__init__()
        if channels < 8:
            raise TaskConfigError(f"Invalid width: self-attention needs at least 8 channels, got {channels}")
        self.theta = sn(nn.Conv2d(channels, channels // 8, 1))
        self.phi = sn(nn.Conv2d(channels, channels // 8, 1))
        self.g = sn(nn.Conv2d(channels, channels // 2, 1))
        self.out = sn(nn.Conv2d(channels // 2, channels, 1))
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        queries = self.theta(x).flatten(2).transpose(1, 2)  # (n, hw, c/8)
        keys = F.max_pool2d(self.phi(x), 2).flatten(2)  # (n, c/8, hw/4)
        values = F.max_pool2d(self.g(x), 2).flatten(2)  # (n, c/2, hw/4)
        attention = torch.softmax(queries @ keys, dim=-1)  # (n, hw, hw/4)
        out = (values @ attention.transpose(1, 2)).view(n, -1, height, width)
        return x + self.gain * self.out(out)


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without affine parameters, then ``* (1 + gain(cond)) + bias(cond)``."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.gain = sn(nn.Linear(cond_dim, channels))
        self.bias = sn(nn.Linear(cond_dim, channels))
        self.norm = nn.BatchNorm2d(channels, momentum=0.001, affine=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gain = self.gain(cond)[:, :, None, None]
        bias = self.bias(cond)[:, :, None, None]
        return self.norm(x) * (1 + gain) + bias


class GeneratorBlock(nn.Module):
    """CBN, ReLU, 2x nearest upsample, 3x3 conv, CBN, ReLU, 3x3 conv; upsampled (1x1-projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm0 = ConditionalBatchNorm(in_channels, cond_dim)
        self.conv0 = sn(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.norm1 = ConditionalBatchNorm(out_channels, cond_dim)
        self.conv1 = sn(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.shortcut = sn(nn.Conv2d(in_channels, out_channels, 1)) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        out = F.interpolate(F.relu(self.norm0(x, cond)), scale_factor=2, mode="nearest")
        out = self.conv0(out)
        out = self.conv1(F.relu(self.norm1(out, cond)))
        return out + skip


class Generator(nn.Module):
    """Class-conditional generator of 32x32 RGB images in [-1, 1] (see the module docstring)."""

    def __init__(
        self,
        width: int = 64,
        class_table_size: int = CLASS_TABLE_SIZE,
        z_chunk: int = 20,
        embedding_size: int = 80,
    ) -> None:
        super().__init__()
        self.width = width
        self.class_table_size = class_table_size
        self.z_chunk = z_chunk
        cond_dim = z_chunk + embedding_size
        self.fc = sn(nn.Linear(z_chunk, 4 * 4 * 4 * width))
        self.embedding = sn(nn.Linear(class_table_size, embedding_size))
        self.block0 = GeneratorBlock(4 * width, 4 * width, cond_dim)
        self.block1 = GeneratorBlock(4 * width, 2 * width, cond_dim)
        self.attention = SelfAttention(2 * width)
        self.block2 = GeneratorBlock(2 * width, width, cond_dim)
        self.norm = nn.BatchNorm2d(width)
        self.to_rgb = sn(nn.Conv2d(width, 3, 3, padding=1))
        init_weights_(self)

    @property
    def z_dim(self) -> int:
        """Four chunks: one for the 4x4 map, one per up-block's conditioning."""
        return 4 * self.z_chunk

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(z, self.z_chunk, dim=1)
        embedded = self.embedding(F.one_hot(labels, self.class_table_size).to(z.dtype))
        conds = [torch.cat([embedded, chunk], dim=1) for chunk in chunks[1:]]
        x = self.fc(chunks[0]).view(len(z), 4 * self.width, 4, 4)
        x = self.block0(x, conds[0])  # 8x8
        x = self.block1(x, conds[1])  # 16x16
        x = self.attention(x)
        x = self.block2(x, conds[2])  # 32x32
        return torch.tanh(self.to_rgb(F.relu(self.norm(x))))


class DiscriminatorBlock(nn.Module):
    """The released discriminator's ``ResBlock``: ReLU, 3x3 conv, ReLU, 3x3 conv, (2x2 average pool); the
    shortcut is a 1x1 conv where widths change or the block downsamples, applied before its pooling."""

    def __init__(self, in_channels: int, out_channels: int, *, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv0 = sn(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.conv1 = sn(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        needs_projection = in_channels != out_channels or downsample
        self.shortcut = sn(nn.Conv2d(in_channels, out_channels, 1)) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        out = self.conv1(F.relu(self.conv0(F.relu(x))))
        if self.downsample:
            out, skip = F.avg_pool2d(out, 2), F.avg_pool2d(skip, 2)
        return out + skip


class Discriminator(nn.Module):
    """The released projection discriminator for 32x32 images: a score per (image, label).

    A pre-block to 16x16 (``pre_conv`` + ``pre_skip``), blocks to 8x8, self-attention at 8x8, blocks to
    4x4, ReLU, global average pooling, ``out_scale * (linear + projection on the class embedding)``.
    """

    def __init__(self, width: int = 64, class_table_size: int = CLASS_TABLE_SIZE, out_scale: float = 10.0) -> None:
        super().__init__()
        self.out_scale = out_scale
        self.stem_conv0 = sn(nn.Conv2d(3, width, 3, padding=1))
        self.stem_conv1 = sn(nn.Conv2d(width, width, 3, padding=1))
        self.stem_skip = sn(nn.Conv2d(3, width, 1))
        self.block0 = DiscriminatorBlock(width, 2 * width, downsample=True)  # 8x8
        self.attention = SelfAttention(2 * width)
        self.block1 = DiscriminatorBlock(2 * width, 4 * width, downsample=True)  # 4x4
        self.block2 = DiscriminatorBlock(4 * width, 4 * width, downsample=False)
        self.linear = sn(nn.Linear(4 * width, 1))
        self.embedding = sn(nn.Embedding(class_table_size, 4 * width))
        init_weights_(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        stem = F.avg_pool2d(self.stem_conv1(F.relu(self.stem_conv0(images))), 2)
        x = stem + self.stem_skip(F.avg_pool2d(images, 2))  # 16x16
        x = self.block2(self.block1(self.attention(self.block0(x))))
        features = F.relu(x).mean(dim=(2, 3))
        score = self.linear(features).squeeze(1) + (self.embedding(labels) * features).sum(dim=1)
        return self.out_scale * score


@dataclass(frozen=True)
class Cifar10CGANConfig:
    """GAN shape, schedule (epochs as time), and the FID protocol; ``max_steps`` cuts a run short."""

    width: int = 64
    z_chunk: int = 20
    embedding_size: int = 80
    class_table_size: int = CLASS_TABLE_SIZE
    d_out_scale: float = 10.0
    epochs: int = 120
    batch_size: int = 256
    lr_decay_epochs: tuple[float, ...] = (100.0,)
    lr_gamma: float = 0.1
    d_steps_per_g: int = 1
    flip: bool = True
    fid_every_epochs: float = 10.0
    fid_samples: int = 10_000
    fid_reference: str = "test"
    fid_batch_size: int = 256
    fid_per_image_minmax: bool = True
    inception_weights: str | None = None
    inception_size: int = 299
    train_limit: int | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_decay_epochs", tuple(float(e) for e in self.lr_decay_epochs))
        for name in (
            "width",
            "z_chunk",
            "embedding_size",
            "class_table_size",
            "d_out_scale",
            "epochs",
            "batch_size",
            "lr_gamma",
            "d_steps_per_g",
            "fid_every_epochs",
            "fid_batch_size",
            "train_limit",
            "max_steps",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise TaskConfigError(f"Invalid {name}: {value}; it must be positive")
        if self.width < 8:
            raise TaskConfigError(f"Invalid width: {self.width}; self-attention needs a width of at least 8")
        if self.class_table_size < CIFAR10_CLASSES:
            raise TaskConfigError(
                f"Invalid class_table_size: {self.class_table_size}; it needs a row for each of the "
                f"{CIFAR10_CLASSES} classes"
            )
        if self.fid_samples < 2:
            raise TaskConfigError(f"Invalid fid_samples: {self.fid_samples}; the FID needs at least 2")
        if self.fid_reference not in ("test", "train"):
            raise TaskConfigError(f"Invalid fid_reference: {self.fid_reference!r}; valid: test, train")
        if self.inception_size < MIN_INPUT_SIZE:
            raise TaskConfigError(
                f"Invalid inception_size: {self.inception_size}; Inception-v3 needs at least {MIN_INPUT_SIZE}"
            )


PAPER = Cifar10CGANConfig()


class Cifar10CGAN(Task):
    name = "cifar10-cgan"
    description = (
        "Class-conditional BigGAN-like GAN (spectral norm, self-attention, hinge loss) on CIFAR-10; FID"
    )
    metric_name = "fid"
    lower_is_better = True
    # Nominal FID of an untrained generator: noise-like images score in the hundreds against CIFAR-10.
    chance_metric = 300.0
    kind = "paper"
    default_device = "auto"
    divergence_factor = None
    networks = ("generator", "discriminator")
    network_paper_settings: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {
        "discriminator": {"adam": {"betas": (0.9, 0.999)}}
    }
    paper_settings_source = "cGAN/main.py lines 136-138 (optD = Adam(betas=(0.9, 0.999)), optG betas (0.0, 0.999))"
    budgets: ClassVar[dict[str, Cifar10CGANConfig]] = {
        "smoke": dataclasses.replace(
            PAPER,
            width=8,
            epochs=1,
            batch_size=4,
            max_steps=2,
            fid_samples=8,
            fid_batch_size=8,
            inception_size=MIN_INPUT_SIZE,
        ),
        "proxy": dataclasses.replace(
            PAPER,
            width=8,
            epochs=3,
            batch_size=64,
            lr_decay_epochs=(100 / 120 * 3,),
            train_limit=2048,
            fid_every_epochs=1.0,
            fid_samples=250,
            fid_batch_size=125,
            inception_size=MIN_INPUT_SIZE,
        ),
        "paper": PAPER,
    }

    def check_data(self, config: Cifar10CGANConfig) -> None:
        check_cifar10()
        resolve_inception_weights(config.inception_weights, data_dir("the FID Inception weights"))

    def train(self, config: Cifar10CGANConfig, ctx: TrialContext) -> None:
        device = ctx.device
        data = load_cifar10(train_limit=config.train_limit)
        train_images = data.train_images.to(device)
        train_labels = data.train_labels.to(device)
        if config.fid_reference == "test":
            reference_images, reference_labels = data.test_images, data.test_labels
        else:
            reference_images, reference_labels = data.train_images, data.train_labels
        reference_images = reference_images[: config.fid_samples]
        reference_labels = reference_labels[: config.fid_samples].to(device)
        if len(reference_images) < 2:
            raise TaskConfigError("the FID needs at least 2 reference images")

        generator = Generator(config.width, config.class_table_size, config.z_chunk, config.embedding_size)
        discriminator = Discriminator(config.width, config.class_table_size, config.d_out_scale)
        generator.to(device)
        discriminator.to(device)

        weights = resolve_inception_weights(config.inception_weights, data_dir("the FID Inception weights"))
        inception = load_fid_inception(weights, config.inception_size).to(device)
        reference_features = inception_features(
            inception,
            fid_pixels(_to_signed(reference_images.to(device)), per_image_minmax=config.fid_per_image_minmax),
            batch_size=config.fid_batch_size,
        )
        optimizer_g = ctx.build_optimizer(generator.parameters(), network="generator")
        optimizer_d = ctx.build_optimizer(discriminator.parameters(), network="discriminator")
        base_lrs_g = [group["lr"] for group in optimizer_g.param_groups]
        base_lrs_d = [group["lr"] for group in optimizer_d.param_groups]
        schedule = StepSchedule(0.0, config.lr_decay_epochs, config.lr_gamma)
        # Evaluation noise has its own stream, so the FID cadence never changes the training run.
        eval_generator = torch.Generator().manual_seed(ctx.spec.seed + 1)

        def latent(n: int, stream: torch.Generator) -> torch.Tensor:
            return torch.randn(n, generator.z_dim, generator=stream).to(device)

        def evaluate() -> float:
            generator.eval()
            pixels = []
            with torch.no_grad():
                for start in range(0, len(reference_labels), config.fid_batch_size):
                    labels = reference_labels[start : start + config.fid_batch_size]
                    fake = generator(latent(len(labels), eval_generator), labels)
                    pixels.append(fid_pixels(fake, per_image_minmax=config.fid_per_image_minmax))
            generator.train()
            features = inception_features(inception, torch.cat(pixels), batch_size=config.fid_batch_size)
            return frechet_distance_of_features(reference_features, features)

        _train_gan(
            ctx,
            config,
            generator=generator,
            discriminator=discriminator,
            optimizers=(optimizer_g, optimizer_d),
            base_lrs=(base_lrs_g, base_lrs_d),
            schedule=schedule,
            train_images=train_images,
            train_labels=train_labels,
            latent=latent,
            evaluate=evaluate,
        )


def _to_signed(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` pixels to ``float32`` in [-1, 1] (the paper's ``Normalize(0.5, 0.5)``)."""
    return images.float() / 127.5 - 1.0


def _train_gan(
    ctx: TrialContext,
    config: Cifar10CGANConfig,
    *,
    generator: Generator,
    discriminator: Discriminator,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    base_lrs: tuple[list[float], list[float]],
    schedule: StepSchedule,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    latent,  # noqa: ANN001 - (n, stream) -> latent batch on the device
    evaluate,  # noqa: ANN001 - () -> FID
) -> None:
    """The hinge-loss loop: per batch one D step, then (every ``d_steps_per_g``) one G step; FID evaluations.

    Reports the discriminator's hinge loss as the training loss.
    """
    optimizer_g, optimizer_d = optimizers
    steps_per_epoch = max(1, math.ceil(len(train_images) / config.batch_size))
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    eval_every = max(1, round(config.fid_every_epochs * steps_per_epoch))

    step = 0
    last_loss = math.nan
    ctx.evaluate(step=0, epoch=0.0, train_loss=math.nan, metric=evaluate())
    generator.train()
    discriminator.train()
    for _epoch in range(config.epochs):
        for index in minibatch_indices(len(train_images), config.batch_size, ctx.generator, drop_last=False):
            if step >= total_steps:
                break
            factor = schedule(step / steps_per_epoch)
            set_lr_factor(optimizer_g, base_lrs[0], factor)
            set_lr_factor(optimizer_d, base_lrs[1], factor)
            index = index.to(train_images.device)
            real = _to_signed(train_images[index])
            if config.flip:
                real = random_flip(real, ctx.generator)
            labels = train_labels[index]

            with torch.no_grad():
                fake = generator(latent(len(labels), ctx.generator), labels)
            loss_d = (
                F.relu(1 + discriminator(fake, labels)).mean()
                + F.relu(1 - discriminator(real, labels)).mean()
            )
            optimizer_d.zero_grad(set_to_none=True)
            loss_d.backward()
            optimizer_d.step()

            if step % config.d_steps_per_g == 0:
                loss_g = -discriminator(generator(latent(len(labels), ctx.generator), labels), labels).mean()
                optimizer_g.zero_grad(set_to_none=True)
                loss_g.backward()
                optimizer_g.step()
                ctx.check_loss(loss_g)
            step += 1
            last_loss = ctx.check_loss(loss_d)
            if step % eval_every == 0 and step < total_steps:
                ctx.evaluate(step=step, epoch=step / steps_per_epoch, train_loss=last_loss, metric=evaluate())
        if step >= total_steps:
            break
    ctx.evaluate(step=step, epoch=step / steps_per_epoch, train_loss=last_loss, metric=evaluate())
