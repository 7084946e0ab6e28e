"""The stage objective and the network: terms, gradients against finite differences, neuron access."""

import dataclasses

import pytest
import torch

from catneuron.model.config import PRESETS
from catneuron.model.local import LocalDecoder, LocallyConnected2d
from catneuron.model.network import Network, NeuronId, standardize
from catneuron.model.stage import Stage


def tiny_network(**changes) -> Network:
    torch.manual_seed(0)
    return Network(dataclasses.replace(PRESETS["tiny"].model, **changes)).double()


def test_stage_terms_follow_the_objective():
    torch.manual_seed(0)
    stage = Stage(2, 8, PRESETS["tiny"].model.stages[1], sparsity=0.3, eps=0.01).double()
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    out = stage(x)
    h = stage.encoder(x)
    recon = ((stage.decoder(h) - x) ** 2).sum() / 4
    sparse = 0.3 * torch.sqrt(0.01 + torch.nn.functional.avg_pool2d(h * h, 3, 1) * 9).sum() / 4
    torch.testing.assert_close(out.reconstruction, recon)
    torch.testing.assert_close(out.sparsity, sparse)
    torch.testing.assert_close(out.loss, recon + sparse)


def stage_objective(net: Network, images: torch.Tensor, stage: int | None) -> torch.Tensor:
    outputs = net(images)
    return net.loss(outputs) if stage is None else outputs[stage].loss


@pytest.mark.parametrize("detach", [True, False])
def test_objective_gradient_matches_finite_differences(detach):
    """Detached: each stage's weights get the gradient of that stage's objective. Not detached: of the sum."""
    net = tiny_network(detach_stages=detach)
    images = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    for index, stage in enumerate(net.stages):
        which = index if detach else None
        params = list(stage.parameters())
        grads = torch.autograd.grad(stage_objective(net, images, which), params)
        for p, g in zip(params, grads, strict=True):
            flat = p.data.view(-1)
            for i in torch.randint(0, flat.numel(), (5,), generator=gen).tolist():
                old = flat[i].item()
                flat[i] = old + 1e-6
                up = stage_objective(net, images, which).item()
                flat[i] = old - 1e-6
                down = stage_objective(net, images, which).item()
                flat[i] = old
                numeric = (up - down) / 2e-6
                assert abs(numeric - g.view(-1)[i].item()) <= 1e-5 * max(1.0, abs(numeric)), (index, p.shape, i)


def test_detached_stages_train_only_their_own_weights():
    net = tiny_network(detach_stages=True)
    outputs = net(torch.rand(2, 1, 16, 16, dtype=torch.float64))
    grads = torch.autograd.grad(outputs[2].loss, list(net.stages[0].parameters()), allow_unused=True)
    assert all(g is None for g in grads)
    net = tiny_network(detach_stages=False)
    outputs = net(torch.rand(2, 1, 16, 16, dtype=torch.float64))
    grads = torch.autograd.grad(outputs[2].loss, [net.stages[0].encoder.weight])
    assert grads[0].abs().sum() > 0


def test_no_lcn_stage_outputs_pooled_responses():
    net = tiny_network(lcn=False)
    out = net(torch.rand(2, 1, 16, 16, dtype=torch.float64))[0]
    torch.testing.assert_close(out.norm, out.pool)


def test_neuron_equals_its_entry_in_activations_and_is_differentiable():
    net = tiny_network()
    images = torch.rand(3, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    acts = net.activations(images)
    assert set(acts) == {(s, sub) for s in (1, 2, 3) for sub in ("filter", "pool", "norm")}
    for key, shape in net.sublayer_shapes().items():
        assert acts[key].shape[1:] == (shape[0], shape[1], shape[1])
    nid = NeuronId(2, "pool", 1, 3, 2)
    value = net.neuron(images, nid)
    torch.testing.assert_close(value, acts[(2, "pool")][:, 1, 3, 2])
    value.sum().backward()
    assert images.grad.abs().sum() > 0


def test_neuron_id_round_trip_and_errors():
    nid = NeuronId(3, "norm", 2, 4, 5)
    assert str(nid) == "s3.norm.m2.y4.x5"
    assert NeuronId.parse(str(nid)) == nid
    for bad in ("s3.norm.m2.y4", "x3.norm.m2.y4.x5", "s3.bogus.m2.y4.x5", "s3.norm.mA.y4.x5"):
        with pytest.raises(ValueError, match="not a neuron id"):
            NeuronId.parse(bad)


def test_standardize_gives_zero_mean_unit_std_per_image():
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64) * torch.tensor([1, 2, 5, 9.0]).view(4, 1, 1, 1)
    y = standardize(x).view(4, -1)
    torch.testing.assert_close(y.mean(1), torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(y.std(1), torch.ones(4, dtype=torch.float64))


def test_weight_norm_projects_filters_to_unit_norm():
    net = tiny_network(weight_norm="both")
    net.normalize_weights()
    for stage in net.stages:
        torch.testing.assert_close(stage.encoder.weight.norm(dim=2), torch.ones_like(stage.encoder.weight[..., 0]))
        torch.testing.assert_close(stage.decoder.weight.norm(dim=2), torch.ones_like(stage.decoder.weight[..., 0]))


def test_sigmoid_encoder_codes_are_sigmoids_of_the_linear_filter():
    linear, sigmoid = tiny_network(), tiny_network(encoder="sigmoid")
    images = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(sigmoid(images)[0].filter, torch.sigmoid(linear(images)[0].filter))


def test_bf16_precision_reaches_every_locally_connected_layer_and_keeps_the_objective():
    torch.manual_seed(0)
    net = Network(PRESETS["tiny"].model)
    images = torch.rand(8, 1, 16, 16)
    loss = torch.no_grad()(lambda: net.loss(net(images)))
    full = loss()
    net.set_precision("bf16")
    layers = [m for m in net.modules() if isinstance(m, (LocallyConnected2d, LocalDecoder))]
    assert len(layers) == 6 and all(m.operand_dtype == torch.bfloat16 for m in layers)
    half = loss()
    assert half.dtype == torch.float32 and all(p.dtype == torch.float32 for p in net.parameters())
    assert half != full and abs(float(half / full) - 1) < 0.01
    net.set_precision("float32")
    assert loss() == full
