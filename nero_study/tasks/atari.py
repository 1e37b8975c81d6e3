"""Atari environments for PPO with the standard DeepMind preprocessing, and episode bookkeeping.

The paper's PPO code (a fork of ikostrikov's pytorch-a2c-ppo-acktr-gail) wraps ``PongNoFrameskip-v4``
with OpenAI baselines' ``make_atari`` + ``wrap_deepmind``: up to 30 random no-ops at reset, the action
repeated for 4 frames with the max over the last 2 frames, FIRE at reset, 84x84 greyscale frames, rewards
clipped to their sign for learning (a Monitor records the unclipped episode return first), and 4 frames
stacked along channels, zeroed at each new episode. Pong has no lives, so ``EpisodicLifeEnv`` is a no-op.

ale-py ships ``AtariVectorEnv``, which does exactly this preprocessing inside the emulator library (C++,
threaded, no OpenCV needed) on the ROMs it ships, so nothing is downloaded and gymnasium's
``AtariPreprocessing`` (which needs ``cv2``) is not used. Sticky actions are off
(``repeat_action_probability=0``, the ``NoFrameskip-v4`` semantics); a finished episode is reset in the
same step (the observation returned is the new episode's first), as baselines' vector envs do. We take
unclipped rewards from the emulator and clip them ourselves, so that the episode returns are the game
score (-21 .. 21 for Pong).
"""

from __future__ import annotations

import warnings
from collections import deque
from typing import Any

import numpy as np


def rom_available(game: str) -> bool:
    """Whether ale-py is importable and ships the ROM ``game`` (snake case, e.g. ``"pong"``)."""
    try:
        from ale_py import roms
    except ImportError:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ale-py warns "Rom X not supported" before returning None
            return roms.get_rom_path(game) is not None
    except Exception:  # noqa: BLE001 - an unknown name is reported as "not available"
        return False


def make_atari_envs(
    game: str,
    num_envs: int,
    *,
    frame_skip: int = 4,
    frame_stack: int = 4,
    screen_size: int = 84,
    noop_max: int = 30,
    max_episode_frames: int = 108_000,
    num_threads: int = 0,
) -> Any:
    """``num_envs`` copies of ``game`` as one ``ale_py.vector_env.AtariVectorEnv`` (observations uint8
    ``(num_envs, frame_stack, screen_size, screen_size)``, unclipped rewards, same-step autoreset).

    ``max_episode_frames`` truncates an episode after that many emulator frames (108,000 = 30 minutes,
    the v4 default); ``num_threads`` 0 lets ale-py choose.
    """
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        game,
        num_envs,
        num_threads=num_threads,
        frameskip=frame_skip,
        stack_num=frame_stack,
        img_height=screen_size,
        img_width=screen_size,
        grayscale=True,
        maxpool=True,
        noop_max=noop_max,
        use_fire_reset=True,
        episodic_life=False,
        reward_clipping=False,
        repeat_action_probability=0.0,
        max_num_frames_per_episode=max_episode_frames,
        autoreset_mode="SameStep",
    )


class EpisodeReturns:
    """Sums each environment's unclipped rewards and keeps the returns of the last ``window`` episodes
    (the paper's code logs the mean of its last 10)."""

    def __init__(self, num_envs: int, window: int = 10) -> None:
        self.running = np.zeros(num_envs, dtype=np.float64)
        self.finished: deque[float] = deque(maxlen=window)
        self.episodes = 0

    def update(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        """Add one step's ``rewards``; environments with ``dones`` close their episode."""
        self.running += rewards
        for index in np.flatnonzero(dones):
            self.finished.append(float(self.running[index]))
            self.running[index] = 0.0
            self.episodes += 1

    def mean(self) -> float | None:
        """Mean return of the last ``window`` finished episodes, ``None`` before the first."""
        return float(np.mean(self.finished)) if self.finished else None
