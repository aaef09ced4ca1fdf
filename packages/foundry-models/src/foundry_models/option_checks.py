"""The checks behind `MPTOptions`: every problem of an options mapping, each under its dotted key.

`check_options(flat)` takes the on-disk layout with every key present (top-level options,
`norm_type`/`norm_eps`, and the nested `attn_config`, `ffn_config`, `init_config`) and returns
the list of `OptionProblem`s: wrong types first (a key of the wrong type is not checked further),
then values and combinations. It fills in `attn_config.rope_scaling`'s defaults in place.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any

from foundry_models.attention import ATTN_IMPLS
from foundry_models.errors import OptionProblem

__all__ = [
    "FFN_TYPES",
    "INIT_SCHEMES",
    "NORM_TYPES",
    "ROPE_SCALING_TYPES",
    "check_options",
    "unknown_key_problems",
]

NORM_TYPES = ("layernorm", "low_precision_layernorm", "rmsnorm")
FFN_TYPES = ("mptmlp", "mptglu")
INIT_SCHEMES = (
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "small_init_",
    "xavier_normal_",
    "xavier_uniform_",
)
ROPE_SCALING_TYPES = ("linear", "dynamic", "llama3")
_ROPE_SCALING_KEYS: dict[str, dict[str, Any]] = {
    # key -> default (None: required)
    "linear": {"factor": None},
    "dynamic": {"factor": None, "original_max_seq_len": None},
    "llama3": {
        "factor": None,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_seq_len": None,
    },
}
_KEY_HINTS = {
    "ffn_config.expansion_ratio": "set expansion_ratio at the top level of the model config",
    "attn_config.sliding_window": "the key is named sliding_window_size",
    "attn_config.n_kv_heads": "the key is named kv_n_heads",
}


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _pos_number(v: object) -> bool:
    return _number(v) and v > 0  # pyright: ignore[reportOperatorIssue]


def _pos_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _fraction(v: object) -> bool:
    return _number(v) and 0 <= v < 1  # pyright: ignore[reportOperatorIssue]


def _bool(v: object) -> bool:
    return isinstance(v, bool)


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or check(v)


def _choice(choices: tuple[str, ...]) -> tuple[str, Callable[[object], bool]]:
    return "one of " + ", ".join(repr(c) for c in choices), lambda v: v in choices


_Spec = tuple[str, Callable[[object], bool]]
_POS_INT: _Spec = ("a positive integer", _pos_int)
_POS_NUMBER: _Spec = ("a positive number", _pos_number)
_OPT_POS_NUMBER: _Spec = ("a positive number or null", _optional(_pos_number))
_FRACTION: _Spec = ("a number in [0, 1)", _fraction)
_BOOL: _Spec = ("true or false", _bool)

TOP_SPECS: dict[str, _Spec] = {
    "d_model": _POS_INT,
    "n_heads": _POS_INT,
    "n_layers": _POS_INT,
    "expansion_ratio": _POS_NUMBER,
    "max_seq_len": _POS_INT,
    "vocab_size": _POS_INT,
    "resid_pdrop": _FRACTION,
    "emb_pdrop": _FRACTION,
    "no_bias": _BOOL,
    "logit_scale": (
        "a positive number, 'inv_sqrt_d_model' or null",
        lambda v: v is None or v == "inv_sqrt_d_model" or _pos_number(v),
    ),
    "tie_word_embeddings": _BOOL,
    "use_cache": _BOOL,
    "loss_chunk_size": ("a positive integer or null", _optional(_pos_int)),
    "norm_type": _choice(NORM_TYPES),
    "norm_eps": _POS_NUMBER,
}
SECTION_SPECS: dict[str, dict[str, _Spec]] = {
    "attn_config": {
        "attn_impl": _choice(ATTN_IMPLS),
        "attn_pdrop": _FRACTION,
        "softmax_scale": _OPT_POS_NUMBER,
        "qk_ln": _BOOL,
        "clip_qkv": _OPT_POS_NUMBER,
        "kv_n_heads": ("a positive integer or null", _optional(_pos_int)),
        "alibi": _BOOL,
        "alibi_bias_max": _POS_NUMBER,
        "rope": _BOOL,
        "rope_theta": _POS_NUMBER,
        "rope_scaling": ("a mapping or null", lambda v: v is None or isinstance(v, dict)),
        "sliding_window_size": (
            "a positive integer, or -1 or null for full attention",
            lambda v: v is None or v == -1 or _pos_int(v),
        ),
        "attn_uses_sequence_id": _BOOL,
    },
    "ffn_config": {
        "ffn_type": _choice(FFN_TYPES),
        "ffn_hidden_size": ("a positive integer or null", _optional(_pos_int)),
    },
    "init_config": {
        "name": _choice(INIT_SCHEMES),
        "init_std": _POS_NUMBER,
        "emb_init_std": _OPT_POS_NUMBER,
        "init_div_is_residual": _BOOL,
        "fan_mode": _choice(("fan_in", "fan_out")),
        "init_nonlinearity": _choice(("relu", "leaky_relu", "linear")),
    },
}


def _close(word: str, candidates: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f"did you mean {close[0]!r}?" if close else ""


def unknown_key_problems(given: dict[str, Any], known: dict[str, Any]) -> list[OptionProblem]:
    """Keys of `given` (and of its nested sections) that `known` does not have."""
    out: list[OptionProblem] = []
    for key, value in given.items():
        if key not in known:
            out.append(_unknown(key, key, list(known)))
        elif key in SECTION_SPECS and not isinstance(value, dict):
            out.append(OptionProblem(key, "a mapping of option names to values", value))
        elif key in SECTION_SPECS:
            section: dict[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
            for sub in section:
                if sub not in SECTION_SPECS[key]:
                    out.append(_unknown(f"{key}.{sub}", str(sub), list(SECTION_SPECS[key])))
    return out


def _unknown(dotted: str, key: str, known: list[str]) -> OptionProblem:
    hint = _KEY_HINTS.get(dotted) or _close(key, known)
    return OptionProblem(dotted, "known keys: " + ", ".join(sorted(known)), None, hint, True)


def check_options(flat: dict[str, Any]) -> list[OptionProblem]:
    """Every problem of a complete options mapping (see the module docstring)."""
    problems: list[OptionProblem] = []
    bad: set[str] = set()
    specs = [(k, flat.get(k), spec) for k, spec in TOP_SPECS.items()]
    for section, section_specs in SECTION_SPECS.items():
        values: dict[str, Any] = flat[section]
        specs += [(f"{section}.{k}", values.get(k), spec) for k, spec in section_specs.items()]
    for key, value, (expected, ok) in specs:
        if not ok(value):
            hint = ""
            if isinstance(value, str) and expected.startswith("one of "):
                choices = [c.strip("'") for c in expected.removeprefix("one of ").split(", ")]
                hint = _close(value, choices)
            problems.append(OptionProblem(key, expected, value, hint))
            bad.add(key)
    problems += _shape_problems(flat, bad)
    problems += _attention_problems(flat, bad)
    return problems


def _shape_problems(f: dict[str, Any], bad: set[str]) -> list[OptionProblem]:
    out: list[OptionProblem] = []
    d, h = f["d_model"], f["n_heads"]
    if not bad & {"d_model", "n_heads"} and d % h:
        out.append(
            OptionProblem(
                "d_model", f"a multiple of n_heads ({h})", d, f"e.g. n_heads={_divisor(d, h)}"
            )
        )
    ffn = f["ffn_config"]
    if ffn["ffn_hidden_size"] is None and not bad & {"expansion_ratio", "d_model"}:
        product = f["expansion_ratio"] * d
        if abs(product - round(product)) > 1e-6:
            out.append(
                OptionProblem(
                    "expansion_ratio",
                    "a ratio whose product with d_model is an integer",
                    f["expansion_ratio"],
                    f"expansion_ratio * d_model = {product} is not an integer; pick another "
                    "expansion_ratio or set ffn_config.ffn_hidden_size",
                )
            )
    return out


def _attention_problems(f: dict[str, Any], bad: set[str]) -> list[OptionProblem]:
    a = f["attn_config"]
    out: list[OptionProblem] = []
    impl, pdrop = a["attn_impl"], a["attn_pdrop"]
    pdrop_checked = not bad & {"attn_config.attn_impl", "attn_config.attn_pdrop"}
    if pdrop_checked and pdrop > 0 and impl not in ("torch", "auto"):
        out.append(
            OptionProblem(
                "attn_config.attn_pdrop",
                f"0 with attn_impl {impl!r}",
                pdrop,
                f"attn_pdrop > 0 needs attn_impl='torch' or 'auto'; the {impl} kernels have "
                "no attention dropout",
            )
        )
    kv, heads = a["kv_n_heads"], f["n_heads"]
    if not bad & {"attn_config.kv_n_heads", "n_heads"} and kv is not None and heads % kv:
        out.append(OptionProblem("attn_config.kv_n_heads", f"a divisor of n_heads ({heads})", kv))
    if not bad & {"attn_config.alibi", "attn_config.rope"} and a["alibi"] and a["rope"]:
        out.append(
            OptionProblem(
                "attn_config.rope",
                "false while attn_config.alibi is true",
                True,
                "alibi and rope are both true; a model uses one position scheme, so set one of "
                "them to false",
            )
        )
    shape_ok = not bad & {"d_model", "n_heads"} and f["d_model"] % heads == 0
    if shape_ok and a["rope"] is True and (f["d_model"] // heads) % 2:
        out.append(
            OptionProblem(
                "attn_config.rope", "an even head dim with rope", True, "d_model / n_heads is odd"
            )
        )
    if "attn_config.rope_scaling" not in bad:
        out += _rope_scaling_problems(a, f["max_seq_len"])
    return out


def _rope_scaling_problems(a: dict[str, Any], max_seq_len: object) -> list[OptionProblem]:
    key = "attn_config.rope_scaling"
    scaling: dict[str, Any] | None = a["rope_scaling"]
    if scaling is None:
        return []
    if a["rope"] is not True:
        return [OptionProblem(key, "null while attn_config.rope is false", scaling, "enable rope")]
    kind = scaling.get("type")
    if kind not in ROPE_SCALING_TYPES:
        expected = _choice(ROPE_SCALING_TYPES)[0]
        hint = _close(kind, ROPE_SCALING_TYPES) if isinstance(kind, str) else ""
        return [OptionProblem(f"{key}.type", expected, kind, hint)]
    spec = _ROPE_SCALING_KEYS[kind]
    unknown = sorted(set(scaling) - set(spec) - {"type"})
    if unknown:
        return [_unknown(f"{key}.{k}", k, sorted(spec)) for k in unknown]
    filled: dict[str, Any] = {"type": kind, **spec, **scaling}
    if "original_max_seq_len" in filled and filled["original_max_seq_len"] is None:
        # Pin the pre-scaling length now, so raising max_seq_len later does not move it.
        filled["original_max_seq_len"] = max_seq_len
    out = [
        OptionProblem(f"{key}.{k}", "a positive number", v)
        for k, v in filled.items()
        if k != "type" and not _pos_number(v)
    ]
    if not out and filled["factor"] < 1:
        out.append(OptionProblem(f"{key}.factor", "a number >= 1", filled["factor"]))
    if not out and kind == "llama3" and filled["high_freq_factor"] <= filled["low_freq_factor"]:
        out.append(
            OptionProblem(
                f"{key}.high_freq_factor",
                f"more than low_freq_factor ({filled['low_freq_factor']})",
                filled["high_freq_factor"],
            )
        )
    a["rope_scaling"] = filled
    return out


def _divisor(d_model: int, n_heads: int) -> int:
    divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
    return min(divisors, key=lambda h: abs(h - n_heads))
