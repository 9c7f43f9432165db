"""Behaviour-cloning warm start: imitate a teacher (a heuristic or a lookahead planner) before PPO.

Demonstrations are whole episodes of the teacher in the training env (training seeds), stored as
the model's input features and the teacher's actions. With `bc.dagger_rounds` > 0 this is DAgger
(Ross et al., 2011; expert iteration when the teacher is a planner): each round the *policy* drives
`dagger_episodes` episodes, the teacher labels every state the policy visits, and the actor retrains
on every label so far, so it learns the teacher's choice in the states its own mistakes lead to. The actor is trained by
cross-entropy with truncated back-propagation through time: each episode is one long sequence,
cut into `seq_len` chunks that carry the recurrent state forward (detached), as at rollout time.
Agreement with the teacher is measured on held-out demonstration episodes. During PPO, the same
demonstrations can anchor the policy through a demonstration loss whose weight fades to 0
(`FadingBC`, weights `ppo.bc_coef` / `ppo.bc_fade_updates`).

Labelling can take minutes per episode (a planner teacher forks the simulation at every decision),
so each phase shows its own progress (`bar`: a tqdm factory) and a stop signal (`stop.check()`,
vidur_ppo/interrupts.py) ends BC at the next decision or epoch; nothing of an unfinished BC is
kept (a resumed run runs it again from the start, on the same seeds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from vidur_ppo.checks import check, positive
from vidur_ppo.routing.env import VidurRoutingEnv
from vidur_ppo.routing.heuristics import HEURISTICS


@dataclass
class BCConfig:
    enabled: bool = True
    teacher: str = "jsq"  # a heuristic, or a planner of routing/lookahead.py (PLANNERS)
    episodes: int = 6
    holdout_episodes: int = 2
    epochs: int = 25
    lr: float = 3e-3
    seq_len: int = 32
    batch_chunks: int = 32
    dagger_rounds: int = 0  # DAgger rounds after cloning the teacher's own episodes (0: plain BC)
    dagger_episodes: int = 2  # episodes the policy drives (and the teacher labels) per round
    # episodes labelled at once: 1 in the training process; more on the run's `executor` (local processes or
    # Ray tasks), each episode made from its slot's spec in the worker: the same demonstrations, sooner
    label_workers: int = 1

    def __post_init__(self) -> None:
        from vidur_ppo.routing.lookahead import PLANNERS

        check(self.teacher in HEURISTICS or self.teacher in PLANNERS, "bc.teacher",
              f"must be a heuristic or a planner ({', '.join([*HEURISTICS, *PLANNERS])})", self.teacher)
        positive(self, "bc", "episodes", "holdout_episodes", "epochs", "lr", "seq_len", "batch_chunks",
                 "dagger_episodes", "label_workers")
        check(self.dagger_rounds >= 0, "bc.dagger_rounds", "must be >= 0", self.dagger_rounds)


@dataclass
class Demo:
    feats: torch.Tensor  # [T, R, F]
    actions: torch.Tensor  # [T]
    learner_agreement: Optional[float] = None  # DAgger: share of the driving policy's actions the teacher agreed with


#: a progress bar factory, `bar(total, desc)` -> a tqdm (train.progress_bar; `no_bar` shows nothing)
Bar = Callable[[int, str], Any]


def no_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=True)


Envs = Union[VidurRoutingEnv, Sequence[VidurRoutingEnv]]


def _slots(env: Envs, first: int = 0) -> List[VidurRoutingEnv]:
    """One env, or one per slot of a multi-cluster run (build.slot_specs) rotated to start at slot `first`:
    episode i runs on the i-th, cyclically, so demonstrations come from every slot (`EpisodeLabeller` rotates
    the slots' specs the same way)."""
    envs = list(env) if isinstance(env, (list, tuple)) else [env]
    first %= len(envs)
    return envs[first:] + envs[:first]


def collect_demos(env: Envs, teacher: str, seeds: Sequence[int], learner=None, stop=None,
                  bar: Bar = no_bar, desc: str = "", labeller: Optional["EpisodeLabeller"] = None,
                  first: int = 0) -> List[Demo]:
    """One episode per seed, labelled by `teacher` at every decision; the teacher drives, or with a
    `learner` (a TorchPolicy) the learner drives and the teacher only labels (DAgger).
    `env`: one env, or one per slot (episode i on slot (first + i) % len(slots)). A learner's demos record
    how often it already agreed (`Demo.learner_agreement`). One bar step per episode (`desc` names the
    phase); `stop.check()` at every decision, or with a `labeller` (episodes on its executor, in parallel)
    every half second while they run (leaving the executor ends its workers)."""
    with bar(len(seeds), desc or f"{teacher} labels episodes") as progress:
        if labeller is not None:
            return labeller.label(teacher, seeds, None if learner is None else learner.model, first,
                                  done=lambda: progress.update(1), poll=stop.check if stop is not None else None)
        envs, demos = _slots(env, first), []
        for i, seed in enumerate(seeds):
            demos.append(label_episode(envs[i % len(envs)], teacher, seed, learner, stop))
            progress.update(1)
    return demos


def label_episode(env: VidurRoutingEnv, teacher: str, seed: int, learner=None, stop=None) -> Demo:
    """One episode of `env` from `seed`, every decision labelled by `teacher` (which drives, unless a
    `learner` does)."""
    from vidur_ppo.eval.paired import make_router

    policy = make_router(teacher)
    policy.reset(seed)
    obs, _ = env.reset(seed=int(seed))
    if hasattr(policy, "bind"):
        policy.bind(env)
    if learner is not None:
        learner.reset(seed)
    feats, actions, agreed, done = [], [], 0, False
    while not done:
        if stop is not None:
            stop.check()  # a planner's episode can take minutes: stop at the next decision
        a = policy(obs)
        feats.append(obs["features"])
        actions.append(a)
        step = a if learner is None else learner(obs)
        agreed += int(step == a)
        obs, _, done, _, _ = env.step(step)
    return Demo(torch.as_tensor(np.stack(feats)), torch.as_tensor(actions, dtype=torch.long),
                agreed / len(actions) if learner is not None else None)


def label_job(job) -> Demo:
    """`label_episode` as an executor job: (env spec, teacher, seed, the learner's model or None); the env
    is made in the worker, the learner is a TorchPolicy of the shipped model (one torch thread)."""
    from vidur_ppo.eval.paired import TorchPolicy

    spec, teacher, seed, model = job
    torch.set_num_threads(1)
    return label_episode(spec.make(), teacher, seed, None if model is None else TorchPolicy(model))


class EpisodeLabeller:
    """Labels episodes in parallel on an executor (vidur_ppo/executor.py: local processes or Ray tasks),
    `workers` at a time: with a planner teacher labelling is most of a training run. Episode i runs on
    slot spec (first + i) % n, as `collect_demos` does in process, so the demonstrations are the same."""

    def __init__(self, specs: Sequence[Any], executor: Any, workers: int) -> None:
        self.specs, self.executor, self.workers = list(specs), executor, int(workers)

    def label(self, teacher: str, seeds: Sequence[int], model, first: int = 0,
              done: Optional[Callable[[], Any]] = None, poll: Optional[Callable[[], Any]] = None) -> List[Demo]:
        """The demonstrations, in seed order; `done()` once per finished episode, `poll()` while they run."""
        from vidur_ppo.executor import make_executor

        specs = _slots(self.specs, first)  # the rotation collect_demos gives its envs
        jobs = [(specs[i % len(specs)], teacher, int(seed), model) for i, seed in enumerate(seeds)]
        # shielded: the trainer traps the stop signals, and kills the workers at its next poll
        return make_executor(self.executor, self.workers, shielded=True).map(label_job, jobs, done, poll=poll)


def _batch(demos: Sequence[Demo]):
    """Pad episodes to one length: feats [T, B, R, F], actions [T, B], mask [T, B]."""
    T = max(len(d.actions) for d in demos)
    r, f = demos[0].feats.shape[1:]
    feats = torch.zeros((T, len(demos), r, f))
    actions = torch.zeros((T, len(demos)), dtype=torch.long)
    mask = torch.zeros((T, len(demos)))
    for i, d in enumerate(demos):
        n = len(d.actions)
        feats[:n, i], actions[:n, i], mask[:n, i] = d.feats, d.actions, 1.0
    return feats, actions, mask


@torch.no_grad()
def agreement(model, demos: Sequence[Demo]) -> float:
    """Share of decisions where the actor's most likely replica is the teacher's choice."""
    feats, actions, mask = _batch(demos)
    starts = torch.zeros(mask.shape)
    starts[0] = 1.0
    logits, _, _ = model(feats, model.initial_state(feats.shape[1]), starts, with_value=False)
    hit = (logits.argmax(-1) == actions).float() * mask
    return float(hit.sum() / mask.sum())


def train_bc(model, demos: Sequence[Demo], epochs: int, lr: float, seq_len: int, stop=None,
             bar: Bar = no_bar, desc: str = "BC epochs") -> List[float]:
    """Cross-entropy on the actor only (the critic starts learning in PPO); `stop.check()` per epoch."""
    params = model.actor_parameters()
    opt = torch.optim.Adam(params, lr=lr)
    feats, actions, mask = _batch(demos)
    losses = []
    with bar(epochs, desc) as progress:
        for _ in range(epochs):
            if stop is not None:
                stop.check()
            losses.append(_epoch(model, opt, params, feats, actions, mask, seq_len))
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def _epoch(model, opt, params, feats, actions, mask, seq_len: int) -> float:
    """One pass over every episode, in `seq_len` chunks (truncated BPTT); the mean loss per decision."""
    T, B = actions.shape
    state = model.initial_state(B)
    total, count = 0.0, 0.0
    for t0 in range(0, T, seq_len):
        sl = slice(t0, min(t0 + seq_len, T))
        starts = torch.zeros(mask[sl].shape)
        if t0 == 0:
            starts[0] = 1.0
        logits, _, state = model(feats[sl], state, starts, with_value=False)
        state = tuple(s.detach() for s in state)
        ce = F.cross_entropy(logits.flatten(0, 1), actions[sl].flatten(), reduction="none")
        m = mask[sl].flatten()
        loss = (ce * m).sum() / m.sum().clamp(min=1)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        total += loss.item() * float(m.sum())
        count += float(m.sum())
    return total / max(count, 1)


def demo_loss(model, demos: Sequence[Demo], seq_len: int, chunks: int, rng: np.random.Generator) -> torch.Tensor:
    """Cross-entropy of the actor on `chunks` random demonstration chunks (fading BC during PPO).

    Chunks start from a zero recurrent state, a truncation the rollout never makes; it only
    anchors the policy to the teacher early in PPO, with a weight that fades to 0.
    """
    picks = rng.integers(len(demos), size=chunks)
    feats, actions = [], []
    for i in picks:
        d = demos[int(i)]
        t0 = int(rng.integers(max(len(d.actions) - seq_len, 0) + 1))
        f, a = d.feats[t0:t0 + seq_len], d.actions[t0:t0 + seq_len]
        if len(a) < seq_len:  # episode shorter than a chunk: pad, masked below
            pad = seq_len - len(a)
            f = torch.cat([f, f[-1:].expand(pad, *f.shape[1:])])
            a = torch.cat([a, torch.full((pad,), -100, dtype=torch.long)])
        feats.append(f)
        actions.append(a)
    feats, actions = torch.stack(feats, 1), torch.stack(actions, 1)
    starts = torch.zeros(actions.shape)
    starts[0] = 1.0
    logits, _, _ = model(feats, model.initial_state(chunks), starts, with_value=False)
    return F.cross_entropy(logits.flatten(0, 1), actions.flatten(), ignore_index=-100)


def bc_weight(coef: float, fade_updates: int, update: int) -> float:
    """Fading BC: `coef` at update 0, linearly to 0 at `fade_updates` (0 = off)."""
    if coef <= 0 or fade_updates <= 0:
        return 0.0
    return coef * max(0.0, 1.0 - update / fade_updates)


@dataclass
class FadingBC:
    """The demonstration loss added to PPO's, with a weight that fades over updates."""

    demos: List[Demo]
    coef: float
    fade_updates: int

    def weight(self, update: int) -> float:
        return bc_weight(self.coef, self.fade_updates, update) if self.demos else 0.0

    def loss(self, model, seq_len: int, chunks: int, rng: np.random.Generator) -> torch.Tensor:
        return demo_loss(model, self.demos, seq_len, chunks, rng)


def warm_start(model, env: Envs, cfg: BCConfig, rng: np.random.Generator, seed_limit: int,
               update_threads: int, stop=None, bar: Bar = no_bar, labeller: Optional[EpisodeLabeller] = None):
    """Behaviour cloning before PPO: demonstrations of the teacher on training seeds, cross-entropy
    with every core, agreement on held-out episodes. Returns (train demos, result for the log, the
    seeds of the train demos: a resumed run re-collects the same demonstrations from them).
    `env`: one env, or one per slot: the teacher's episodes, then each DAgger round's, go round the
    slots in turn. `stop.check()` between decisions and epochs (raises StopRequested); one `bar` per phase."""
    from vidur_ppo.eval.paired import TorchPolicy

    seeds = [int(s) for s in rng.integers(seed_limit, size=cfg.episodes + cfg.holdout_episodes)]
    demos = collect_demos(env, cfg.teacher, seeds, stop=stop, bar=bar, desc=f"BC: {cfg.teacher} labels episodes",
                          labeller=labeller)
    train, held = demos[: cfg.episodes], demos[cfg.episodes:]
    threads = torch.get_num_threads()
    torch.set_num_threads(update_threads)  # no env workers yet
    result = {"teacher": cfg.teacher}
    fit = dict(epochs=cfg.epochs, lr=cfg.lr, seq_len=cfg.seq_len, stop=stop, bar=bar)
    try:
        losses = train_bc(model, train, **fit, desc="BC epochs")
        for k in range(cfg.dagger_rounds):  # the policy drives, the teacher labels, retrain on the aggregate
            round_ = f"DAgger {k + 1}/{cfg.dagger_rounds}"
            first = len(seeds) + k * cfg.dagger_episodes  # the slots continue where the previous episodes left off
            visited = collect_demos(env, cfg.teacher,
                                    [int(s) for s in rng.integers(seed_limit, size=cfg.dagger_episodes)],
                                    learner=TorchPolicy(model), stop=stop, bar=bar,
                                    desc=f"{round_}: {cfg.teacher} labels the policy's episodes",
                                    labeller=labeller, first=first)
            result[f"dagger{k}_policy_agreement"] = float(np.mean([d.learner_agreement for d in visited]))
            train = train + visited
            losses = train_bc(model, train, **fit, desc=f"{round_} epochs")
    finally:
        torch.set_num_threads(threads)
    result.update({"agreement": agreement(model, held), "final_loss": losses[-1],
                   "decisions": int(sum(len(d.actions) for d in train))})
    # a resumed run's fading BC re-collects the teacher's own episodes from these seeds (not DAgger's labels)
    return train, result, seeds[: cfg.episodes]
