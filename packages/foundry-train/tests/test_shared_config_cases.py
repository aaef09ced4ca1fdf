"""foundry-train runs the YAML and override cases it shares with foundry-eval
(tests/support/override_cases.yaml)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from foundry_train.config import apply_overrides, load_yaml
from foundry_train.errors import FoundryError

TABLE = yaml.safe_load(
    (Path(__file__).resolve().parents[3] / "tests" / "support" / "override_cases.yaml").read_text()
)


@pytest.mark.parametrize("case", TABLE["overrides"], ids=lambda c: c["name"])
def test_override_case(case: dict[str, Any]) -> None:
    base = copy.deepcopy(case["base"])
    if "error" in case:
        with pytest.raises(FoundryError) as info:
            apply_overrides(base, case["overrides"])
        assert case["error"] in str(info.value)
    else:
        assert apply_overrides(base, case["overrides"]) == case["expect"]
    assert base == case["base"], "the given mapping was changed"


@pytest.mark.parametrize("case", TABLE["yaml"], ids=lambda c: c["name"])
def test_yaml_case(case: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(case["text"])
    if "error" in case:
        with pytest.raises(FoundryError) as info:
            load_yaml(path)
        for part in case["error"]:
            assert part in str(info.value)
    else:
        assert load_yaml(path) == case["expect"]
