"""GraphModule: the model contract on a hand-built graph (outputs, pruning, layouts, ReLU redirect)."""

import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis.errors import JaxvisError
from jaxvis.models.activations import RECTIFIED, TRUE
from jaxvis.models.graph import GraphModule
from jaxvis.models.graph.build import GraphBuilder


def _graph():
    """conv -> relu -> flatten (C·H·W) -> linear, and a [C,1,1] buffer scaling the conv."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("tiny", "test")
    b.set_input("x", (1, 2, 4, 4))
    b.add_param("w", rng.normal(size=(3, 2, 3, 3)).astype(np.float32))
    b.add_param("scale", np.array([1.0, -2.0, 0.5], np.float32).reshape(3, 1, 1))
    b.add_param("fc", rng.normal(size=(5, 3 * 4 * 4)).astype(np.float32))
    b.mark_weight("w", "conv", 1, "conv")
    b.node("conv", ["x", "w", None], ["c"], dict(stride=(1, 1), padding=((1, 1), (1, 1))), name="conv")
    b.node("mul", ["c", "scale"], ["s"], name="scaled")
    b.node("relu", ["s"], ["r"], name="relu")
    b.node("flatten", ["r"], ["f"], dict(start=1, end=-1), name="flat")
    b.node("linear", ["f", "fc", None], ["y"], name="fc")
    return b.finish([("conv", "c"), ("relu", "r"), ("fc", "y")], ["y"])


def _numpy_reference(x, params):
    w = params["w"]  # HWIO
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    c = np.zeros(x.shape[:3] + (3,), np.float32)
    for i in range(3):
        for j in range(3):
            c += np.einsum("bhwi,io->bhwo", xp[:, i:i + 4, j:j + 4], w[i, j])
    r = np.maximum(c * params["scale"].reshape(3), 0)
    flat = r.transpose(0, 3, 1, 2).reshape(len(x), -1)  # torch's C·H·W order
    return {"conv": c, "relu": r, "fc": flat @ params["fc"].T}


def test_matches_numpy_and_returns_exactly_the_requested_layers():
    graph, variables = _graph()
    x = np.random.default_rng(1).normal(size=(3, 4, 4, 2)).astype(np.float32)
    ref = _numpy_reference(x, {k: np.asarray(v) for k, v in variables["params"].items()})
    module = GraphModule(graph)
    out = module.apply(variables, x, outputs=("fc", "conv"))
    assert set(out) == {"fc", "conv"}
    for name in out:
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-5, atol=1e-5)
    jitted = fast_compile.jit(lambda v, x: module.apply(v, x, outputs=("relu",)))(variables, x)
    np.testing.assert_allclose(jitted["relu"], ref["relu"], rtol=1e-5, atol=1e-5)


def test_runs_only_what_the_outputs_need():
    graph, variables = _graph()
    assert graph.needed_nodes(["c"]) == [0]
    # fc's weight is not needed for "conv": variables without it still run
    partial = {"params": {k: v for k, v in variables["params"].items() if k != "fc"}}
    GraphModule(graph).apply(partial, np.ones((1, 4, 4, 2), np.float32), outputs=("conv",))


def test_relu_goes_through_the_redirectable_relu():
    graph, variables = _graph()
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 4, 4, 2)).astype(np.float32))

    def grad(mode):
        f = lambda x: GraphModule(graph).apply(variables, x, outputs=("relu",), relu_redirect=mode)["relu"].sum()  # noqa: E731
        return jax.grad(f)(x)

    true, rectified = fast_compile.jit(lambda x: (grad(TRUE), grad(RECTIFIED)))(x)  # both in one compiled program
    assert not np.allclose(true, rectified)


def test_init_gives_the_recorded_shapes_and_unknown_layers_are_refused():
    graph, variables = _graph()
    init = fast_compile.jit(lambda x: GraphModule(graph).init(jax.random.PRNGKey(0), x))(
        np.ones((1, 4, 4, 2), np.float32)
    )
    assert jax.tree.map(jnp.shape, init) == jax.tree.map(jnp.shape, variables)
    with pytest.raises(JaxvisError, match="unknown layer"):
        GraphModule(graph).apply(variables, np.ones((1, 4, 4, 2), np.float32), outputs=("nope",))
    with pytest.raises(JaxvisError, match="inputs of shape"):
        GraphModule(graph).apply(variables, np.ones((1, 4, 4, 3), np.float32), outputs=("conv",))


def test_bad_node_is_one_error_naming_it():
    b = GraphBuilder("bad", "test")
    b.set_input("x", (1, 2, 4, 4))
    with pytest.raises(JaxvisError, match="'odd'") as error:
        b.node("reshape", ["x"], ["y"], dict(shape=(1, 7)), name="odd")
    assert "\n" not in str(error.value)


def test_graph_round_trips_through_json_data():
    import json

    from jaxvis.models.graph.ir import graph_from_data, graph_to_data

    graph, variables = _graph()
    again = graph_from_data(json.loads(json.dumps(graph_to_data(graph))))
    assert again.nodes == graph.nodes and again.layers == graph.layers
    x = np.ones((2, 4, 4, 2), np.float32)
    np.testing.assert_array_equal(
        GraphModule(again).apply(variables, x)["fc"], GraphModule(graph).apply(variables, x)["fc"]
    )
    with pytest.raises(JaxvisError, match="malformed"):
        graph_from_data({"name": "x"})


def test_a_graph_that_moves_the_batch_runs_per_image():
    """`view(x, [4, 9, 11])` after moving the batch off axis 0 only holds for one image: each image
    of a batch then runs alone, and matches running it alone."""
    b = GraphBuilder("moves", "test")
    b.set_input("x", (1, 2, 3, 4))
    b.node("permute", ["x"], ["p"], dict(perm=(1, 0, 2, 3)), name="p")  # [C, B, H, W]
    b.node("reshape", ["p"], ["r"], dict(shape=(2, 12)), name="r")
    b.node("reduce", ["r"], ["m"], dict(kind="max", axes=(0,), keepdim=True), name="m")
    graph, variables = b.finish([("m", "m")], ["m"])
    assert graph.per_item
    x = np.random.default_rng(5).normal(size=(3, 3, 4, 2)).astype(np.float32)
    together = np.asarray(GraphModule(graph).apply(variables, x)["m"])
    alone = np.concatenate([np.asarray(GraphModule(graph).apply(variables, x[i:i + 1])["m"]) for i in range(3)])
    np.testing.assert_allclose(together, alone)
    assert together.shape == (3, 12)


def test_a_graph_model_converts_to_a_jaxvis_file_and_back(tmp_path):
    """`jaxvis convert` of a .onnx / .pt2 model: the graph travels as data in the recipe."""

    import torch

    from jaxvis.models.converted import load_converted, save_converted
    from jaxvis.models.load import load_model

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    path = tmp_path / "small.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 16, 16),)), str(path))
    spec = load_model(str(path))
    again = load_converted(save_converted(spec, tmp_path / "small.jaxvis"))
    assert again.layer_names == spec.layer_names and type(again.module) is type(spec.module)
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    layers = spec.layer_names

    got, want = fast_compile.activations(again, x, layers), fast_compile.activations(spec, x, layers)
    for layer in layers:
        np.testing.assert_array_equal(np.asarray(got[layer]), np.asarray(want[layer]))


def test_the_cli_takes_graph_files_and_bad_ones_are_one_error_line(tmp_path, capsys):
    import torch

    from jaxvis.cli import main

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    good = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 16, 16),)), str(good))
    assert main(["layers", "--model", str(good)]) == 0
    assert "net: input 16x16x3" in capsys.readouterr().out
    bad = tmp_path / "cut.pt2"
    bad.write_bytes(good.read_bytes()[:200])
    assert main(["layers", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and err.count("\n") == 1


def _keras_style_graph():
    """An NHWC graph with grouped params (Keras layers' weight dicts), 'same' padding and a softmax."""
    from jaxvis.models.graph.ir import Graph, Node

    nodes = (
        Node.make("permute", ["x"], ["xc"], dict(perm=(0, 3, 1, 2))),
        Node.make("conv", ["xc", "conv/kernel", "conv/bias"], ["cc"], dict(stride=(2, 2), padding="same"), "conv"),
        Node.make("max_pool", ["cc"], ["pc"], dict(kernel=(3, 3), stride=(2, 2), padding="same"), "pool"),
        Node.make("permute", ["pc"], ["p"], dict(perm=(0, 2, 3, 1)), "pool"),
        Node.make("reduce", ["p"], ["g"], dict(kind="mean", axes=(1, 2)), "gap"),
        Node.make("softmax", ["g"], ["s"], dict(axis=-1), "probs"),
    )
    return Graph("keras_style", "x", (None, 8, 8, 2), nodes, {"conv/kernel": (3, 3, 2, 4), "conv/bias": (4,)}, {},
                 (("conv", "cc"), ("pool", "p"), ("probs", "s")), ("s",), "test", "nhwc", param_groups=True)


@pytest.mark.parametrize("size", [(8, 8), (9, 7)])
def test_grouped_params_same_padding_and_pre_softmax(size):
    from jax import lax

    from jaxvis.models.graph.ir import graph_from_data, graph_to_data

    graph = _keras_style_graph()
    module = GraphModule(graph)
    x = np.random.default_rng(2).normal(size=(2, *size, 2)).astype(np.float32)
    variables = fast_compile.jit(lambda x: module.init(jax.random.PRNGKey(0), x))(x)
    assert jax.tree.map(jnp.shape, variables) == {"params": {"conv": {"kernel": (3, 3, 2, 4), "bias": (4,)}}}
    outputs = ("conv", "pool", "probs", "probs/pre_softmax", "x")
    out = fast_compile.jit(lambda v, x: module.apply(v, x, outputs=outputs))(variables, x)
    params = variables["params"]["conv"]
    conv = lax.conv_general_dilated(x, params["kernel"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    pool = lax.reduce_window(conv + params["bias"], -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
    np.testing.assert_allclose(out["conv"], conv + params["bias"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["pool"], pool, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["probs/pre_softmax"], pool.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["probs"], jax.nn.softmax(pool.mean(axis=(1, 2))), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["x"], x)
    with pytest.raises(JaxvisError, match="unknown layer"):
        module.apply(variables, x, outputs=("pool/pre_softmax",))  # not a softmax layer
    assert graph_from_data(graph_to_data(graph)).param_groups
