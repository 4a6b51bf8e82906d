import pytest
import torch
from torch import nn

from midiffusion.io import InputError
from midiffusion.diffusion.unet import AttentionBlock, UNet, timestep_embedding

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet(**overrides) -> UNet:
    torch.manual_seed(0)
    kwargs = dict(base_channels=8, channel_mults=(1, 2), attention_resolutions=(8,), num_res_blocks=1, image_size=16)
    model = UNet(**(kwargs | overrides))
    # Residual branches and the output are zero-initialised (eps = 0, t unused at init): give them
    # weights, as training would, so that outputs can differ.
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and not module.weight.any():
            nn.init.normal_(module.weight, std=0.1)
    return model.eval()


def _inputs(n=2, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=generator)
    cond = torch.rand(n, 2, size, size, generator=generator)
    return x, torch.tensor([3, 700])[:n], cond


def test_output_shape_and_zero_init():
    x, t, cond = _inputs()
    model = UNet(base_channels=8, channel_mults=(1, 2), attention_resolutions=(8,), num_res_blocks=1, image_size=16)
    eps = model(x, t, cond)
    assert eps.shape == (2, 1, 16, 16)
    assert (eps == 0).all()  # zero-initialised output layer: training starts from eps = 0


def test_condition_and_timestep_change_the_output():
    model = tiny_unet()
    x, t, cond = _inputs()
    with torch.no_grad():
        eps = model(x, t, cond)
        assert eps.abs().mean() > 0
        assert not torch.allclose(eps, model(x, t, 1 - cond))
        assert not torch.allclose(eps, model(x, t.flip(0), cond))
        # cond=None is the dropped condition: zeros.
        assert torch.equal(model(x, t, None), model(x, t, torch.zeros_like(cond)))


def test_batch_items_are_independent():
    model = tiny_unet()
    x, t, cond = _inputs()
    with torch.no_grad():
        both = model(x, t, cond)
        first = model(x[:1], t[:1], cond[:1])
    assert torch.allclose(both[:1], first, atol=1e-5)


def test_attention_at_requested_resolutions():
    def attention_count(model):
        return sum(isinstance(module, AttentionBlock) for module in model.modules())

    # 1 bottleneck attention always; 2 encoder + 3 decoder blocks per level where requested.
    assert attention_count(tiny_unet(attention_resolutions=())) == 1
    assert attention_count(tiny_unet(attention_resolutions=(8,), num_res_blocks=2)) == 1 + 2 + 3
    assert attention_count(tiny_unet(attention_resolutions=(16, 8), num_res_blocks=2)) == 1 + 2 * (2 + 3)


def test_paper_size_builds():
    model = UNet(base_channels=64, channel_mults=(1, 2, 2, 2), attention_resolutions=(16,), image_size=128)
    assert 5e6 < sum(p.numel() for p in model.parameters()) < 20e6


def test_bad_sizes_raise():
    with pytest.raises(InputError, match="attention_resolutions"):
        tiny_unet(attention_resolutions=(12,))
    with pytest.raises(InputError, match="image_size"):
        tiny_unet(image_size=15)
    x, t, cond = _inputs(size=17)
    with pytest.raises(InputError, match="divisible"):
        tiny_unet()(x, t, cond)


def test_timestep_embedding():
    embedding = timestep_embedding(torch.tensor([0, 1, 999]), 9)
    assert embedding.shape == (3, 9)
    assert torch.allclose(embedding[0, :4], torch.ones(4))  # cos(0)
    assert len({tuple(row.tolist()) for row in embedding}) == 3


def test_mixed_precision_leaves_the_cpu_in_float32():
    x, t, cond = _inputs()
    with torch.no_grad():
        mixed = tiny_unet(mixed_precision=True)(x, t, cond)
        plain = tiny_unet(mixed_precision=False)(x, t, cond)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)


def test_cpu_bfloat16_runs_the_cpu_layers_in_bfloat16_close_to_float32():
    x, t, cond = _inputs()
    with torch.no_grad():
        mixed = tiny_unet(cpu_bfloat16=True)(x, t, cond)
        plain = tiny_unet()(x, t, cond)
    assert mixed.dtype == torch.float32
    assert not torch.equal(mixed, plain)  # the layers did run in bfloat16
    assert (mixed - plain).norm() < 0.05 * plain.norm()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_mixed_precision_on_cuda_is_bfloat16_close_to_float32():
    x, t, cond = (tensor.cuda() for tensor in _inputs())
    with torch.no_grad():
        mixed = tiny_unet(mixed_precision=True).cuda()(x, t, cond)
        plain = tiny_unet(mixed_precision=False).cuda()(x, t, cond)
    assert mixed.dtype == torch.float32
    assert not torch.equal(mixed, plain)  # the layers did run in bfloat16
    assert (mixed - plain).norm() < 0.05 * plain.norm()
