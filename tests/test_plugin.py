"""A trained checkpoint runs as a vidur global scheduler inside vidur's own Simulator.run(), and
makes the same decisions as the same policy in the env."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vidur_ppo import checkpoint
from vidur_ppo.config import register_configs
from vidur_ppo.routing.env import VidurRoutingEnv
from vidur_ppo.checkpoint import load_policy
from vidur_ppo.eval.paired import TorchPolicy
from vidur_ppo.models import make_model
from vidur_ppo.plugin import PolicyGlobalSchedulerConfig
from vidur_ppo.sim import metrics
from vidur_ppo.sim.driver import run_vidur
from vidur_ppo.build import env_spec

from test_config import CONF

register_configs()


def _checkpoint(tmp_path, cluster=("features=full", "env.num_replicas=3")):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=attn_gru", *cluster,
                                                        "workload.num_requests=80", "workload.qps=18"])
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(0)
    names = env_spec(cfg).make().features.names
    model = make_model(OmegaConf.to_container(cfg.model), int(cfg.env.num_replicas), len(names))
    checkpoint.save(tmp_path, {"model": model.state_dict(), "feature_names": list(names)})
    return cfg


@pytest.mark.parametrize("cluster", [("features=full", "env.num_replicas=3"), ("features=hetero", "env=mix_a100_h100")],
                         ids=["identical", "mixed"])
def test_plugin_in_vidurs_simulator_matches_the_env(tmp_path, cluster):
    cfg = _checkpoint(tmp_path, cluster)
    env = env_spec(cfg).make()
    trace = env.workload.generate(100_000)
    policy, _ = load_policy(tmp_path)
    obs, _ = env.reset(options={"trace": trace})
    policy.reset()
    done = False
    while not done:
        obs, _, done, _, info = env.step(policy(obs))
    ours = env.driver.per_request()
    assert len(set(ours["replica"].tolist())) > 1  # the policy really chooses

    requests = run_vidur(env.cluster, trace, PolicyGlobalSchedulerConfig(checkpoint=str(tmp_path)))
    theirs = metrics.per_request(requests, trace)
    np.testing.assert_array_equal(theirs["e2e"], ours["e2e"])
    np.testing.assert_array_equal(theirs["ttft"], ours["ttft"])


def test_plugin_through_vidurs_cli(tmp_path):
    _checkpoint(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "vidur_ppo.plugin", "--global_scheduler_config_type", "ppo",
         "--policy_global_scheduler_config_checkpoint", str(tmp_path),
         "--execution_time_predictor_config_type", "roofline", "--cluster_config_num_replicas", "3",
         "--replica_config_model_name", "meta-llama/Llama-2-7b-hf", "--replica_config_device", "a100",
         "--replica_config_network_device", "a100_pairwise_nvlink", "--replica_config_tensor_parallel_size", "1",
         "--replica_config_num_pipeline_stages", "1", "--replica_scheduler_config_type", "vllm",
         "--synthetic_request_generator_config_num_requests", "30", "--interval_generator_config_type", "poisson",
         "--poisson_request_interval_generator_config_qps", "5", "--length_generator_config_type", "uniform",
         "--uniform_request_length_generator_config_max_tokens", "2048",
         "--metrics_config_output_dir", str(tmp_path / "vidur_out")],  # no plot flags, as the README's command
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    log = out.stdout + out.stderr
    assert "routing with the vidur-ppo policy" in log and "Simulation ended" in log
