"""A small ReLU MLP fitted with numpy + scipy (L-BFGS), and its export to ONNX (MatMul/Add/Relu) with the
input normalisation baked in. Trained on *groups*: a group's prediction is a weighted sum of per-sample
outputs (a cycle total, or one logged sample), which is what the EPA data and logged telemetry both give.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import minimize


@dataclasses.dataclass
class Mlp:
    """y = W_out relu(... relu(((x - mean) / std) W1 + b1) ...) + b_out, one output."""

    mean: np.ndarray
    std: np.ndarray
    weights: list[np.ndarray]
    biases: list[np.ndarray]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs [N] in float64 (the reference the ONNX export is checked against)."""
        h = (np.asarray(x, float) - self.mean) / self.std
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=False)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0]


def _unpack(theta: np.ndarray, shapes: list[tuple[int, int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    ws, bs, i = [], [], 0
    for n_in, n_out in shapes:
        ws.append(theta[i:i + n_in * n_out].reshape(n_in, n_out))
        i += n_in * n_out
        bs.append(theta[i:i + n_out])
        i += n_out
    return ws, bs


def fit_grouped(x: np.ndarray, base: np.ndarray, group: np.ndarray, target: np.ndarray, *,
                hidden: tuple[int, ...] = (16,), l2: float = 1e-3, max_iter: int = 400, seed: int = 0,
                progress: Callable[[int, float], None] | None = None) -> Mlp:
    """Fit r(x) so that for every group g: sum_{i in g} base_i * (1 + r(x_i)) ~= target_g (relative error).

    x [N, F] features, base [N] per-sample weighted baseline (e.g. physics CO2 x g/mi weight), group [N] ints
    in 0..G-1, target [G]. Minimises mean((pred_g - target_g)/target_g)^2 + l2*|W|^2 with L-BFGS.
    """
    x = np.asarray(x, float)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    xn = (x - mean) / std
    sizes = [x.shape[1], *hidden, 1]
    shapes = list(zip(sizes[:-1], sizes[1:], strict=False))
    rng = np.random.default_rng(seed)
    theta0 = np.concatenate([np.concatenate([rng.normal(0, 0.5 / np.sqrt(a), a * b), np.zeros(b)]) for a, b in shapes])
    # The last layer starts at zero: training begins from "physics is right".
    last = shapes[-1][0] * shapes[-1][1] + shapes[-1][1]
    theta0[-last:] = 0.0
    n_groups = len(target)
    base_sum = np.bincount(group, weights=base, minlength=n_groups)
    it = [0]

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        ws, bs = _unpack(theta, shapes)
        acts = [xn]
        h = xn
        for i, (w, b) in enumerate(zip(ws, bs, strict=False)):
            h = h @ w + b
            if i < len(ws) - 1:
                h = np.maximum(h, 0.0)
            acts.append(h)
        r = h[:, 0]
        pred = base_sum + np.bincount(group, weights=base * r, minlength=n_groups)
        err = (pred - target) / target
        loss = float(np.mean(err**2)) + l2 * sum(float(np.sum(w * w)) for w in ws)
        d_pred = 2.0 * err / target / n_groups
        delta = (d_pred[group] * base)[:, None]
        grads_w, grads_b = [], []
        for i in range(len(ws) - 1, -1, -1):
            grads_w.append(acts[i].T @ delta + 2 * l2 * ws[i])
            grads_b.append(delta.sum(axis=0))
            if i > 0:
                delta = (delta @ ws[i].T) * (acts[i] > 0)
        grads_w.reverse()
        grads_b.reverse()
        flat = [np.concatenate([gw.ravel(), gb]) for gw, gb in zip(grads_w, grads_b, strict=True)]
        return loss, np.concatenate(flat)

    def callback(theta: np.ndarray) -> None:
        it[0] += 1
        if progress and it[0] % 25 == 0:
            progress(it[0], loss_grad(theta)[0])

    res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B", callback=callback,
                   options={"maxiter": max_iter})
    ws, bs = _unpack(res.x, shapes)
    return Mlp(mean, std, [w.copy() for w in ws], [b.copy() for b in bs])


def widen(model: Mlp, used: Sequence[int], n_inputs: int) -> Mlp:
    """The same function taking ``n_inputs`` features, of which only the columns ``used`` (the fitted model's
    inputs, in order) reach it: the other columns get zero first-layer weights, so the model ignores them."""
    mean, std = np.zeros(n_inputs), np.ones(n_inputs)
    w0 = np.zeros((n_inputs, model.weights[0].shape[1]))
    idx = np.asarray(used, int)
    mean[idx], std[idx], w0[idx] = model.mean, model.std, model.weights[0]
    return Mlp(mean, std, [w0, *model.weights[1:]], list(model.biases))


def to_onnx(model: Mlp, input_name: str, output_name: str, *, metadata: dict[str, str] | None = None,
            opset: int = 17) -> bytes:
    """Serialise as an ONNX graph: Sub/Div (baked normalisation), MatMul/Add/Relu; dynamic batch dimension."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f32 = np.float32
    inits = [numpy_helper.from_array(model.mean.astype(f32), "norm_mean"),
             numpy_helper.from_array(model.std.astype(f32), "norm_std")]
    nodes = [helper.make_node("Sub", [input_name, "norm_mean"], ["x_centered"]),
             helper.make_node("Div", ["x_centered", "norm_std"], ["h0"])]
    prev = "h0"
    for i, (w, b) in enumerate(zip(model.weights, model.biases, strict=False)):
        inits += [numpy_helper.from_array(w.astype(f32), f"w{i}"), numpy_helper.from_array(b.astype(f32), f"b{i}")]
        last = i == len(model.weights) - 1
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [output_name if last else f"a{i}"])]
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i + 1}"]))
            prev = f"h{i + 1}"
    n_in = model.weights[0].shape[0]
    graph = helper.make_graph(
        nodes, "carbon_residual",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", 1])],
        initializer=inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="carbon_ai")
    m.ir_version = 8  # readable by ONNX Runtime / TensorRT builds of the JetPack 5-6 era
    for key, value in (metadata or {}).items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(m)
    return m.SerializeToString()
