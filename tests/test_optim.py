"""Optimisers, gradient clipping and schedules (bptt.optim), checked against torch.optim."""
import json
import math

import numpy as np
import pytest

from bptt.optim import (SGD, Adam, AdamW, clip_grad_norm, clip_grad_value, make_optimizer,
                        make_schedule)

SHAPES = {"weight_ih": (6, 3), "weight_hh": (6, 2), "bias": (6,)}

# (name, our kwargs, torch class name, torch kwargs)
CASES = [
    ("sgd", {}, "SGD", {}),
    ("sgd", {"momentum": 0.9}, "SGD", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.8, "dampening": 0.3, "weight_decay": 0.05}, "SGD",
     {"momentum": 0.8, "dampening": 0.3, "weight_decay": 0.05}),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, "SGD",
     {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("adagrad", {}, "Adagrad", {}),
    ("adagrad", {"eps": 1e-3, "weight_decay": 0.1}, "Adagrad", {"eps": 1e-3, "weight_decay": 0.1}),
    ("rmsprop", {}, "RMSprop", {}),
    ("rmsprop", {"alpha": 0.9, "eps": 1e-6, "momentum": 0.7, "weight_decay": 0.02}, "RMSprop",
     {"alpha": 0.9, "eps": 1e-6, "momentum": 0.7, "weight_decay": 0.02}),
    ("rmsprop", {"centered": True, "momentum": 0.5}, "RMSprop", {"centered": True, "momentum": 0.5}),
    ("adam", {}, "Adam", {}),
    ("adam", {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}, "Adam",
     {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("adamw", {}, "AdamW", {}),
    ("adamw", {"betas": (0.5, 0.9), "weight_decay": 0.3}, "AdamW", {"betas": (0.5, 0.9), "weight_decay": 0.3}),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def grad_sequence(n, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return [{k: (rng.standard_normal(s) * 3).astype(dtype) for k, s in SHAPES.items()} for _ in range(n)]


def run_ours(name, kw, dtype, steps, lr=0.05):
    params = make_params(dtype)
    opt = make_optimizer(name, params, lr, **kw)
    history = []
    for g in grad_sequence(steps, dtype):
        opt.step(g)
        history.append({k: p.copy() for k, p in params.items()})
    return opt, params, history


@pytest.mark.parametrize("name, kw, tname, tkw", CASES, ids=IDS)
def test_matches_torch_float64(name, kw, tname, tkw):
    torch = pytest.importorskip("torch")
    steps, lr = 6, 0.05
    _, _, ours = run_ours(name, kw, np.float64, steps, lr)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in make_params(np.float64).items()}
    topt = getattr(torch.optim, tname)(list(tparams.values()), lr=lr, foreach=False, **tkw)
    for k, g in enumerate(grad_sequence(steps, np.float64)):
        for n, p in tparams.items():
            p.grad = torch.from_numpy(g[n].copy())
        topt.step()
        for n, p in tparams.items():
            np.testing.assert_allclose(ours[k][n], p.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name} {kw} step {k + 1} {n}")


def test_adam_state_matches_torch():
    torch = pytest.importorskip("torch")
    opt, _, _ = run_ours("adam", {"weight_decay": 0.1}, np.float64, 4)
    tparams = [torch.tensor(v, requires_grad=True) for v in make_params(np.float64).values()]
    topt = torch.optim.Adam(tparams, lr=0.05, weight_decay=0.1, foreach=False)
    for g in grad_sequence(4, np.float64):
        for p, gv in zip(tparams, g.values()):
            p.grad = torch.from_numpy(gv.copy())
        topt.step()
    for p, name in zip(tparams, SHAPES):
        st = topt.state[p]
        np.testing.assert_allclose(opt.state[name]["exp_avg"], st["exp_avg"].numpy(), rtol=1e-13)
        np.testing.assert_allclose(opt.state[name]["exp_avg_sq"], st["exp_avg_sq"].numpy(), rtol=1e-13)
    assert opt.step_count == 4


@pytest.mark.parametrize("name, kw, tname, tkw", CASES[1::3], ids=IDS[1::3])
def test_float32_stays_float32_and_matches_torch(name, kw, tname, tkw):
    torch = pytest.importorskip("torch")
    opt, params, ours = run_ours(name, kw, np.float32, 4)
    assert all(p.dtype == np.float32 for p in params.values())
    assert all(a.dtype == np.float32 for s in opt.state.values() for a in s.values())
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in make_params(np.float32).items()}
    topt = getattr(torch.optim, tname)(list(tparams.values()), lr=0.05, foreach=False, **tkw)
    for g in grad_sequence(4, np.float32):
        for n, p in tparams.items():
            p.grad = torch.from_numpy(g[n].copy())
        topt.step()
    for n, p in tparams.items():
        np.testing.assert_allclose(params[n], p.detach().numpy(), rtol=2e-5, atol=1e-6)


def test_updates_parameters_in_place_and_deterministically():
    params = make_params(np.float64)
    live = dict(params)
    opt = Adam(params, 0.01)
    opt.step(grad_sequence(1, np.float64)[0])
    assert all(live[k] is params[k] for k in params)
    assert not np.array_equal(params["bias"], make_params(np.float64)["bias"])
    _, a, _ = run_ours("rmsprop", {"momentum": 0.9}, np.float32, 5)
    _, b, _ = run_ours("rmsprop", {"momentum": 0.9}, np.float32, 5)
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, kw", [(c[0], c[1]) for c in CASES], ids=IDS)
def test_update_kernels_give_the_bits_of_the_numpy_expressions(name, kw, dtype):
    """Every optimiser's one-pass kernel (bptt.kernels.optim) against the NumPy expressions (its
    reference twin, which a non-contiguous parameter runs through): the same bits over ten
    steps (the first, where SGD's momentum starts, among them), on one thread and on two, on
    arrays long enough to be split between them; the parameters move, and gradients of 0
    (where a signed zero or a skipped term would show) are among them."""
    from bptt import jit

    rng = np.random.default_rng(3)
    shapes = {"w": (300, 70), "b": (70,)}
    start = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads = [{k: (rng.standard_normal(s) * 3).astype(dtype) for k, s in shapes.items()} for _ in range(10)]
    for g in grads[3:5]:
        g["b"][::3] = 0.0
    results = []
    old = jit.get_threads()
    for threads, contiguous in ((1, True), (2, True), (1, False)):
        jit.set_threads(min(threads, jit.max_threads()))
        try:
            if contiguous:
                params = {k: a.copy() for k, a in start.items()}
            else:   # every other column of a wider array: the NumPy path
                params = {k: np.repeat(a, 2, axis=-1)[..., ::2] for k, a in start.items()}
                assert not params["w"].flags.c_contiguous
            opt = make_optimizer(name, params, 0.05, **kw)
            for g in grads:
                opt.step({k: (g[k] if contiguous else np.repeat(g[k], 2, axis=-1)[..., ::2]) for k in g})
        finally:
            jit.set_threads(old)
        results.append({k: np.ascontiguousarray(a) for k, a in params.items()})
        results.append({f"{k}.{b}": np.ascontiguousarray(a) for k, st in opt.state.items() for b, a in st.items()})
    for ours, ref in ((results[0], results[4]), (results[2], results[4]), (results[1], results[5]),
                      (results[3], results[5])):
        for k in ref:
            assert np.array_equal(ours[k], ref[k]), k
    assert not np.array_equal(results[0]["w"], start["w"])


@pytest.mark.parametrize("name, kw", [(c[0], c[1]) for c in CASES], ids=IDS)
def test_state_dict_resume_is_bit_for_bit(name, kw):
    grads = grad_sequence(6, np.float32)
    # uninterrupted run
    p_full = make_params(np.float32)
    o_full = make_optimizer(name, p_full, 0.03, **kw)
    for g in grads:
        o_full.step(g)
    # three steps, save, then a fresh optimiser restored from the snapshot does the rest
    p_a = make_params(np.float32)
    o_a = make_optimizer(name, p_a, 0.03, **kw)
    for g in grads[:3]:
        o_a.step(g)
    snap_params = {k: v.copy() for k, v in p_a.items()}
    snap = o_a.state_dict()
    o_a.step(grads[3])   # the snapshot is a copy: later steps must not change it
    p_b = {k: v.copy() for k, v in snap_params.items()}
    o_b = make_optimizer(name, p_b, 1.0)
    o_b.load_state_dict(snap)
    assert o_b.lr == 0.03 and o_b.step_count == 3 and o_b.hyper == o_full.hyper
    for g in grads[3:]:
        o_b.step(g)
    for k in p_full:
        assert np.array_equal(p_full[k], p_b[k]), k


def test_state_dict_is_plain_data():
    opt, _, _ = run_ours("adamw", {}, np.float64, 2)
    sd = opt.state_dict()
    arrays = [a for s in sd["state"].values() for a in s.values()]
    assert all(isinstance(a, np.ndarray) for a in arrays)
    json.dumps({k: v for k, v in sd.items() if k != "state"})   # the rest is JSON-able
    assert sd["hyper"]["betas"] == [0.9, 0.999]


def test_load_state_dict_rejects_mismatches():
    opt, params, _ = run_ours("adam", {}, np.float64, 1)
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="optimizer state is for 'adam', not 'sgd'"):
        SGD(params, 0.1).load_state_dict(sd)
    other = {"w": np.zeros(3)}
    with pytest.raises(ValueError, match="other parameters"):
        Adam(other, 0.1).load_state_dict(sd)
    bad = opt.state_dict()
    bad["state"]["bias"]["exp_avg"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"state\['bias'\]\['exp_avg'\] must be a float64 array of shape \(6,\)"):
        opt.load_state_dict(bad)
    f32 = opt.state_dict()
    f32["state"]["bias"]["exp_avg"] = f32["state"]["bias"]["exp_avg"].astype(np.float32)
    with pytest.raises(ValueError, match="float64"):
        opt.load_state_dict(f32)
    neg = opt.state_dict()
    neg["lr"] = -1.0
    with pytest.raises(ValueError, match="lr must be"):
        opt.load_state_dict(neg)
    assert opt.lr == 0.05   # nothing was changed by the failed loads


def test_step_checks_gradients():
    params = make_params(np.float64)
    opt = SGD(params, 0.1)
    g = grad_sequence(1, np.float64)[0]
    with pytest.raises(ValueError, match=r"missing \['bias'\]"):
        opt.step({k: v for k, v in g.items() if k != "bias"})
    with pytest.raises(ValueError, match=r"grads\['bias'\] must be a float64 array of shape \(6,\), got float32"):
        opt.step(dict(g, bias=g["bias"].astype(np.float32)))


def test_make_optimizer_rejects_bad_names_options_and_values():
    params = make_params(np.float64)
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adagrad, rmsprop, adam, adamw; got 'lbfgs'"):
        make_optimizer("lbfgs", params, 0.1)
    with pytest.raises(ValueError, match="optimizer adam does not take option 'momentum'"):
        make_optimizer("adam", params, 0.1, momentum=0.9)
    assert isinstance(make_optimizer("AdamW", params, 0.1), AdamW)
    assert make_optimizer("adamw", params, 0.1).weight_decay == 0.01
    for name, kw, msg in [("sgd", {"momentum": -0.1}, "momentum"),
                          ("sgd", {"nesterov": True}, "nesterov momentum needs momentum > 0"),
                          ("adam", {"betas": (0.9, 1.0)}, r"betas\[1\]"),
                          ("adam", {"betas": 0.9}, "betas must be a pair"),
                          ("rmsprop", {"alpha": 1.5}, "alpha"),
                          ("adagrad", {"eps": float("nan")}, "eps")]:
        with pytest.raises(ValueError, match=msg):
            make_optimizer(name, params, 0.1, **kw)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        make_optimizer("sgd", params, -1)
    with pytest.raises(ValueError, match="float32 or float64"):
        make_optimizer("sgd", {"w": np.zeros(3, np.int64)}, 0.1)
    with pytest.raises(ValueError, match="non-empty dict"):
        make_optimizer("sgd", {}, 0.1)


def test_lr_is_settable_between_steps():
    params = {"w": np.ones(2)}
    opt = SGD(params, 0.1)
    opt.lr = 0.5
    opt.step({"w": np.ones(2)})
    assert params["w"].tolist() == [0.5, 0.5]


# -- clipping -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(dtype, max_norm):
    torch = pytest.importorskip("torch")
    grads = grad_sequence(1, dtype)[0]
    before = {k: v.copy() for k, v in grads.items()}
    tg = [torch.zeros(v.shape, dtype=torch.float64 if dtype == np.float64 else torch.float32,
                      requires_grad=True) for v in grads.values()]
    for t, v in zip(tg, grads.values()):
        t.grad = torch.from_numpy(v.copy())
    tnorm = float(torch.nn.utils.clip_grad_norm_(tg, max_norm, foreach=False))
    norm = clip_grad_norm(grads, max_norm)
    exact = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in before.values()))
    assert norm == pytest.approx(exact, rel=1e-14)
    assert norm == pytest.approx(tnorm, rel=1e-12 if dtype == np.float64 else 1e-6)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    for t, (k, v) in zip(tg, grads.items()):
        assert v.dtype == dtype
        np.testing.assert_allclose(v, t.grad.numpy(), rtol=rtol)
    if max_norm > norm:
        assert all(np.array_equal(grads[k], before[k]) for k in grads)   # untouched, bit for bit
    else:
        clipped = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in grads.values()))
        assert clipped == pytest.approx(max_norm, rel=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm_sums_squares_with_numpys_bits(dtype):
    """The norm's sum of squares (bptt.kernels.optim.sum_squares, one pass) is NumPy's pairwise
    sum bit for bit, at every length up to past two of its blocks and at lengths whose halves
    split again, on values spread over ten decades (where another order rounds otherwise); and
    clip_grad_norm gives the same norm and gradients whether an array takes the kernel or, not
    contiguous, NumPy."""
    from bptt.kernels.optim import sum_squares

    rng = np.random.default_rng(5)
    out = np.empty(1)
    for n in [*range(1, 300), 1000, 4097, 8193, 16640, 300001]:
        g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-5, 5, n)).astype(dtype)
        sum_squares(out, g)
        assert out[0] == float(np.sum(np.square(g.astype(np.float64)))), n
    grads = {"w": (rng.standard_normal((130, 70)) * 10.0 ** rng.uniform(-3, 3, (130, 70))).astype(dtype),
             "b": rng.standard_normal(70).astype(dtype)}
    wide = {k: np.repeat(g, 2, axis=-1)[..., ::2] for k, g in grads.items()}
    assert not wide["w"].flags.c_contiguous
    n1, n2 = clip_grad_norm(grads, 1.0), clip_grad_norm(wide, 1.0)
    assert n1 == n2 and all(np.array_equal(grads[k], wide[k]) for k in grads)
    half = {"h": np.full(7, 3.0, np.float16), "e": np.zeros(0, dtype)}   # no kernel for these: NumPy's
    assert clip_grad_norm(half, 100.0) == math.sqrt(63.0)


def test_clip_grad_norm_nonfinite_is_reported_not_applied():
    grads = {"a": np.array([1.0, np.inf]), "b": np.array([2.0])}
    assert clip_grad_norm(grads, 1.0) == math.inf
    assert grads["b"].tolist() == [2.0]
    with pytest.raises(ValueError, match="total gradient norm is nan"):
        clip_grad_norm({"a": np.array([np.nan])}, 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, 0.0)


def test_clip_grad_value_matches_torch():
    torch = pytest.importorskip("torch")
    grads = grad_sequence(1, np.float64)[0]
    tg = [torch.zeros(v.shape, dtype=torch.float64, requires_grad=True) for v in grads.values()]
    for t, v in zip(tg, grads.values()):
        t.grad = torch.from_numpy(v.copy())
    torch.nn.utils.clip_grad_value_(tg, 1.5)
    clip_grad_value(grads, 1.5)
    for t, v in zip(tg, grads.values()):
        assert np.array_equal(v, t.grad.numpy())
    assert max(float(np.abs(v).max()) for v in grads.values()) == 1.5
    with pytest.raises(ValueError, match="clip"):
        clip_grad_value(grads, -1)


# -- schedules ----------------------------------------------------------------------------------

def test_constant_and_step_schedules():
    const = make_schedule("constant", 0.1, 100)
    assert [const(s) for s in (0, 50, 1000)] == [0.1, 0.1, 0.1]
    step = make_schedule("step", 1.0, 100, step_size=10, gamma=0.5)
    assert [step(s) for s in (0, 9, 10, 19, 20, 35)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    with pytest.raises(ValueError, match="step_size must be a positive integer"):
        make_schedule("step", 1.0, 100)


def test_step_schedule_matches_torch_steplr():
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.3)
    ours = make_schedule("step", 0.3, 50, step_size=7, gamma=0.3)
    for s in range(50):
        assert ours(s) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()


def test_cosine_schedule_matches_torch_and_warms_up():
    torch = pytest.importorskip("torch")
    total, base, low = 40, 0.2, 0.01
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=low)
    ours = make_schedule("cosine", base, total, min_lr=low)
    for s in range(total + 1):
        assert ours(s) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()
    assert ours(total + 10) == low
    warm = make_schedule("cosine", 1.0, 110, warmup=10)
    assert [warm(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert warm(10) == 1.0 and warm(60) == pytest.approx(0.5) and warm(110) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="warmup must be less than total_steps"):
        make_schedule("cosine", 1.0, 10, warmup=10)
    with pytest.raises(ValueError, match="schedule must be one of constant, step, cosine"):
        make_schedule("linear", 1.0, 10)
    with pytest.raises(ValueError, match="min_lr"):
        make_schedule("cosine", 0.1, 10, min_lr=0.5)
