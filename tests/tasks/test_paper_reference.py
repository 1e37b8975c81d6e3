"""Each paper task's ``paper`` configuration against the released code it reproduces (jxbz/nero, HEAD 32436c0).

One test per task compares the budget's settings and the optimiser settings every optimiser gets on that task
(through :func:`nero_study.tasks.base.optimizer_settings`, the function trials, listings and the store use)
with the values the reference scripts pass; each docstring names the files and lines read. Schedules are
checked against torch's own schedulers driven the way the reference scripts drive them.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from nero_study.tasks import get_task
from nero_study.tasks.base import optimizer_settings
from nero_study.tasks.cifar10_cgan import Discriminator, Generator
from nero_study.tasks.cifar10_resnet18 import ResNet18Cifar
from nero_study.tasks.cifar10_vgg11 import VGG11, WarmupMultiStepSchedule
from nero_study.tasks.imagenet_resnet50 import ResNet50, WarmupCosineSchedule
from nero_study.tasks.mnist_mlp100 import DeepMLP
from nero_study.tasks.wikitext2_transformer import BestValidationCheckpoint, WikiText2Config, WordTransformerLM

# The registry's `paper` preset: no momentum anywhere (what the CIFAR-10, WikiText-2, translation scripts pass).
PRESET = {
    "nero": {"beta": 0.999, "constraints": True},
    "sgd": {"momentum": 0.0},
    "adam": {"betas": (0.0, 0.999), "eps": 1e-8},
    "lamb": {"betas": (0.0, 0.999), "eps": 1e-6},
}


def settings(task: str, optimizer: str, network: str = "model") -> dict:
    return optimizer_settings(get_task(task), optimizer, "paper")[network]


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- CIFAR-10 classifiers ---------------------------------------------------------------------------------


def test_cifar10_vgg11_paper_configuration_is_the_reference() -> None:
    """cifar/conf/global_settings.py lines 22-23 (EPOCH 200, MILESTONES [100, 150, 180]); cifar/train.py
    line 124 (--b 128), 125 (--warm 5), 132 (--gamma 0.2), 278 (``for epoch in range(1, settings.EPOCH)``:
    199 epochs), 192-202 (optimisers: SGD momentum=args.momentum, Adam/LAMB betas=(args.momentum,
    args.beta)); cifar/figure6.sh (--momentum 0.0 --beta 0.999 --wd 0.0); cifar/utils.py lines 79-83 (crop
    32 padding 4, flip, rotation 15); cifar/train.py lines 155-156 (mean/std)."""
    config = get_task("cifar10-vgg11").config("paper")
    assert (config.epochs, config.batch_size, config.warmup_epochs) == (199, 128, 5.0)
    assert config.milestones == (99.0, 149.0, 179.0) and config.lr_gamma == 0.2
    assert (config.crop_padding, config.flip, config.rotation_degrees) == (4, True, 15.0)
    assert (config.width, config.classifier_width, config.dropout) == (64, 4096, 0.5)
    assert (config.train_limit, config.test_limit, config.max_steps, config.evals_per_epoch) == (None, None, None, 1)
    for optimizer, expected in PRESET.items():
        assert settings("cifar10-vgg11", optimizer) == expected
    model = VGG11(config.width, config.classifier_width)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    # 9,217,728 in the convolutions + 18,923,530 in the 512-4096-4096-10 classifier (cifar/models/vgg.py).
    assert parameter_count(model) == 28_141_258 and parameter_count(model.features) == 9_217_728


def test_cifar10_resnet18_paper_configuration_is_the_reference() -> None:
    """The same script and schedule as VGG-11 (cifar/train.py, cifar/conf/global_settings.py lines 22-23,
    cifar/figure6.sh ``--net resnet18 ... --momentum 0.0 --beta 0.999 --wd 0.0``); the model of
    cifar/models/resnet.py (11,173,962 parameters, 20 BatchNorms, a 3x3 stride-1 stem)."""
    config = get_task("cifar10-resnet18").config("paper")
    vgg = get_task("cifar10-vgg11").config("paper")
    shared = [f.name for f in dataclasses.fields(config) if f.name != "bn_gain_reg"]
    assert {name: getattr(config, name) for name in shared} == {name: getattr(vgg, name) for name in shared}
    assert config.epochs == 199 and config.bn_gain_reg == 0.0
    for optimizer, expected in PRESET.items():
        assert settings("cifar10-resnet18", optimizer) == expected
    model = ResNet18Cifar(config.width)
    assert parameter_count(model) == 11_173_962
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 20


class _WarmUpAsInTheReference(torch.optim.lr_scheduler.LRScheduler):
    """cifar/utils.py lines 147-162: ``base_lr * last_epoch / (total_iters + 1e-8)``."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int) -> None:
        self.total_iters = total_iters
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [base * self.last_epoch / (self.total_iters + 1e-8) for base in self.base_lrs]


def test_cifar_schedule_is_the_reference_scripts_lr_at_every_step() -> None:
    """cifar/train.py lines 46-48 (``warmup_scheduler.step()`` before each batch of epochs <= warm), 225-227
    (``MultiStepLR(milestones, gamma)`` then ``WarmUpLR(iter_per_epoch * warm)``), 278-280
    (``for epoch in range(1, EPOCH): if epoch > warm: train_scheduler.step(epoch)``), run with torch's
    schedulers at 3 steps per epoch; the task's step ``s`` of epoch ``e`` (from 0) must get the same lr."""
    steps_per_epoch, epochs, warm = 3, 199, 5
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    train_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[100, 150, 180], gamma=0.2)
    warmup_scheduler = _WarmUpAsInTheReference(optimizer, steps_per_epoch * warm)
    reference = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # step(epoch) is deprecated in torch, and is what the script calls
        for epoch in range(1, epochs + 1):
            if epoch > warm:
                train_scheduler.step(epoch)
            for _ in range(steps_per_epoch):
                if epoch <= warm:
                    warmup_scheduler.step()
                reference.append(optimizer.param_groups[0]["lr"])
    config = get_task("cifar10-vgg11").config("paper")
    schedule = WarmupMultiStepSchedule(config.warmup_epochs, config.milestones, config.lr_gamma, steps_per_epoch)
    ours = [schedule(step / steps_per_epoch) for step in range(config.epochs * steps_per_epoch)]
    assert len(ours) == len(reference) == 199 * 3
    assert ours == pytest.approx(reference, rel=1e-12, abs=0)
    assert reference[0] == pytest.approx(1 / 15) and reference[14] == pytest.approx(1.0)
    assert reference[99 * 3 - 1] == 1.0 and reference[99 * 3] == pytest.approx(0.2)  # epoch 100 is the first decayed


# --- MNIST 100-layer MLP ------------------------------------------------------------------------------------


def test_mnist_mlp100_paper_configuration_is_the_reference() -> None:
    """mnist/100_layer_mlp.py line 26 (batch 250), 31/36 (normalise 0.1307, 0.3081), 45-59 (100 Linear
    layers of width 784 with biases, ``relu(x) * sqrt(2)``), 78-85 (``Nero(lr)``, ``Lamb(lr)``,
    ``Adam(lr)``, ``SGD(lr)``: each library's defaults, so Adam and LAMB have beta1 = 0.9), 87-88
    (``LambdaLR(0.9 ** epoch)``), 140-145 (width 784, depth 100, bias, 50 epochs, decay 0.9); LAMB's
    defaults in optim/lamb.py line 43 (betas (0.9, 0.999), eps 1e-6)."""
    config = get_task("mnist-mlp100").config("paper")
    assert (config.depth, config.width, config.bias) == (100, 784, True)
    assert (config.epochs, config.batch_size, config.lr_decay) == (50, 250, 0.9)
    assert (config.train_limit, config.test_limit, config.max_steps) == (None, None, None)
    assert settings("mnist-mlp100", "adam") == {"betas": (0.9, 0.999), "eps": 1e-8}
    assert settings("mnist-mlp100", "lamb") == {"betas": (0.9, 0.999), "eps": 1e-6}
    assert settings("mnist-mlp100", "sgd") == {"momentum": 0.0}
    assert settings("mnist-mlp100", "nero") == {"beta": 0.999, "constraints": True}
    model = DeepMLP(config.depth, config.width, bias=config.bias)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 100 and all(m.bias is not None for m in linears)
    assert parameter_count(model) == 99 * (784 * 784 + 784) + 784 * 10 + 10
    assert model.activation_gain == pytest.approx(math.sqrt(2))


# --- ImageNet ResNet-50 -----------------------------------------------------------------------------------


def test_imagenet_resnet50_paper_configuration_is_the_reference() -> None:
    """imagenet/figure4.sh lines 4-6 (``-a resnet50 --sch cos -b 400 --epochs 90 --momentum 0.9 --wd 0.0001``
    for SGD), 9-11 (the same with ``--wd 0.0``: the variant weight_decay=0), 14-16 (Nero ``--momentum 0.0
    --wd 0.0``); imagenet/main.py line 92 (``--warmup-epoch`` 1), 206 (SGD momentum and weight_decay from
    the flags), 210 (``Nero(lr, constraints=True)``), 263-273 and 285-290 (RandomResizedCrop 224 + flip;
    resize 256, centre crop 224; ImageNet mean/std); torchvision's resnet50 (25,557,032 parameters)."""
    config = get_task("imagenet-resnet50").config("paper")
    assert (config.epochs, config.batch_size, config.warmup_epochs) == (90, 400, 1.0)
    assert (config.image_size, config.resize_size) == (224, 256)
    assert (config.width, config.blocks, config.bn_gain_reg) == (64, (3, 4, 6, 3), 0.0)
    assert (config.max_classes, config.max_train_per_class, config.max_val_per_class) == (None, None, None)
    assert settings("imagenet-resnet50", "sgd") == {"momentum": 0.9, "weight_decay": 1e-4}
    assert optimizer_settings(get_task("imagenet-resnet50"), "sgd", "paper", {"weight_decay": 0.0})["model"] == {
        "momentum": 0.9,
        "weight_decay": 0.0,
    }
    assert settings("imagenet-resnet50", "nero") == {"beta": 0.999, "constraints": True}
    assert parameter_count(ResNet50(1000, config.width, config.blocks)) == 25_557_032


@pytest.mark.parametrize("warmup_epochs", [1, 2])
def test_imagenet_schedule_is_the_reference_scripts_lr_at_every_step(warmup_epochs: int) -> None:
    """imagenet/main.py lines 214-218 (``CosineAnnealingLR(T_max=ceil(N / b) * epochs, eta_min=0)``),
    343-346 (``warmup``: ``(n + N * epoch) / (warmup_epoch * N) * lr``), 362-365 (warm-up set before each
    batch of the first epochs) and 398-399 (``scheduler.step()`` after every batch), driven with torch's
    chained CosineAnnealingLR at 7 steps per epoch for 90 epochs."""
    steps_per_epoch, epochs, base_lr = 7, 90, 0.1
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=base_lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps_per_epoch * epochs, eta_min=0.0)
    reference = []
    for epoch in range(epochs):
        for batch in range(steps_per_epoch):
            if epoch < warmup_epochs:
                lr = float(batch + steps_per_epoch * epoch) / float(warmup_epochs * steps_per_epoch) * base_lr
                for group in optimizer.param_groups:
                    group["lr"] = lr
            reference.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    schedule = WarmupCosineSchedule(warmup_epochs, epochs, steps_per_epoch)
    ours = [base_lr * schedule(step / steps_per_epoch) for step in range(epochs * steps_per_epoch)]
    assert ours == pytest.approx(reference, rel=1e-9, abs=1e-15)
    assert reference[0] == 0.0 and reference[-1] < 1e-5 * base_lr


# --- cifar10-cgan -----------------------------------------------------------------------------------------

# Parameters per layer of the released networks, counted by reading cGAN/architecture/discriminator.py,
# generator.py and self_attention.py (nf = 64; conv k x k from a to b: a*b*k*k + b; Linear a -> b: a*b + b).
REFERENCE_DISCRIMINATOR = {
    "stem_conv0": 3 * 64 * 9 + 64,  # pre_conv[0], line 15: 1,792
    "stem_conv1": 64 * 64 * 9 + 64,  # pre_conv[2], line 17: 36,928
    "stem_skip": 3 * 64 + 64,  # pre_skip[1], line 22: 256
    "block0": (64 * 128 * 9 + 128) + (128 * 128 * 9 + 128) + (64 * 128 + 128),  # ResBlock(64, 128, down): 229,760
    "attention": 2 * (128 * 16 + 16) + (128 * 64 + 64) + (64 * 128 + 128),  # NonLocal(128), line 27: 20,704
    "block1": (128 * 256 * 9 + 256) + (256 * 256 * 9 + 256) + (128 * 256 + 256),  # ResBlock(128, 256, down): 918,272
    "block2": 2 * (256 * 256 * 9 + 256),  # ResBlock(256, 256, no down: identity shortcut), line 29: 1,180,160
    "linear": 256 + 1,  # line 33
    "embedding": 1000 * 256,  # nn.Embedding(1000, 4 * nf), line 35
}
REFERENCE_GENERATOR = {
    "fc": 20 * 4096 + 4096,  # line 19: 86,016
    "embedding": 1000 * 80 + 80,  # sn(nn.Linear(1000, 80)), line 20: 80,080
    "block0": 2 * (256 * 256 * 9 + 256) + 4 * (100 * 256 + 256),  # ResBlock(256, 256): 1,283,584
    "block1": (256 * 128 * 9 + 128) + (128 * 128 * 9 + 128) + (256 * 128 + 128)
    + 2 * (100 * 256 + 256) + 2 * (100 * 128 + 128),  # ResBlock(256, 128): 553,088
    "attention": 20_704,  # NonLocal(128), line 24
    "block2": (128 * 64 * 9 + 64) + (64 * 64 * 9 + 64) + (128 * 64 + 64)
    + 2 * (100 * 128 + 128) + 2 * (100 * 64 + 64),  # ResBlock(128, 64): 157,760
    "norm": 2 * 64,  # bn_img, affine, line 27
    "to_rgb": 64 * 3 * 9 + 3,  # conv_img, line 29: 1,731
}


def test_cgan_networks_have_the_released_layers_parameter_by_parameter() -> None:
    """cGAN/architecture/discriminator.py (pre_conv, pre_skip, body with NonLocal(128) after the first
    ResBlock, linear, the 1000-row embedding), generator.py (the 1000-wide one-hot Linear) and
    self_attention.py: per-layer counts in REFERENCE_DISCRIMINATOR / REFERENCE_GENERATOR, totals 2,644,129
    and 2,183,091."""
    discriminator, generator = Discriminator(), Generator()
    assert {name: parameter_count(child) for name, child in discriminator.named_children()} == REFERENCE_DISCRIMINATOR
    assert {name: parameter_count(child) for name, child in generator.named_children()} == REFERENCE_GENERATOR
    assert parameter_count(discriminator) == sum(REFERENCE_DISCRIMINATOR.values()) == 2_644_129
    assert parameter_count(generator) == sum(REFERENCE_GENERATOR.values()) == 2_183_091


def test_cgan_discriminator_computes_the_released_score() -> None:
    """cGAN/architecture/discriminator.py lines 40-50: ``out = pre_conv(x) + pre_skip(x)``; body (ResBlocks
    with the 1x1 shortcut before pooling, lines 68-80; NonLocal at 8x8; ReLU; AdaptiveAvgPool2d(1));
    ``(linear(out) + (out * embed(class)).sum(1)) * out_scale`` with out_scale = 10 (line 8)."""
    torch.manual_seed(0)
    d = Discriminator(width=8).eval()
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    f = torch.nn.functional
    x = f.avg_pool2d(d.stem_conv1(f.relu(d.stem_conv0(images))), 2) + d.stem_skip(f.avg_pool2d(images, 2))
    assert x.shape == (2, 8, 16, 16)
    block = d.block0
    x = f.avg_pool2d(block.conv1(f.relu(block.conv0(f.relu(x)))), 2) + f.avg_pool2d(block.shortcut(x), 2)
    assert x.shape == (2, 16, 8, 8)  # the attention sees 8x8
    x = d.attention(x)
    block = d.block1
    x = f.avg_pool2d(block.conv1(f.relu(block.conv0(f.relu(x)))), 2) + f.avg_pool2d(block.shortcut(x), 2)
    block = d.block2
    assert block.shortcut is None
    x = block.conv1(f.relu(block.conv0(f.relu(x)))) + x
    features = f.relu(x).flatten(2).mean(dim=2)
    expected = 10 * (d.linear(features).squeeze(1) + (d.embedding(labels) * features).sum(dim=1))
    torch.testing.assert_close(d(images, labels), expected)


def test_cgan_initialisation_is_the_released_init_weight() -> None:
    """cGAN/architecture/init_weight.py lines 3-17: orthogonal weights (gain 1) for Conv/Linear/Embedding,
    biases N(0, 0.01^2), BatchNorm gains 1 and biases N(0, 0.01^2); applied after spectral normalisation
    (``self.apply(init_func)``, discriminator.py line 38, generator.py line 31), so to ``weight_orig``."""
    torch.manual_seed(0)
    generator, discriminator = Generator(), Discriminator()
    biases = []
    for network in (generator, discriminator):
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear | torch.nn.Embedding):
                weight = module.weight_orig.detach().reshape(module.weight_orig.shape[0], -1)
                rows, cols = weight.shape
                gram = weight @ weight.T if rows <= cols else weight.T @ weight
                torch.testing.assert_close(gram, torch.eye(min(rows, cols)), atol=1e-4, rtol=0)
                if getattr(module, "bias", None) is not None:
                    biases.append(module.bias.detach())
    assert torch.equal(generator.norm.weight.detach(), torch.ones(64))
    biases.append(generator.norm.bias.detach())
    values = torch.cat(biases)
    assert len(values) > 5000 and 0.009 < float(values.std()) < 0.011 and abs(float(values.mean())) < 0.001


def test_cifar10_cgan_paper_configuration_is_the_reference() -> None:
    """cGAN/main.py lines 31-34 (--bsz 256, --epochs 121, --fid 10, --D_per_G 1), 58-61 (flip; pixels to
    [-1, 1]), 136-150 (optimisers: Adam betas (0.0, 0.999) for G but (0.9, 0.999) for D; LAMB (0.0, 0.999)
    for both; SGD momentum 0; Nero defaults; the same lr for both), 216-237 (FID every 10 epochs *before*
    training that epoch, so the last FID follows 120 epochs; lr /10 at epoch 100); generator.py lines
    14-20 (z chunks of 20, 80-d embedding)."""
    task = get_task("cifar10-cgan")
    config = task.config("paper")
    assert (config.epochs, config.batch_size, config.lr_decay_epochs, config.lr_gamma) == (120, 256, (100.0,), 0.1)
    assert (config.width, config.z_chunk, config.embedding_size, config.d_steps_per_g) == (64, 20, 80, 1)
    assert (config.class_table_size, config.d_out_scale) == (1000, 10.0)
    assert (config.fid_every_epochs, config.fid_samples, config.inception_size) == (10.0, 10_000, 299)
    assert (config.fid_reference, config.fid_per_image_minmax, config.flip) == ("test", True, True)
    assert task.networks == ("generator", "discriminator")
    assert settings("cifar10-cgan", "adam", "generator") == {"betas": (0.0, 0.999), "eps": 1e-8}
    assert settings("cifar10-cgan", "adam", "discriminator") == {"betas": (0.9, 0.999), "eps": 1e-8}
    for network in task.networks:
        assert settings("cifar10-cgan", "lamb", network) == PRESET["lamb"]
        assert settings("cifar10-cgan", "sgd", network) == PRESET["sgd"]
        assert settings("cifar10-cgan", "nero", network) == PRESET["nero"]
    # A spec's explicit setting wins over the task's override, on both networks.
    explicit = optimizer_settings(get_task("cifar10-cgan"), "adam", "paper", {"betas": [0.5, 0.99]})
    both = {"betas": (0.5, 0.99), "eps": 1e-8}
    assert explicit == {"generator": both, "discriminator": both}


# --- wikitext2-transformer --------------------------------------------------------------------------------


def test_wikitext2_transformer_paper_configuration_is_the_reference() -> None:
    """wikitext2/figure7.sh (``--epochs 20 --model Transformer``, no --norm); wikitext2/main.py lines 27-68
    (emsize 200, nhid 200, nlayers 2, clip 0.25, batch 20, bptt 35, dropout 0.2, nhead 2), 135 (eval
    batch 10), 152-159 (SGD momentum 0; Adam/LAMB betas (0.0, 0.999)), 235-237 (clip for SGD only), 292
    (lr /10 after epoch 20 // 2), 286-318 (test perplexity of the best-validation checkpoint)."""
    task = get_task("wikitext2-transformer")
    config = task.config("paper")
    assert (config.layers, config.heads, config.d_model, config.d_ff) == (2, 2, 200, 200)
    assert (config.dropout, config.bptt, config.layer_norm) == (0.2, 35, False)
    assert (config.epochs, config.batch_size, config.eval_batch_size) == (20, 20, 10)
    assert (config.lr_drop_epoch, config.lr_drop_factor) == (10, 0.1)
    assert config.grad_clip == 0.25 and tuple(config.grad_clip_optimizers) == ("sgd",)
    assert (config.max_steps, config.max_eval_tokens, config.evals_per_epoch) == (None, None, 1)
    assert (task.metric_name, task.curve_metric_name) == ("test perplexity", "validation perplexity")
    for optimizer, expected in PRESET.items():
        assert settings("wikitext2-transformer", optimizer) == expected


def test_wikitext2_encoder_layers_start_identical_as_the_deep_copied_reference() -> None:
    """wikitext2/model.py lines 120-121: one ``TransformerEncoderLayer`` handed to ``TransformerEncoder``,
    which deep-copies it ``nlayers`` times, so the layers start from the same weights."""
    torch.manual_seed(0)
    model = WordTransformerLM(50, WikiText2Config(d_model=16, heads=2, d_ff=16, layers=3))
    first, *others = (dict(layer.named_parameters()) for layer in model.layers)
    for other in others:
        assert all(torch.equal(first[name], other[name]) for name in first)
        assert all(first[name] is not other[name] for name in first)  # copies, not shared weights


def test_best_validation_checkpoint_keeps_the_weights_of_the_lowest_perplexity_after_training_began() -> None:
    """wikitext2/main.py lines 286-290 and 303-313: save when ``not best_val_loss or val_loss <
    best_val_loss`` after an epoch, reload the best for the test evaluation."""
    model = torch.nn.Linear(1, 1, bias=False)
    checkpoint = BestValidationCheckpoint(model)
    for weight, perplexity in [(0.0, 5.0), (1.0, 40.0), (2.0, 30.0), (3.0, 35.0), (4.0, 30.0)]:
        with torch.no_grad():
            model.weight.fill_(weight)
        assert checkpoint.offer(perplexity) == perplexity
    checkpoint.restore()
    assert float(model.weight.detach()) == 2.0  # not the initial 5.0, and the first of the two 30s


# --- translation-transformer ------------------------------------------------------------------------------


def test_translation_transformer_paper_configuration_is_the_reference() -> None:
    """transformer-wmt16/figure8.sh (``-embs_share_weight -proj_share_weight -label_smoothing -b 128 -epoch
    100``); train.py lines 51 (smoothing eps 0.1), 223-231 (d_model 512, d_inner_hid 2048, n_head 8, n_layers
    6, dropout 0.1), 288-295 (Adam and LAMB betas (0.0, 0.999), SGD momentum 0, Nero defaults), 298 (the
    triangular ``lr_lambda``)."""
    task = get_task("translation-transformer")
    config = task.config("paper")
    assert (config.layers, config.d_model, config.heads, config.d_ff) == (6, 512, 8, 2048)
    assert (config.dropout, config.tied_embeddings, config.label_smoothing) == (0.1, True, 0.1)
    assert (config.epochs, config.batch_size, config.loss_reduction) == (100, 128, "sum")
    assert (config.min_freq, config.max_len) == (3, 100)
    for optimizer, expected in PRESET.items():
        assert settings("translation-transformer", optimizer) == expected


# --- ppo-pong ---------------------------------------------------------------------------------------------


def test_ppo_pong_paper_configuration_is_the_reference() -> None:
    """ppo/figure9.sh line 4 (``--clip-param 0.1 --value-loss-coef 0.5 --num-processes 8 --num-steps 128
    --num-mini-batch 4 --use-linear-lr-decay --entropy-coef 0.01 --num-env-steps 5000000``);
    ppo/a2c_ppo_acktr/arguments.py lines 29-32 (--eps 1e-5), 39-57 (gamma 0.99, GAE lambda 0.95, entropy),
    64-67 (max grad norm 0.5), 86-89 (ppo epochs 4); ppo/a2c_ppo_acktr/algo/ppo.py lines 37-51 (Adam and
    LAMB ``eps=eps, betas=(0.0, 0.999)``, SGD momentum 0, Nero defaults)."""
    task = get_task("ppo-pong")
    config = task.config("paper")
    assert (config.num_envs, config.rollout_steps, config.num_minibatches, config.ppo_epochs) == (8, 128, 4, 4)
    assert (config.clip, config.value_loss_coef, config.entropy_coef) == (0.1, 0.5, 0.01)
    assert (config.gamma, config.gae_lambda, config.max_grad_norm) == (0.99, 0.95, 0.5)
    assert config.total_env_steps == 5_000_000 and config.linear_lr_decay and config.clipped_value_loss
    assert config.updates == 4882 and config.minibatch_size == 256
    assert settings("ppo-pong", "adam") == {"betas": (0.0, 0.999), "eps": 1e-5}
    assert settings("ppo-pong", "lamb") == {"betas": (0.0, 0.999), "eps": 1e-5}
    assert settings("ppo-pong", "sgd") == PRESET["sgd"] and settings("ppo-pong", "nero") == PRESET["nero"]


# --- the overrides stay in their place ---------------------------------------------------------------------


def test_task_overrides_apply_under_the_paper_preset_only_and_below_explicit_settings() -> None:
    library = {"betas": (0.9, 0.999), "eps": 1e-8}
    assert optimizer_settings(get_task("mnist-mlp100"), "adam", "library")["model"] == library
    assert optimizer_settings(get_task("ppo-pong"), "adam", "library")["model"] == library
    explicit = optimizer_settings(get_task("mnist-mlp100"), "adam", "paper", {"betas": [0, 0.999]})
    assert explicit["model"]["betas"] == (0.0, 0.999)
    assert optimizer_settings(get_task("ppo-pong"), "adam", "paper", {"weight_decay": 0.1})["model"] == {
        "betas": (0.0, 0.999),
        "eps": 1e-5,
        "weight_decay": 0.1,
    }
    with pytest.raises(ValueError, match="Invalid setting\\(s\\) betaz for optimizer 'adam'"):
        optimizer_settings(get_task("ppo-pong"), "adam", "paper", {"betaz": [0, 0.9]})
