"""Records LitGPT 0.5.x's model registry (public API only) for tests/test_registry_compat.py.

Run with the reference venv (`bash ../shared/bench/anchor.sh` builds it):
    $REF/bin/python tests/compat/make_registry_fixtures.py tests/fixtures
Writes `litgpt_registry_names.txt` (the keys of `litgpt.config.name_to_config`), `litgpt_download_list.txt`
(the repository ids `litgpt download list` prints) and `litgpt_registry_configs.json`: per name, the fields of
`Config.from_name(name)` that differ from the `Config` defaults, and what four overrides derive.
"""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from litgpt import Config
from litgpt.config import name_to_config

OVERRIDES = {
    "n_head/2": lambda c: dict(n_head=c.n_head // 2),
    "n_embd/2": lambda c: dict(n_embd=c.n_embd // 2),
    "n_head=n_query_groups": lambda c: dict(n_head=c.n_query_groups),
    "n_layer=2": lambda c: dict(n_layer=2),
}


def main(out: Path) -> None:
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(Config)
    }
    configs, derived = {}, {}
    for name in sorted(name_to_config):
        config = Config.from_name(name)
        configs[name] = {k: v for k, v in dataclasses.asdict(config).items() if v != defaults[k]}
        derived[name] = {}
        for label, make in OVERRIDES.items():
            try:
                o = Config.from_name(name, **make(config))
                derived[name][label] = dict(head_size=o.head_size, n_query_groups=o.n_query_groups, n_head=o.n_head,
                                            n_embd=o.n_embd)
            except Exception as err:  # noqa: BLE001 - the exception type is what is recorded
                derived[name][label] = type(err).__name__

    def rows(table: dict) -> str:
        return ",\n".join(f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in table.items())

    text = (f'{{\n"defaults": {json.dumps(defaults, sort_keys=True)},\n"configs": {{\n{rows(configs)}\n}},\n'
            f'"overrides": {{\n{rows(derived)}\n}}\n}}\n')
    (out / "litgpt_registry_configs.json").write_text(text)
    (out / "litgpt_registry_names.txt").write_text("\n".join(sorted(name_to_config)) + "\n")
    listing = subprocess.run([str(Path(sys.executable).parent / "litgpt"), "download", "list"],
                             capture_output=True, text=True).stdout
    repos = sorted(line.strip() for line in listing.splitlines() if "/" in line and " " not in line.strip())
    (out / "litgpt_download_list.txt").write_text("\n".join(repos) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
