"""WGAN-GP critics: they estimate a known Wasserstein distance, the penalty holds their gradient norm near
1, layers stay independent inside the batched module, checkpoints resume exactly, and two gloo ranks
fed different data end with identical critics."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from Code.critic import BatchedCritic, CriticConfigError, CriticTrainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _gaussians(g: torch.Generator, n: int, dim: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussians N(0, I) and N(shift * e1, I): their W1 distance is |shift| exactly."""
    mu = torch.zeros(dim)
    mu[0] = shift
    return torch.randn(1, n, dim, generator=g), torch.randn(1, n, dim, generator=g) + mu


def _train_on_gaussians(gp_lambda: float, steps: int = 300, dim: int = 4) -> CriticTrainer:
    g = torch.Generator().manual_seed(0)
    # lr 1e-3 (not the 1e-4 default) so a few hundred steps suffice. dim > 1: in exactly one
    # dimension the critic's slope can only change sign by passing through 0, where the penalty is a
    # barrier, so a critic that starts with the wrong sign can stay there; in more dimensions the
    # gradient rotates instead. The distributions still differ along one axis only.
    critic = CriticTrainer(1, dim, hidden=64, lr=1e-3, gp_lambda=gp_lambda, n_critic=1, seed=0)
    mask = torch.ones(1, 512, dtype=torch.bool)
    for _ in range(steps):
        t, s = _gaussians(g, 512, dim, 3.0)
        critic.update([t], [s], mask)
    return critic


def _grad_norms(critic: CriticTrainer, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    eps = torch.rand(t.shape[0], t.shape[1], 1, generator=torch.Generator().manual_seed(5))
    x = (eps * t + (1 - eps) * s).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic.critic(x).sum(), x)
    return grad.norm(dim=-1)


def test_estimate_approaches_the_wasserstein_distance_of_two_gaussians():
    g = torch.Generator().manual_seed(1)
    t, s = _gaussians(g, 20000, 4, 3.0)
    full = torch.ones(1, 20000, dtype=torch.bool)
    # WGAN-GP's soft penalty lets the slope settle at 1 + W/(2*lambda) on this pair (the gain 3*a beats
    # lambda*(a-1)^2 a little past a = 1): the estimate overshoots W by W/(2*lambda) relatively.
    strict = _train_on_gaussians(gp_lambda=50.0)
    assert strict.estimate([t], [s], full).item() == pytest.approx(3.0, rel=0.15)
    default = _train_on_gaussians(gp_lambda=10.0)
    estimate = default.estimate([t], [s], full).item()
    assert estimate == pytest.approx(3.0 * (1 + 3.0 / 20), rel=0.1)
    assert default.last_estimates is not None and default.last_estimates.shape == (1,)


def test_gradient_penalty_drives_the_input_gradient_norm_toward_one():
    g = torch.Generator().manual_seed(2)
    t, s = _gaussians(g, 4096, 4, 3.0)
    before = CriticTrainer(1, 4, hidden=64, seed=0)
    after = _train_on_gaussians(gp_lambda=50.0)
    err_before = (_grad_norms(before, t, s) - 1).abs().mean().item()
    err_after = (_grad_norms(after, t, s) - 1).abs().mean().item()
    assert err_before > 0.5
    assert err_after < 0.1


def test_batched_layers_are_independent():
    torch.manual_seed(0)
    critic = BatchedCritic(num_layers=3, dim=5, hidden=7)
    x = torch.randn(3, 11, 5)
    y = x.clone()
    y[0] += 10.0  # change layer 0's inputs only
    out_x, out_y = critic(x), critic(y)
    torch.testing.assert_close(out_x[1:], out_y[1:])
    assert not torch.allclose(out_x[0], out_y[0])
    critic(x)[1].sum().backward()  # layer 1's output touches layer 1's weights only
    for w in list(critic.weights) + list(critic.biases):
        assert w.grad[1].abs().sum() > 0 and w.grad[0].abs().sum() == 0 and w.grad[2].abs().sum() == 0


def _layers(g: torch.Generator, n_layers: int = 2, shape=(2, 9, 6), shift: float = 0.0):
    return [torch.randn(*shape, generator=g) + shift for _ in range(n_layers)]


def test_student_loss_reaches_features_only_and_runs_in_fp32():
    critic = CriticTrainer(2, 6, hidden=16, n_critic=1)
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    student = [h.bfloat16().requires_grad_() for h in _layers(g)]
    loss = critic.student_loss(student, mask)
    assert loss.shape == (2,) and loss.dtype == torch.float32
    loss.sum().backward()
    assert all(h.grad is not None and h.grad[mask].abs().sum() > 0 for h in student)
    assert all(h.grad[~mask].abs().sum() == 0 for h in student)
    assert all(p.grad is None for p in critic.critic.parameters())


def test_update_ignores_padding_and_is_repeatable():
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 5:] = False
    runs = []
    for garbage in (0.0, 1e3):
        g = torch.Generator().manual_seed(0)
        t, s = _layers(g), _layers(g, shift=1.0)
        for h in t + s:
            h[~mask] = garbage
        critic = CriticTrainer(2, 6, hidden=16, n_critic=3, max_samples=8, seed=3)  # subsampled path
        est = [critic.update(t, s, mask) for _ in range(3)]
        runs.append((torch.stack(est), [p.detach().clone() for p in critic.critic.parameters()]))
    torch.testing.assert_close(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b)


def test_state_dict_round_trip_continues_identically():
    g = torch.Generator().manual_seed(0)
    batches = [(_layers(g), _layers(g, shift=2.0)) for _ in range(4)]
    mask = torch.ones(2, 9, dtype=torch.bool)
    kwargs = dict(hidden=16, n_critic=2, max_samples=10, optimizer="rmsprop", schedule="cosine", total_steps=4)
    a = CriticTrainer(2, 6, **kwargs)
    for t, s in batches[:2]:
        a.update(t, s, mask)
        a.step_scheduler()
    b = CriticTrainer(2, 6, **kwargs, seed=99)
    b.load_state_dict(a.state_dict())
    for t, s in batches[2:]:
        torch.testing.assert_close(a.update(t, s, mask), b.update(t, s, mask), rtol=0, atol=0)
        a.step_scheduler()
        b.step_scheduler()
    assert a.current_lr() == b.current_lr() == pytest.approx(0.1 * 1e-4)  # the cosine ends at its floor
    with pytest.raises(CriticConfigError, match="checkpoint was made for"):
        CriticTrainer(3, 6, hidden=16).load_state_dict(a.state_dict())


def test_config_and_shape_errors_are_one_line():
    for kwargs, fragment in [({"optimizer": "sgd"}, "adam or rmsprop"), ({"schedule": "cosine"}, "total_steps"),
                             ({"n_critic": 0}, "n_critic")]:
        with pytest.raises(CriticConfigError, match=fragment) as err:
            CriticTrainer(2, 6, **kwargs)
        assert "\n" not in str(err.value)
    critic = CriticTrainer(2, 6, hidden=8)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(CriticConfigError, match="2 layers of width 6"):
        critic.update(_layers(g, 3), _layers(g, 3), torch.ones(2, 9, dtype=torch.bool))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        critic = CriticTrainer(2, 6, hidden=16, n_critic=2, max_samples=12, seed=0)
        g = torch.Generator().manual_seed(1000 + rank)  # every rank sees different data
        mask = torch.ones(2, 9, dtype=torch.bool)
        seen = []
        for _ in range(3):
            teacher = _layers(g)
            seen.append(teacher)
            critic.update(teacher, _layers(g, shift=1.0 + rank), mask)
        torch.save({**critic.state_dict(), "teacher": seen}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_two_gloo_ranks_with_different_data_keep_identical_critics(tmp_path):
    mp.spawn(_rank_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key, value in a["critic"].items():
        assert torch.equal(value, b["critic"][key]), f"critic {key} differs between ranks"
    assert not torch.equal(a["last_estimates"], b["last_estimates"])  # their data did differ
    # the input standardisation is the same on both ranks: the moments of both ranks' teacher features
    for key, value in a["moments"].items():
        assert torch.equal(value, b["moments"][key]), f"critic input moments {key} differ between ranks"
    union = torch.cat([torch.stack(batch).reshape(2, -1, 6) for r in (a, b) for batch in r["teacher"]], 1).double()
    torch.testing.assert_close(a["moments"]["mean"][:, 0], union.mean(1))
    torch.testing.assert_close(a["moments"]["m2"][:, 0] / a["moments"]["count"], union.var(1, unbiased=False))
    # and the averaging did something: a lone rank on rank 0's data ends elsewhere
    lone = CriticTrainer(2, 6, hidden=16, n_critic=2, max_samples=12, seed=0)
    g = torch.Generator().manual_seed(1000)
    for _ in range(3):
        lone.update(_layers(g), _layers(g, shift=1.0), torch.ones(2, 9, dtype=torch.bool))
    assert not torch.equal(lone.critic.weights[0], a["critic"]["weights.0"])
