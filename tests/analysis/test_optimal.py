"""Optimal stimulus: the projected line search stays on the sphere, never decreases f, and finds known optima."""

import torch

from catneuron.analysis.optimal import ascend, optimal_stimulus, project, random_starts, to_display
from catneuron.model.config import PRESETS
from catneuron.model.network import Network, NeuronId


def tiny_network() -> Network:
    torch.manual_seed(0)
    return Network(PRESETS["tiny"].model).eval()


def test_random_starts_are_zero_mean_unit_vectors():
    x = random_starts(5, (1, 6, 6), seed=3)
    assert x.shape == (5, 1, 6, 6)
    torch.testing.assert_close(x.flatten(1).norm(dim=1), torch.ones(5))
    torch.testing.assert_close(x.flatten(1).mean(dim=1), torch.zeros(5), atol=1e-7, rtol=0)
    torch.testing.assert_close(random_starts(5, (1, 6, 6), seed=3), x)


def test_line_search_keeps_unit_norm_and_increases_a_network_neuron_monotonically():
    net = tiny_network()
    neuron = NeuronId(2, "norm", 1, 2, 3)
    result = optimal_stimulus(net, neuron, starts=3, steps=15)
    torch.testing.assert_close(result.x.flatten(1).norm(dim=1), torch.ones(3))
    assert result.history.shape[1] == 3 and len(result.history) >= 2
    assert (result.history.diff(dim=0) >= 0).all()
    assert (result.history[-1] > result.history[0]).all()
    # The reported values are the neuron's activations at the returned stimuli.
    with torch.no_grad():
        torch.testing.assert_close(net.neuron(result.x, neuron), result.values)
    assert [c.value for c in result.starts] == result.values.tolist()
    # Shown in [0, 1], the stimulus gives the same activation: the network standardizes every image.
    shown = to_display(result.x[0])
    assert shown.min() == 0 and shown.max() == 1
    with torch.no_grad():
        torch.testing.assert_close(net.neuron(shown[None], neuron)[0], result.values[0], rtol=1e-4, atol=1e-4)
    assert all(p.requires_grad for p in net.parameters())  # switched off during the search only


def test_recovers_the_top_eigenvector_of_a_quadratic_form_and_reports_convergence():
    torch.manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    a = q @ torch.diag(torch.cat([torch.linspace(0, 1, 11, dtype=torch.float64), torch.tensor([2.0])])) @ q.T

    def objective(x):
        return torch.einsum("bi,ij,bj->b", x, a, x)

    result = ascend(objective, torch.randn(4, 12, dtype=torch.float64), steps=300, gtol=1e-8)
    for i, start in enumerate(result.starts):
        assert start.converged and start.reason in ("gradient", "stalled")
        assert abs(float(result.x[i] @ q[:, -1])) > 0.9999
        assert abs(start.value - 2.0) < 1e-6 and start.initial_value < start.value
    short = ascend(objective, torch.randn(2, 12, dtype=torch.float64), steps=1)
    assert [s.reason for s in short.starts] == ["steps", "steps"] and not short.starts[0].converged
    untouched = ascend(objective, torch.randn(2, 12, dtype=torch.float64) * 5, steps=0)
    torch.testing.assert_close(untouched.x, project(untouched.x))


def test_optimal_stimulus_of_a_template_neuron_is_the_template():
    """A stage-1 filter unit computes <w, window of standardize(x)>: with a zero-mean w, the maximum over
    the sphere is w in its window and zeros elsewhere."""
    net = tiny_network()
    encoder = net.stages[0].encoder
    k, side, y, x, m = encoder.kernel_size, encoder.out_shape[1], 3, 7, 2
    torch.manual_seed(5)
    template = torch.randn(k, k)
    template -= template.mean()
    with torch.no_grad():
        encoder.weight[y * side + x, m] = template.flatten()
    result = optimal_stimulus(net, NeuronId(1, "filter", m, y, x), starts=3, steps=100)
    expected = torch.zeros(1, 16, 16)
    expected[0, y:y + k, x:x + k] = template
    best = result.x[result.best]
    cosine = float((best * expected).sum() / (best.norm() * expected.norm()))
    assert cosine > 0.99
    assert result.starts[result.best].converged


def quadratic(seed: int = 1):
    torch.manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(0, 2, 12, dtype=torch.float64)) @ q.T
    return lambda x: torch.einsum("bi,ij,bj->b", x, a, x)


def test_a_time_budget_stops_every_running_start_and_is_not_convergence():
    result = ascend(quadratic(), torch.randn(3, 12, dtype=torch.float64), steps=500, gtol=0, ftol=0, max_seconds=0)
    assert [s.reason for s in result.starts] == ["time"] * 3
    assert not any(s.converged for s in result.starts) and len(result.history) == 2  # one iteration, then stop


def test_the_tolerance_decides_when_a_start_has_converged():
    x0 = torch.randn(2, 12, dtype=torch.float64)
    loose = ascend(quadratic(), x0, steps=500, gtol=0, ftol=1e-2)
    tight = ascend(quadratic(), x0, steps=500, gtol=0, ftol=1e-12)
    assert all(s.reason == "stalled" and s.converged for s in loose.starts)
    assert all(a.iterations < b.iterations for a, b in zip(loose.starts, tight.starts, strict=True))
    assert tight.values.min() >= loose.values.min()


def test_progress_shows_iterations_the_best_value_and_the_starts_running(capsys):
    ascend(quadratic(), torch.randn(2, 12, dtype=torch.float64), steps=3, gtol=0, ftol=0, progress=True)
    err = capsys.readouterr().err
    assert "iteration 1/3" in err and "iteration 3/3" in err and "it/s" in err
    assert "best f" in err and "running 2" in err and "left" in err
    ascend(quadratic(), torch.randn(2, 12, dtype=torch.float64), steps=3)
    assert capsys.readouterr().err == ""
