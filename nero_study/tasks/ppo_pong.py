"""ppo-pong: the Nero paper's PPO agent on Atari Pong.

Evidence (Liu et al. 2021, arXiv 2102.07227, Sec. 5; code github.com/jxbz/nero, ``ppo/``, a fork of
ikostrikov's pytorch-a2c-ppo-acktr-gail): ``figure9.sh`` runs ``main.py --env-name PongNoFrameskip-v4
--algo ppo --use-gae --clip-param 0.1 --value-loss-coef 0.5 --num-processes 8 --num-steps 128
--num-mini-batch 4 --use-linear-lr-decay --entropy-coef 0.01 --num-env-steps 5000000 --optimizer X --lr Y``
with the defaults ``--ppo-epoch 4 --gamma 0.99 --gae-lambda 0.95 --max-grad-norm 0.5`` and the clipped
value loss. ``5000000`` counts agent steps summed over the 8 environments (each step is 4 emulator
frames), so a run is 5e6 // (8 * 128) = 4,882 PPO updates of 4 epochs x 4 minibatches of 256 = 78,112
optimiser steps. The lr decays linearly, ``lr * (1 - j / updates)`` during update ``j``.

Model: the fork's ``CNNBase`` — the Nature-DQN-style conv stack 32x8x8/4, 64x4x4/2, then **32**x3x3/1
(ikostrikov's choice; Nature DQN has 64 there: ``conv_channels``), a 512-unit ReLU layer, a linear policy
head (orthogonal init, gain 0.01) and a linear value head (gain 1); the trunk is orthogonal with ReLU gain
sqrt(2); biases 0; pixels divided by 255. Preprocessing: :mod:`nero_study.tasks.atari`.

Loss per minibatch: ``0.5 * value_loss + policy_loss - 0.01 * entropy`` with advantages from GAE,
normalised over the whole rollout; value loss ``0.5 * max((V - R)^2, (V_clipped - R)^2)``. Gradients are
clipped to norm 0.5 for every optimiser.

Optimisers (``ppo/a2c_ppo_acktr/algo/ppo.py`` lines 37-51): Adam and LAMB with ``betas=(0.0, 0.999)`` and
``eps=args.eps``, whose default is 1e-5 (``ppo/a2c_ppo_acktr/arguments.py`` lines 29-32; ``figure9.sh``
does not set it); SGD with momentum 0; Nero with its defaults. The betas are the registry's ``paper``
preset; the task's ``paper_settings`` add eps 1e-5 for Adam and LAMB (the preset's are 1e-8 and 1e-6).

Metric: mean return (game score, -21 .. 21) of the last 10 finished training episodes, as the paper's
script logs; HIGHER is better. Before any episode has finished — always at step 0, a Pong game lasting
~900 agent steps — the metric is the chance level -21 (a random policy loses every point). Evaluations
every ``eval_every_updates`` updates and at the end; the curve's ``epoch`` counts PPO updates.
PPO's loss is no divergence signal (the value loss grows as returns improve), so only a NaN/inf loss or
metric ends a trial as diverged.

Budgets: ``smoke`` 2 envs x 16 steps, 3 updates, episodes cut at 100 frames (tests, a few seconds);
``proxy`` 4 envs x 128 steps for 10 updates (5,120 agent steps; 101 s measured on a 2-core machine at load
average 10; far too short to learn Pong — it exercises the pipeline and the optimiser's first updates); ``paper`` the
settings above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nero_study.tasks.atari import EpisodeReturns, make_atari_envs, rom_available
from nero_study.tasks.base import Task, TaskConfigError, TrialContext, cpu_threads

PONG_CHANCE_RETURN = -21.0


@dataclass(frozen=True)
class PPOPongConfig:
    """One budget. ``total_env_steps`` counts agent steps over all envs (each ``frame_skip`` frames)."""

    total_env_steps: int = 5_000_000
    num_envs: int = 8
    rollout_steps: int = 128
    num_minibatches: int = 4
    ppo_epochs: int = 4
    clip: float = 0.1
    value_loss_coef: float = 0.5
    entropy_coef: float = 0.01
    gamma: float = 0.99
    gae_lambda: float = 0.95
    max_grad_norm: float = 0.5
    linear_lr_decay: bool = True
    clipped_value_loss: bool = True
    conv_channels: tuple[int, int, int] = (32, 64, 32)
    hidden_size: int = 512
    game: str = "pong"
    frame_skip: int = 4
    frame_stack: int = 4
    screen_size: int = 84
    noop_max: int = 30
    max_episode_frames: int = 108_000
    reward_clipping: bool = True
    metric_episodes: int = 10
    eval_every_updates: int = 50
    env_threads: int = 0  # 0: one per environment, at most the CPUs available

    @property
    def updates(self) -> int:
        return self.total_env_steps // (self.num_envs * self.rollout_steps)

    @property
    def minibatch_size(self) -> int:
        return self.num_envs * self.rollout_steps // self.num_minibatches


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


class AtariActorCritic(nn.Module):
    """Conv trunk shared by a policy head (action logits) and a value head, on uint8 frame stacks."""

    def __init__(
        self, in_frames: int, num_actions: int, *, conv_channels: tuple[int, int, int] = (32, 64, 32),
        hidden_size: int = 512, screen_size: int = 84,
    ) -> None:
        super().__init__()
        c1, c2, c3 = conv_channels
        side = _conv_out(_conv_out(_conv_out(screen_size, 8, 4), 4, 2), 3, 1)
        if side < 1:
            raise ValueError(f"Invalid screen_size: {screen_size}; the conv stack needs at least 36 pixels")
        self.trunk = nn.Sequential(
            nn.Conv2d(in_frames, c1, 8, stride=4), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c3 * side * side, hidden_size), nn.ReLU(),
        )
        self.policy = nn.Linear(hidden_size, num_actions)
        self.value = nn.Linear(hidden_size, 1)
        for module in self.trunk:
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.orthogonal_(module.weight, gain=nn.init.calculate_gain("relu"))
                nn.init.zeros_(module.bias)
        nn.init.orthogonal_(self.policy.weight, gain=0.01)
        nn.init.zeros_(self.policy.bias)
        nn.init.orthogonal_(self.value.weight, gain=1.0)
        nn.init.zeros_(self.value.bias)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (batch, actions), value (batch,))`` for uint8 frames ``(batch, stack, H, W)``."""
        features = self.trunk(frames.float() / 255.0)
        return self.policy(features), self.value(features).squeeze(-1)


def gae_returns(
    rewards: torch.Tensor, values: torch.Tensor, not_done: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """Returns ``R_t = A_t + V_t`` with GAE(``lam``) advantages over a rollout of ``T`` steps.

    ``rewards`` (T, N); ``values`` (T + 1, N), the last row the bootstrap value; ``not_done`` (T, N) is 0
    where step ``t`` ended an episode (the next value then does not count).
    """
    steps = rewards.shape[0]
    returns = torch.zeros_like(rewards)
    advantage = torch.zeros_like(rewards[0])
    for t in reversed(range(steps)):
        delta = rewards[t] + gamma * values[t + 1] * not_done[t] - values[t]
        advantage = delta + gamma * lam * not_done[t] * advantage
        returns[t] = advantage + values[t]
    return returns


class PPOPong(Task):
    name: ClassVar[str] = "ppo-pong"
    description: ClassVar[str] = (
        "The paper's PPO on Atari Pong (Atari CNN, 8 envs x 128 steps, 4 minibatches, clip 0.1, 5M steps, "
        "linear lr decay); mean episode reward"
    )
    metric_name: ClassVar[str] = "mean episode reward"
    lower_is_better: ClassVar[bool] = False
    chance_metric: ClassVar[float] = PONG_CHANCE_RETURN
    kind: ClassVar[str] = "paper"
    default_device: ClassVar[str] = "auto"
    divergence_factor: ClassVar[float | None] = None
    paper_settings: ClassVar[dict[str, dict[str, Any]]] = {"adam": {"eps": 1e-5}, "lamb": {"eps": 1e-5}}
    paper_settings_source: ClassVar[str] = (
        "ppo/a2c_ppo_acktr/algo/ppo.py lines 37-43 (eps=args.eps) and ppo/a2c_ppo_acktr/arguments.py "
        "lines 29-32 (--eps default 1e-5)"
    )
    budgets: ClassVar[dict[str, Any]] = {
        "smoke": PPOPongConfig(
            total_env_steps=96, num_envs=2, rollout_steps=16, num_minibatches=2, ppo_epochs=1,
            max_episode_frames=100, eval_every_updates=1, env_threads=1,
        ),
        "proxy": PPOPongConfig(total_env_steps=5_120, num_envs=4, eval_every_updates=2),
        "paper": PPOPongConfig(),
    }

    def config(self, budget: str, options: dict[str, Any] | None = None) -> PPOPongConfig:
        config = super().config(budget, options)
        if config.updates < 1:
            raise TaskConfigError(
                f"Invalid total_env_steps: {config.total_env_steps}; must cover at least one rollout of "
                f"num_envs x rollout_steps = {config.num_envs * config.rollout_steps}"
            )
        if (config.num_envs * config.rollout_steps) % config.num_minibatches != 0:
            raise TaskConfigError(
                f"Invalid num_minibatches: {config.num_minibatches}; must divide num_envs x rollout_steps"
            )
        return config

    def check_data(self, config: PPOPongConfig) -> None:
        if not rom_available(config.game):
            raise TaskConfigError(
                f"expected the Atari ROM {config.game!r} from ale-py (pip install 'ale-py>=0.11', which ships "
                "the ROMs); it is not available"
            )

    def train(self, config: PPOPongConfig, ctx: TrialContext) -> None:
        device = ctx.device
        threads = config.env_threads or min(config.num_envs, cpu_threads())
        envs = make_atari_envs(
            config.game, config.num_envs, frame_skip=config.frame_skip, frame_stack=config.frame_stack,
            screen_size=config.screen_size, noop_max=config.noop_max,
            max_episode_frames=config.max_episode_frames, num_threads=threads,
        )
        try:
            self._train(config, ctx, envs, device)
        finally:
            envs.close()

    def _train(self, config: PPOPongConfig, ctx: TrialContext, envs: Any, device: torch.device) -> None:
        steps, num_envs = config.rollout_steps, config.num_envs
        model = AtariActorCritic(
            config.frame_stack, int(envs.single_action_space.n), conv_channels=tuple(config.conv_channels),
            hidden_size=config.hidden_size, screen_size=config.screen_size,
        ).to(device)
        optimizer = ctx.build_optimizer(model.parameters())
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        returns_tracker = EpisodeReturns(num_envs, config.metric_episodes)

        frame_shape = (config.frame_stack, config.screen_size, config.screen_size)
        observations = torch.zeros((steps + 1, num_envs, *frame_shape), dtype=torch.uint8, device=device)
        actions = torch.zeros((steps, num_envs), dtype=torch.long, device=device)
        log_probs = torch.zeros((steps, num_envs), device=device)
        values = torch.zeros((steps + 1, num_envs), device=device)
        rewards = torch.zeros((steps, num_envs), device=device)
        not_done = torch.ones((steps, num_envs), device=device)

        obs, _ = envs.reset(seed=ctx.spec.seed)
        observations[0] = torch.from_numpy(np.asarray(obs)).to(device)

        def metric() -> float:
            mean = returns_tracker.mean()
            return PONG_CHANCE_RETURN if mean is None else mean

        step = 0
        last_loss = math.nan
        ctx.evaluate(step=0, epoch=0.0, train_loss=math.nan, metric=metric())
        for update in range(config.updates):
            if config.linear_lr_decay:
                factor = 1.0 - update / config.updates
                for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base_lr * factor

            model.eval()
            with torch.no_grad():
                for t in range(steps):
                    logits, value = model(observations[t])
                    distribution = torch.distributions.Categorical(logits=logits)
                    action = distribution.sample()
                    actions[t], log_probs[t], values[t] = action, distribution.log_prob(action), value
                    obs, reward, terminated, truncated, _ = envs.step(action.cpu().numpy())
                    done = np.logical_or(terminated, truncated)
                    returns_tracker.update(np.asarray(reward, dtype=np.float64), done)
                    step_reward = torch.as_tensor(np.asarray(reward, dtype=np.float32), device=device)
                    rewards[t] = torch.sign(step_reward) if config.reward_clipping else step_reward
                    not_done[t] = torch.as_tensor(~done, dtype=torch.float32, device=device)
                    observations[t + 1] = torch.from_numpy(np.asarray(obs)).to(device)
                values[steps] = model(observations[steps])[1]
                returns = gae_returns(rewards, values, not_done, config.gamma, config.gae_lambda)
                advantages = returns - values[:-1]
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-5)

            model.train()
            flat_obs = observations[:-1].reshape(steps * num_envs, *frame_shape)
            flat = {
                "actions": actions.reshape(-1), "log_probs": log_probs.reshape(-1),
                "values": values[:-1].reshape(-1), "returns": returns.reshape(-1),
                "advantages": advantages.reshape(-1),
            }
            losses = []
            for _ in range(config.ppo_epochs):
                order = torch.randperm(steps * num_envs, generator=ctx.generator).to(device)
                for chunk in order.split(config.minibatch_size):
                    loss = self._minibatch_loss(config, model, flat_obs[chunk], {k: v[chunk] for k, v in flat.items()})
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    step += 1
                    losses.append(ctx.check_loss(loss))
            last_loss = float(np.mean(losses))
            observations[0] = observations[steps]

            done_updates = update + 1
            if done_updates % config.eval_every_updates == 0 and done_updates < config.updates:
                ctx.evaluate(step=step, epoch=float(done_updates), train_loss=last_loss, metric=metric())
        ctx.evaluate(step=step, epoch=float(config.updates), train_loss=last_loss, metric=metric())

    @staticmethod
    def _minibatch_loss(
        config: PPOPongConfig, model: AtariActorCritic, frames: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """PPO's clipped surrogate + (clipped) value loss - entropy bonus on one minibatch."""
        logits, value = model(frames)
        log_probs = F.log_softmax(logits, dim=-1)
        new_log_prob = log_probs.gather(-1, batch["actions"][:, None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
        ratio = torch.exp(new_log_prob - batch["log_probs"])
        advantages = batch["advantages"]
        clipped_ratio = ratio.clamp(1.0 - config.clip, 1.0 + config.clip)
        policy_loss = -torch.min(ratio * advantages, clipped_ratio * advantages).mean()
        value_error = (value - batch["returns"]).pow(2)
        if config.clipped_value_loss:
            clipped_value = batch["values"] + (value - batch["values"]).clamp(-config.clip, config.clip)
            value_error = torch.max(value_error, (clipped_value - batch["returns"]).pow(2))
        value_loss = 0.5 * value_error.mean()
        return config.value_loss_coef * value_loss + policy_loss - config.entropy_coef * entropy
