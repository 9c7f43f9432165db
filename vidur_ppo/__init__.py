"""vidur-ppo: PPO agents as the global request scheduler of an LLM cluster simulated by Vidur."""

import gymnasium as _gym

if "VidurRouting-v0" not in _gym.registry:
    _gym.register(id="VidurRouting-v0", entry_point="vidur_ppo.routing.env:VidurRoutingEnv")

__version__ = "0.1.0"
