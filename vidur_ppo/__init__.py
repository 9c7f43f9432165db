"""vidur-ppo: PPO agents as the global request scheduler of an LLM cluster simulated by Vidur."""

import gymnasium as _gym

if "VidurRouting-v0" not in _gym.registry:
    _gym.register(id="VidurRouting-v0", entry_point="vidur_ppo.routing.env:VidurRoutingEnv")

__version__ = "0.1.0"

from pathlib import Path as _Path

#: the Hydra config dir (conf/ next to the package): the apps' `config_path` (absolute, so the console
#: scripts find it too) and the files read as data (workload families, shared length shapes)
CONF_DIR = _Path(__file__).resolve().parents[1] / "conf"
