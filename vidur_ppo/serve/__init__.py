"""A trained router in Ray Serve: replica routing stats (stats), request sizes (request), the policy over reported
states (policy), the request router (router), a simulated engine replica (engine), the Serve app (deployment)
and the decision overhead's measurement (overhead).
docs/ray_serve.md says how to deploy it."""
