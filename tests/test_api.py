"""The public API's conventions, checked by introspection (as dm_pix's api_test does).

- `import jaxvis` exposes the main names lazily, and touching them initialises no JAX backend;
- every module declares `__all__`, and every name in it exists;
- a function that takes a PRNG `key` takes it first; flags (bool options) are keyword-only.
"""

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import jaxvis

MODULES = sorted(m.name for m in pkgutil.walk_packages(jaxvis.__path__, "jaxvis.")
                 if not m.name.endswith(("_core", "_onednn", "__main__")))  # compiled; __main__ runs the CLI
# Signatures fixed by something outside jaxvis: the pickle of a torch checkpoint calls this positionally.
EXEMPT = {"jaxvis.convert.torch.unpickler.rebuild_tensor_v2"}


def _public_functions():
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if inspect.isfunction(obj) and obj.__module__ == name and f"{name}.{attr}" not in EXEMPT:
                yield f"{name}.{attr}", obj


def test_top_level_names_are_lazy_and_start_no_backend():
    code = (
        "import jaxvis, jax._src.xla_bridge as xb\n"
        "jaxvis.render; jaxvis.RenderConfig; jaxvis.load_model; jaxvis.objectives.channel; jaxvis.dream; jaxvis.cam\n"
        "assert not xb._backends, xb._backends\n"
        "assert set(jaxvis.__all__) <= set(dir(jaxvis))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_top_level_exports_are_the_library_objects():
    from jaxvis.models.load import load_model
    from jaxvis.optvis import objectives
    from jaxvis.optvis.render import RenderConfig, render

    assert jaxvis.render is render and jaxvis.RenderConfig is RenderConfig and jaxvis.load_model is load_model
    assert jaxvis.objectives is objectives
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jaxvis.nope  # noqa: B018


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_all(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    missing = [attr for attr in module.__all__ if not hasattr(module, attr)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


def test_key_comes_first():
    wrong = [f"{name}{inspect.signature(fn)}" for name, fn in _public_functions()
             if "key" in inspect.signature(fn).parameters and next(iter(inspect.signature(fn).parameters)) != "key"]
    assert not wrong, wrong


def test_flags_are_keyword_only():
    wrong = [f"{name}: {p.name}" for name, fn in _public_functions() for p in inspect.signature(fn).parameters.values()
             if p.kind is p.POSITIONAL_OR_KEYWORD and isinstance(p.default, bool)]
    assert not wrong, wrong


def test_render_documents_its_arguments():
    doc = inspect.getdoc(jaxvis.render)
    assert "Args:" in doc and "Returns:" in doc
    for parameter in inspect.signature(jaxvis.render).parameters:
        assert f"{parameter}:" in doc, f"render's docstring does not describe {parameter}"
