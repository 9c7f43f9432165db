"""What a router sees, decides and is rewarded for: the gymnasium env, features, rewards (incl. decision credit), safety monitor, heuristics."""
