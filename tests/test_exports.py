"""The public API: everything public is re-exported from ``writebehind``; nothing else leaks."""

import importlib
import pkgutil
import types

import writebehind


def test_all_names_exist_and_say_they_live_in_writebehind() -> None:
    for name in writebehind.__all__:
        obj = getattr(writebehind, name)
        if isinstance(obj, type) or isinstance(obj, types.FunctionType):
            assert obj.__module__ == "writebehind", name


def test_no_private_module_leaks_a_public_name() -> None:
    public = {n for n in dir(writebehind) if not n.startswith("_")}
    modules = {
        n for n in public if isinstance(getattr(writebehind, n), types.ModuleType)
    }
    assert modules <= {"harness", "chaos"}, modules
    assert public - modules == set(writebehind.__all__)


def test_every_submodule_is_private_except_harness_and_chaos() -> None:
    for info in pkgutil.iter_modules(writebehind.__path__):
        assert info.name.startswith("_") or info.name in {"harness", "chaos"}, info.name


def test_harness_and_chaos_import_and_declare_all() -> None:
    for name in ("writebehind.harness", "writebehind.chaos"):
        module = importlib.import_module(name)
        for public in module.__all__:
            assert hasattr(module, public), (name, public)


def test_the_metrics_api_is_public() -> None:
    for name in ("CacheCollector", "MetricsServer", "serve_metrics", "LatencyStatistics"):
        assert name in writebehind.__all__, name
    assert writebehind.serve_metrics.__module__ == "writebehind"
