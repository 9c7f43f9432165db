"""Recurrent PPO: rollout storage with hidden states and GAE, the clipped loss, the trainer."""
