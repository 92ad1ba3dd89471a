"""The import graph of `litgpt/` points one way (tutorials/architecture.md): every module imports only from its
own layer or lower ones (imports inside functions included), and no chain of imports leads back to a module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "litgpt"

# Longest matching prefix wins. Keep in step with tutorials/architecture.md.
LAYERS: dict[str, int] = {
    # 0: foundations, no project imports
    "litgpt.utils": 0,
    "litgpt.constants": 0,
    "litgpt.precision": 0,
    "litgpt.types": 0,
    # 1: configuration and text
    "litgpt.config_registry": 1,
    "litgpt.config": 1,
    "litgpt.tokenizer": 1,
    "litgpt.prompts": 1,
    # 2: the model
    "litgpt.model": 2,
    # 3: modules swapped into a built model
    "litgpt.lora": 3,
    "litgpt.adapter": 3,
    "litgpt.adapter_v2": 3,
    "litgpt.quantization.portable": 3,
    "litgpt.quantization.bnb": 3,
    "litgpt.quantization.modes": 3,
    # 4: checkpoint loading and conversion tables
    "litgpt.checkpoint": 4,
    "litgpt.quantization": 4,
    "litgpt.quantization.loading": 4,
    "litgpt.scripts.hf_families": 4,
    "litgpt.scripts.gguf_families": 4,
    # 5: data and engines
    "litgpt.data": 5,
    "litgpt.args": 5,
    "litgpt.train": 5,
    "litgpt.generate": 5,
    "litgpt.generate.engine": 5,
    "litgpt.generate.cpu": 5,
    "litgpt.eval": 5,
    "litgpt.eval.lm_eval_model": 5,
    "litgpt.eval.perplexity": 5,
    "litgpt.deploy": 5,
    "litgpt.deploy.scheduler": 5,
    "litgpt.scripts.convert_hf_checkpoint": 5,  # conversion and download are library code the API calls too
    "litgpt.scripts.convert_lit_checkpoint": 5,
    "litgpt.scripts.download": 5,
    # 6: the Python API
    "litgpt.api": 6,
    # 7: verbs (the CLI), the package's top-level re-exports
    "litgpt": 7,
    "litgpt.__main__": 7,
    "litgpt.demo": 7,
    "litgpt.pretrain": 7,
    "litgpt.finetune": 7,
    "litgpt.chat": 7,
    "litgpt.scripts": 7,
    "litgpt.generate.base": 7,
    "litgpt.generate.cli": 7,
    "litgpt.generate.speculative": 7,
    "litgpt.generate.full": 7,
    "litgpt.generate.adapter": 7,
    "litgpt.generate.adapter_v2": 7,
    "litgpt.generate.sequentially": 7,
    "litgpt.generate.tp": 7,
    "litgpt.eval.evaluate": 7,
    "litgpt.deploy.serve": 7,
    "litgpt.quantization.cli": 7,
    "litgpt.parser_config": 7,
    "litgpt.generate.speculative_decoding": 7,
}
# Non-CLI modules of the deploy and generate packages default to the engine layer (5) through their package.

# The only imports allowed to point up: LitGPT names that must live in a low module and call a higher one when
# used (made inside the function, never at import). Each is listed in tutorials/architecture.md.
COMPAT_UPCALLS = {
    ("litgpt.utils", "litgpt.scripts.download"),  # utils.auto_download_checkpoint -> the downloader
}


def module_files() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> int:
    """The layer of a dotted module name (its longest prefix in LAYERS)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add it to LAYERS and to tutorials/architecture.md")


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `module` imports anywhere in its file (inside functions too)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            if name == "litgpt" or name.startswith("litgpt."):
                while name not in modules and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name != module:
                    found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, without the allowed COMPAT_UPCALLS."""
    modules = module_files()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    for module, dep in COMPAT_UPCALLS:
        assert dep in graph.get(module, ()), f"COMPAT_UPCALLS lists {module} -> {dep}, which no longer exists"
        graph[module].discard(dep)
    return graph


def test_every_module_has_a_layer():
    for module in module_files():
        layer_of(module)


def test_imports_point_down():
    wrong = [
        f"{module} (layer {layer_of(module)}) imports {dep} (layer {layer_of(dep)})"
        for module, deps in sorted(import_graph().items())
        for dep in sorted(deps)
        if layer_of(dep) > layer_of(module)
    ]
    assert not wrong, "imports that point up:\n" + "\n".join(wrong)


def test_no_import_circle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                circles.append(" -> ".join(path[path.index(dep):] + [node, dep]) if dep in path else f"{node} -> {dep}")
            elif dep not in state:
                visit(dep, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize("module", ["litgpt.precision", "litgpt.constants"])
def test_foundations_import_nothing_of_the_project(module):
    assert import_graph()[module] == set()


def test_utils_imports_only_foundations():
    assert import_graph()["litgpt.utils"] <= {"litgpt.precision"}
