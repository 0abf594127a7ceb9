"""Tests of svrt.emulator: the conditional U-Net (paper Sect. 2.2), `emulate`, weights on disk.

Fast: tiny widths except the parameter count at the paper's C = 64 (built, not run).
"""

import json

import pytest
import torch
import torch.nn as nn

from svrt.emulator import (
    DEFAULT_MODEL,
    SVCE,
    EmulatorConfig,
    count_parameters,
    emulate,
    load_model,
    padding_for,
    resolve_model_path,
    save_model,
)
from svrt.errors import SvrtError

PAPER_PARAMETERS = 17.3e6
INSTRUMENTS = ["crisp6302", "crisp8542", "chromis3934", "hifi6563"]




def tiny(width=4, n_modes=6, seed=0, **kw) -> SVCE:
    torch.manual_seed(seed)
    return SVCE(EmulatorConfig(width=width, n_modes=n_modes, **kw))


def non_trivial(model: SVCE, seed=1) -> SVCE:
    """Random BN statistics and affine parameters and a FiLM net with large weights, in eval mode:
    a freshly built model has BN = identity and a FiLM net whose outputs are all small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2, generator=g)
                mod.running_var.uniform_(0.5, 2.0, generator=g)
                mod.weight.uniform_(0.5, 1.5, generator=g)
                mod.bias.uniform_(-0.2, 0.2, generator=g)
        for p in model.film.parameters():
            p.normal_(0.0, 0.7, generator=g)
    return model.eval()


def inputs(model: SVCE, y=32, x=32, batch=1, seed=0, instrument="crisp8542"):
    g = torch.Generator().manual_seed(seed)
    obj = torch.rand(batch, 1, y, x, generator=g) + 0.5          # mean ~1
    modes = torch.randn(batch, model.config.n_modes, y, x, generator=g) * 0.5
    return obj, modes, model.one_hot(instrument, batch)


# ------------------------------------------------------------------------------------ architecture

def test_parameter_count_at_paper_width_is_17_3_million():
    model = SVCE(EmulatorConfig(width=64, n_modes=44))
    n = count_parameters(model)
    assert abs(n - PAPER_PARAMETERS) / PAPER_PARAMETERS < 0.02, n
    # regression pin: export and the runtime rely on this architecture; update on purpose only
    assert n == 17_291_779


def test_encoder_has_five_levels_with_paper_channels():
    c, m = 64, 44
    model = SVCE(EmulatorConfig(width=c, n_modes=m))
    assert len(model.encoder) == 5
    assert [lvl.second[0].out_channels for lvl in model.encoder] == [c, 2 * c, 4 * c, 8 * c, 8 * c]
    assert model.encoder[0].first[0].in_channels == m + 1          # object + M modes
    assert [lvl.conditioned for lvl in model.encoder] == [False, True, True, True, True]
    assert model.decoder[0].first[0].in_channels == 16 * c          # 8C skip + 8C from below
    assert model.head.in_channels == c and model.head.out_channels == 1


def test_encoder_feature_maps_halve_per_level():
    model = tiny(width=4).eval()
    shapes = []
    hooks = [lvl.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(out.shape))) for lvl in model.encoder]
    with torch.no_grad():
        model(*inputs(model, 64, 48))
    for h in hooks:
        h.remove()
    assert shapes == [(1, 4, 64, 48), (1, 8, 32, 24), (1, 16, 16, 12), (1, 32, 8, 6), (1, 32, 4, 3)]


@pytest.mark.parametrize("shape", [(16, 16), (32, 48), (64, 16)])
def test_output_shape_equals_input_for_multiples_of_16(shape):
    model = tiny().eval()
    obj, modes, cond = inputs(model, *shape, batch=2)
    with torch.no_grad():
        y = model(obj, modes, cond)
        assert y.shape == obj.shape
        assert torch.equal(emulate(model, obj, modes, cond), y)      # no padding needed: same call


@pytest.mark.parametrize("shape", [(40, 56), (37, 29), (5, 7), (17, 16)])
def test_emulate_any_size(shape):
    model = tiny().eval()
    obj, modes, cond = inputs(model, *shape)
    with torch.no_grad():
        assert emulate(model, obj, modes, cond).shape == obj.shape


@pytest.mark.parametrize("shape", [(37, 29), (40, 56)])
def test_emulate_crops_back_to_the_same_pixels(shape):
    """With the head zeroed the residual model is the identity: emulate must hand back the input exactly,
    which it only does when the crop undoes the padding pixel for pixel."""
    model = non_trivial(tiny())
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        obj, modes, cond = inputs(model, *shape)
        torch.testing.assert_close(emulate(model, obj, modes, cond), obj, rtol=1e-6, atol=1e-6)


def test_padding_for():
    assert padding_for(32, 48) == (0, 0, 0, 0)
    left, right, top, bottom = padding_for(37, 29)
    assert (37 + top + bottom) % 16 == 0 and (29 + left + right) % 16 == 0
    assert abs(left - right) <= 1 and abs(top - bottom) <= 1


# ------------------------------------------------------------------------------------ conditioning

def test_film_instruments_give_different_outputs():
    model = non_trivial(tiny(instruments=INSTRUMENTS))
    obj, modes, _ = inputs(model)
    with torch.no_grad():
        outs = {lab: model(obj, modes, model.one_hot(lab)) for lab in INSTRUMENTS}
        again = model(obj, modes, model.one_hot("crisp8542"))
    assert torch.equal(outs["crisp8542"], again)
    for a in INSTRUMENTS:
        for b in INSTRUMENTS:
            if a < b:
                rel = (outs[a] - outs[b]).norm() / outs[a].norm()
                assert rel > 1e-3, (a, b, float(rel))


def test_film_is_the_only_conditioning_path():
    model = non_trivial(tiny(instruments=INSTRUMENTS))
    with torch.no_grad():
        model.film[-1].weight.zero_()       # gamma = 1 + bias, beta = bias for every instrument
        obj, modes, _ = inputs(model)
        a = model(obj, modes, model.one_hot("crisp6302"))
        b = model(obj, modes, model.one_hot("hifi6563"))
    assert torch.equal(a, b)


def test_film_parameters_shape():
    model = tiny(instruments=INSTRUMENTS)
    gamma, beta = model.film_parameters(model.one_hot("chromis3934", batch=3))
    assert gamma.shape == beta.shape == (3, 1, 1, 1)


def test_one_hot():
    model = tiny(instruments=INSTRUMENTS)
    v = model.one_hot("CRISP8542", batch=2)          # labels are case-insensitive
    assert v.shape == (2, 4) and v.sum().item() == 2 and v[:, 1].tolist() == [1.0, 1.0]
    with pytest.raises(SvrtError, match="not 'gregor'"):
        model.one_hot("gregor")


# ------------------------------------------------------------------------------------ equivariance

@pytest.mark.parametrize("c", [0.25, 3.0, 1000.0])
def test_scale_equivariance(c):
    """normalize=True: f(c o) = c f(o) for c > 0, to float32 precision. (The normaliser carries a tiny
    additive epsilon, so this holds while c |o| is far above it; the objects here are ~1.)"""
    model = non_trivial(tiny())
    assert model.config.normalize
    obj, modes, cond = inputs(model, 48, 32, batch=2)
    with torch.no_grad():
        ref = model(obj, modes, cond)
        y = model(obj * c, modes, cond)
    torch.testing.assert_close(y, ref * c, rtol=2e-5, atol=2e-6 * c * float(ref.abs().max()))


def test_pedestal_and_contrast_equivariance():
    """The centred normalisation: f(a o + b) = a f(o) + b for a > 0 and any b, as for a convolution with a
    unit-sum PSF. float64: a pedestal alone (a = 1) passes to rounding (1e-10). With a != 1 the scale's
    additive epsilon (1e-6 on an 8-norm of ~0.3 here) shifts the structure term by up to ~3e-6 of itself,
    so that case gets atol 1e-5 x its amplitude."""
    model = non_trivial(tiny()).double()
    assert model.config.normalization == "centred-p8"
    obj, modes, cond = inputs(model, 48, 32, batch=2)
    obj, modes, cond = obj.double(), modes.double(), cond.double()
    with torch.no_grad():
        ref = model(obj, modes, cond)
        for b in (5.0, -2.0):
            torch.testing.assert_close(model(obj + b, modes, cond), ref + b, rtol=1e-10, atol=1e-10)
        structure = float((ref - ref.mean()).abs().max())
        for a, b in ((0.1, 1.0), (3.0, -2.0)):
            torch.testing.assert_close(model(a * obj + b, modes, cond), a * ref + b, rtol=0, atol=1e-5 * a * structure)
    # a flat image stays flat at its level, and its gradient is finite (the centred object is all zero)
    flat = torch.full_like(obj, 0.7).requires_grad_(True)
    out = model(flat, modes, cond)
    torch.testing.assert_close(out.detach(), flat.detach(), rtol=0, atol=1e-6)
    (grad,) = torch.autograd.grad(out.sum(), flat)
    assert torch.isfinite(grad).all()


def test_models_without_the_normalization_field_are_p8():
    """Weights written before the field existed were trained with the 8-norm of o itself."""
    assert EmulatorConfig.from_dict({"width": 4}).normalization == "p8"
    assert EmulatorConfig.from_dict({"width": 4, "normalization": "centred-p8"}).normalization == "centred-p8"
    with pytest.raises(SvrtError, match="normalisation"):
        EmulatorConfig(normalization="mean")


# ------------------------------------------------------------------------------------ files

def test_save_load_round_trip(tmp_path):
    model = non_trivial(tiny(instruments=INSTRUMENTS))
    path = tmp_path / "m.safetensors"
    meta = save_model(path, model, {"step": 123, "note": "round trip"})
    assert meta["parameters"] == count_parameters(model) and meta["config"]["width"] == 4
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar == meta
    loaded, meta2 = load_model(path)
    assert meta2 == meta and meta2["step"] == 123 and meta2["note"] == "round trip"
    assert not loaded.training
    assert loaded.config == model.config
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    obj, modes, cond = inputs(model)
    with torch.no_grad():
        assert torch.equal(model(obj, modes, cond), loaded(obj, modes, cond))
    # the content hash does not depend on the metadata
    assert save_model(tmp_path / "n.safetensors", model, {"other": 1})["sha256"] == meta["sha256"]


def test_load_truncated_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, tiny())
    data = path.read_bytes()
    for cut in (len(data) // 2, 20, 4):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(SvrtError, match="truncated"):
            load_model(bad)


def test_load_file_without_svrt_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in tiny().state_dict().items()}, str(path))
    with pytest.raises(SvrtError, match="'svrt' missing"):
        load_model(path)


def test_load_pickle_is_refused(tmp_path):
    path = tmp_path / "pickled.safetensors"
    torch.save(tiny().state_dict(), path)
    with pytest.raises(SvrtError):
        load_model(path)


def test_load_weights_not_matching_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    meta = {"config": EmulatorConfig(width=8, n_modes=6).to_dict()}
    save_file({k: v.contiguous() for k, v in tiny(width=4).state_dict().items()}, str(path),
              metadata={"svrt": json.dumps(meta)})
    with pytest.raises(SvrtError, match="do not match"):
        load_model(path)


def test_resolve_model_path(tmp_path, monkeypatch):
    import svrt.emulator as emulator

    with pytest.raises(SvrtError, match="not found"):
        resolve_model_path(tmp_path / "missing.safetensors")
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setattr(emulator, "bundled_models_dir", lambda: bundled)
    with pytest.raises(SvrtError, match="unknown model 'nope'; bundled models are none"):
        resolve_model_path("nope")
    save_model(bundled / f"{DEFAULT_MODEL}.safetensors", tiny())
    save_model(bundled / "other.safetensors", tiny())
    assert resolve_model_path(None) == bundled / f"{DEFAULT_MODEL}.safetensors"
    assert resolve_model_path("other") == bundled / "other.safetensors"
    with pytest.raises(SvrtError, match=f"bundled models are other, {DEFAULT_MODEL}"):
        resolve_model_path("nope")
    explicit = tmp_path / "mine.safetensors"
    save_model(explicit, tiny())
    assert resolve_model_path(str(explicit)) == explicit
    model, meta = load_model("other")
    assert meta["config"]["width"] == 4
