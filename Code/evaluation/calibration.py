"""Is the critic an estimator? (issue 21 item 2)

On fixed teacher and student states at the matched layers, each critic variant is trained from scratch on
one half of the positions and read after N updates on the half it trained on and on the held-out half,
beside three judges computed on the same point clouds: exact W1 (POT `ot.emd2`), the debiased Sinkhorn
value and the sliced WD. The same is done on two disjoint samples of the teacher's own states, where the
true distance is ~0: an estimator's reading there is its noise floor (or its overfit). Last, the gradient
each trained critic sends into a student that sits exactly on the teacher's states (distance 0), per token
and in raw units, beside the MSE gradient of the real student.

Everything is in the critic's coordinates: per layer and dimension standardised by the teacher's mean and
std (the critic standardises its own inputs the same way; the judges get `standardize_by_teacher`).

    python -m Code.evaluation.calibration --teacher T --student S --data-dir D [--layer-map M] [--tokens 8192]
    python -m Code.evaluation.calibration --states STATES.pt [--updates 100,500,2000] [--out calibration.json]

The first collects the states itself (the validation split's first --tokens positions, the run's layer map
rule: `--layer-map`, else spread evenly); the second reads {"teacher": (L, N, D), "student": (L, N, D)}.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from Code.config import CriticConfig
from Code.critic import CriticTrainer
from Code.objectives.estimators import SinkhornOptions, exact_w1_per_layer, sinkhorn_per_layer, standardize_by_teacher
from Code.objectives.hidden import mse_per_layer, sliced_wasserstein_per_layer
from Code.utils import atomic_write_json

# The variants compared: name -> CriticConfig fields over the run's critic config.
VARIANTS: dict[str, dict[str, Any]] = {
    "gp": {"penalty": "gp"},
    "lp": {"penalty": "lp"},
    "gp_unpaired": {"penalty": "gp", "pairing": "unpaired"},
    "lp_unpaired": {"penalty": "lp", "pairing": "unpaired"},
    "lp_small": {"penalty": "lp", "hidden": 32},  # a smaller critic fits less of the finite sample
}


@dataclass(frozen=True)
class CalibrationSetup:
    updates: tuple[int, ...] = (100, 500, 2000)  # readings after this many critic updates (cumulative)
    samples: int = 1024                          # positions per side in each set (train and held-out)
    variants: tuple[str, ...] = tuple(VARIANTS)
    critic: CriticConfig = dataclasses.field(default_factory=lambda: CriticConfig(warmup_steps=0, n_critic=1))
    blur: float = 0.05                           # Sinkhorn judge's blur
    projections: int = 256                       # sliced WD judge's directions
    seed: int = 0


def _every(n: int) -> Tensor:
    return torch.ones(n, dtype=torch.bool)


def judges(x: Tensor, y: Tensor, blur: float, projections: int, seed: int) -> dict[str, list[float]]:
    """Per-layer exact W1, debiased Sinkhorn (2 S_eps / D) and SW_1 between the sets `x`, `y` `(L, N, D)`."""
    every = _every(x.shape[1])
    gen = torch.Generator().manual_seed(seed)
    return {
        "exact_w1": exact_w1_per_layer(x, y).tolist(),
        "sinkhorn": sinkhorn_per_layer(x, y, every, every, blur).tolist(),
        "sliced_wd": sliced_wasserstein_per_layer(x, y, every, projections, 1, x.shape[1], gen).tolist(),
    }


def _mask(n: int) -> Tensor:
    return torch.ones(1, n, dtype=torch.bool)


def critic_readings(train: tuple[Tensor, Tensor], held: tuple[Tensor, Tensor], config: CriticConfig,
                    updates: Sequence[int], seed: int) -> tuple[list[dict[str, Any]], CriticTrainer]:
    """A fresh critic trained on `train` = (teacher, student) `(L, N, D)` raw states; after each count in
    `updates` its per-layer estimate on the training sets and on the held-out ones. Returns the rows and
    the trained critic."""
    t_train, s_train = train
    layers, n, dim = t_train.shape
    critic = CriticTrainer(layers, dim, config, seed=seed)
    rows, done = [], 0
    for target in sorted(updates):
        while done < target:
            critic.update(t_train, s_train, _mask(n))
            done += critic.n_critic
        rows.append({"updates": done,
                     "train": critic.estimate(t_train, s_train, _mask(n)).tolist(),
                     "heldout": critic.estimate(held[0], held[1], _mask(held[0].shape[1])).tolist()})
    return rows, critic


def student_gradient(critic: CriticTrainer, states: Tensor) -> list[float]:
    """Per layer, the mean over tokens of |d loss / d state| x N (raw units) the critic's student term sends
    into a student whose states are `states` `(L, N, D)`: the push each token gets."""
    x = states.clone().requires_grad_(True)
    critic.student_loss(x, _mask(x.shape[1])).sum().backward()
    return (x.grad.norm(dim=-1).mean(dim=1) * x.shape[1]).tolist()  # type: ignore[union-attr]


def mse_gradient(student: Tensor, teacher: Tensor) -> list[float]:
    """The same per-token push from the raw MSE term (`mse_per_layer`) for the student states."""
    x = student.clone().requires_grad_(True)
    mse_per_layer(x, teacher, _every(x.shape[1])).sum().backward()
    return (x.grad.norm(dim=-1).mean(dim=1) * x.shape[1]).tolist()  # type: ignore[union-attr]


def sinkhorn_beside_mse(teacher: Tensor, student: Tensor, blur: float) -> dict[str, list[float]]:
    """Per layer, in the teacher's std units: the Sinkhorn value on the same positions (paired) and on disjoint
    halves (unpaired), each as a ratio to the normalised MSE, and the cosine between each one's gradient with
    respect to the student states and MSE's. The terms report 2 S_eps / D, MSE's units, so a paired ratio near
    1 (0.5 in GeomLoss's own |x - y|^2 / 2) with a cosine near 1 says the paired term is MSE under another name:
    its optimal plan is the identity pairing."""
    n = teacher.shape[1]
    every, half = _every(n), _every(n // 2)
    x = student.clone().requires_grad_(True)
    s_std, t_std = standardize_by_teacher(x, teacher, every)
    mse = mse_per_layer(s_std, t_std, every)
    values = {"paired": sinkhorn_per_layer(s_std, t_std, every, every, blur),
              "unpaired": sinkhorn_per_layer(s_std[:, : n // 2], t_std[:, n // 2:2 * (n // 2)], half, half, blur)}
    (g_mse,) = torch.autograd.grad(mse.sum(), x, retain_graph=True)
    out: dict[str, list[float]] = {"mse_normalized": mse.tolist()}
    for name, value in values.items():
        (grad,) = torch.autograd.grad(value.sum(), x, retain_graph=True)
        out[f"{name}_over_mse"] = (value / mse).tolist()
        out[f"{name}_grad_cosine"] = torch.nn.functional.cosine_similarity(
            grad.flatten(1), g_mse.flatten(1), dim=1).tolist()
    return out


def calibrate(teacher: Tensor, student: Tensor, setup: CalibrationSetup) -> dict[str, Any]:
    """The whole calibration on raw states `(L, N, D)` at the same N positions (N >= 4 x setup.samples)."""
    layers, n, _ = teacher.shape
    k = setup.samples
    if student.shape != teacher.shape or n < 4 * k:
        raise ValueError(f"calibration needs teacher and student states of one shape with at least 4 x {k} "
                         f"positions, got {tuple(teacher.shape)} and {tuple(student.shape)}: collect more "
                         "tokens or lower --samples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(setup.seed))
    q = [perm[i * k:(i + 1) * k] for i in range(4)]
    # Teacher vs student on the same positions (train: quarter 0, held out: quarter 1); teacher vs teacher on
    # disjoint positions (train: quarters 0 and 2, held out: 1 and 3), so its true distance is ~0.
    pairs = {
        "student": ((teacher[:, q[0]], student[:, q[0]]), (teacher[:, q[1]], student[:, q[1]])),
        "teacher_self": ((teacher[:, q[0]], teacher[:, q[2]]), (teacher[:, q[1]], teacher[:, q[3]])),
    }
    out: dict[str, Any] = {"layers": layers, "samples": k, "updates": list(setup.updates), "pairs": {}}
    for name, (train, held) in pairs.items():
        s_std, t_std = standardize_by_teacher(train[1], train[0], _every(k))
        entry: dict[str, Any] = {"judges": judges(t_std, s_std, setup.blur, setup.projections, setup.seed),
                                 "critics": {}}
        for variant in setup.variants:
            config = dataclasses.replace(setup.critic, **VARIANTS[variant])
            rows, critic = critic_readings(train, held, config, setup.updates, setup.seed)
            entry["critics"][variant] = {"readings": rows}
            if name == "teacher_self":  # a student exactly on the teacher's states: the push at distance 0
                entry["critics"][variant]["grad_at_zero"] = student_gradient(critic, train[0])
        out["pairs"][name] = entry
    out["mse_grad_student"] = mse_gradient(pairs["student"][0][1], pairs["student"][0][0])
    out["sinkhorn_vs_mse"] = sinkhorn_beside_mse(pairs["student"][0][0], pairs["student"][0][1], setup.blur)
    out["sinkhorn_options"] = dataclasses.asdict(SinkhornOptions(sinkhorn_blur=setup.blur))
    return out


def table(result: dict[str, Any]) -> str:
    """A markdown table: one row per pair, variant and reading, layers' values joined by ' / '."""
    def fmt(values: Sequence[float]) -> str:
        return " / ".join(f"{v:.3g}" for v in values)

    lines = ["| pair | estimator | updates | on its training sets | held out | grad at 0 (x N) |",
             "|---|---|---|---|---|---|"]
    for name, entry in result["pairs"].items():
        for judge, values in entry["judges"].items():
            lines.append(f"| {name} | {judge} | - | {fmt(values)} | - | - |")
        for variant, data in entry["critics"].items():
            grad = fmt(data["grad_at_zero"]) if "grad_at_zero" in data else "-"
            for row in data["readings"]:
                lines.append(f"| {name} | critic {variant} | {row['updates']} | {fmt(row['train'])} | "
                             f"{fmt(row['heldout'])} | {grad} |")
    lines.append(f"| student | mse | - | - | - | {fmt(result['mse_grad_student'])} |")
    lines += ["", "| Sinkhorn beside normalised MSE (student) | per layer |", "|---|---|"]
    lines += [f"| {key} | {fmt(values)} |" for key, values in result["sinkhorn_vs_mse"].items()]
    return "\n".join(lines)


def states_from_models(teacher_path: str | Path, student_path: str | Path, data_dir: str | Path,
                       layer_map: str | None, tokens: int, seq_len: int = 128) -> tuple[Tensor, Tensor]:
    """Raw (teacher, student) states `(L, N, D)` at the matched layers over the first `tokens` positions of the
    validation split (whole blocks of `seq_len`), both models in eval mode."""
    from Code.data_pipeline.instruction_data import task_blocks
    from Code.evaluation.passes import collect_hidden
    from Code.modeling.families import num_layers
    from Code.modeling.layer_map import resolve_layer_map
    from Code.modeling.loading import load_student, load_teacher

    teacher, student = load_teacher(teacher_path), load_student(student_path).eval()
    pairs, _ = resolve_layer_map(layer_map, None, num_layers(student.config), num_layers(teacher.config))
    blocks = task_blocks(data_dir, "valid", seq_len, "lm")
    n_blocks = min(len(blocks), -(-tokens // seq_len))
    ids = torch.stack([blocks[i][:-1] for i in range(n_blocks)])
    batches = list(ids.split(8))
    t = collect_hidden(teacher, batches, [tt for _, tt in pairs], progress=False)
    s = collect_hidden(student, batches, [ss for ss, _ in pairs], progress=False)
    return torch.stack(t), torch.stack(s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--states", type=Path, help='a torch file {"teacher": (L, N, D), "student": (L, N, D)}')
    p.add_argument("--teacher", help="teacher folder (save_pretrained); with --student and --data-dir")
    p.add_argument("--student", help="student folder (a run's best/ or final/)")
    p.add_argument("--data-dir", help="prepared data; its valid split gives the positions")
    p.add_argument("--layer-map", help="student hidden -> teacher hidden, as training's flag (default: uniform)")
    p.add_argument("--tokens", type=int, default=8192, help="positions collected (at least 4 x --samples)")
    p.add_argument("--updates", default="100,500,2000", help="comma list of critic update counts")
    p.add_argument("--samples", type=int, default=1024, help="positions per set (the file needs 4x)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--critic-lr", type=float, default=1e-4, help="the critics' Adam LR (training's --critic-lr)")
    p.add_argument("--out", type=Path, help="write the result as JSON here (atomic)")
    a = p.parse_args(argv)
    try:
        updates = tuple(int(u) for u in a.updates.split(","))
        variants = tuple(v.strip() for v in a.variants.split(",") if v.strip())
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not updates or min(updates) < 1:
            raise ValueError(f"unknown variants {unknown}" if unknown else "updates must be positive")
        if a.states is not None:
            states = torch.load(a.states, map_location="cpu", weights_only=True)
            teacher, student = states["teacher"].float(), states["student"].float()
        elif a.teacher and a.student and a.data_dir:
            teacher, student = states_from_models(a.teacher, a.student, a.data_dir, a.layer_map, a.tokens)
        else:
            raise ValueError("give --states FILE, or --teacher, --student and --data-dir")
        critic = CriticConfig(warmup_steps=0, n_critic=1, lr=a.critic_lr)
        result = calibrate(teacher, student, CalibrationSetup(updates=updates, samples=a.samples, variants=variants,
                                                              critic=critic))
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        print(f"error: calibration: {str(exc).splitlines()[0]} (check the states file and the flags)", file=sys.stderr)
        return 2
    print(table(result))
    if a.out is not None:
        atomic_write_json(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
