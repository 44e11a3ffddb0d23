"""Layer widths and module names of a model source, read without loading it (no tool imported).

Plan-time checks need them: a quantization group size must divide every layer width it is applied
to, and an ignore pattern must match some module. Module names come from the checkpoint's own
tensor names (safetensors headers), so any architecture is checked by what it really has; a
config without weights falls back to Llama's names for the families that use them. A hub model
without a network gives None.
"""

from __future__ import annotations

import json
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.recipe.schema import GGUFSource, LocalSource, PackageFileSource
from pipeline.source import package_file

# Architectures whose Linear modules are named like Llama's: their names, when no weights are at hand.
LLAMA_LIKE = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
# 2-D weights that are embeddings, not Linear layers (the names families give them)
EMBEDDINGS = ("embed_tokens", "wte", "wpe", "embed_in", "word_embeddings", "position_embeddings", "tok_embeddings")


@dataclass(frozen=True)
class ModelInfo:
    architecture: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    head_dim: int
    chat_template: bool | None = None  # whether the tokenizer carries one (None: not known)
    kv_heads: int | None = None  # key/value heads (grouped-query attention); None: not known
    modules: tuple[str, ...] | None = None  # Linear module names read from the weights (None: no weights read)

    def linear_widths(self) -> dict[str, int]:
        """Input width of each kind of Linear (what a weight group spans)."""
        return {"attention and MLP inputs (hidden_size)": self.hidden_size,
                "MLP down_proj input (intermediate_size)": self.intermediate_size}

    def linear_modules(self) -> list[str] | None:
        """Names of the Linear modules (what llm-compressor's targets and ignore patterns match)."""
        if self.modules is not None:
            return list(self.modules)
        if self.architecture not in LLAMA_LIKE:
            return None
        names = ["lm_head"]
        for i in range(self.num_layers):
            names += [f"model.layers.{i}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
            names += [f"model.layers.{i}.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")]
        return names


def pattern_matches(pattern: str, modules: list[str]) -> bool:
    """llm-compressor's ignore semantics: 're:<regex>' searched in names, else a name or class name."""
    if pattern.startswith("re:"):
        regex = re.compile(pattern[3:])
        return any(regex.match(name) for name in modules)
    return pattern in modules or pattern == "Linear" or any(name.endswith("." + pattern) for name in modules)


def tensor_shapes(folder: Path) -> dict[str, list[int]]:
    """Every tensor's shape in a checkpoint's safetensors files, from their headers (nothing loaded)."""
    shapes: dict[str, list[int]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > path.stat().st_size - 8:
                raise ValueError(f"{path} is not a safetensors file (its header length {length} exceeds the file)")
            header = json.loads(handle.read(length))
        shapes.update({name: t["shape"] for name, t in header.items() if name != "__metadata__"})
    return shapes


def linear_names(shapes: dict[str, list[int]], tied_head: bool) -> tuple[str, ...] | None:
    """Modules holding a 2-D `weight` that is not an embedding; `lm_head` too when it shares the
    embedding's weight (tied: a module without a tensor of its own). None without tensors."""
    if not shapes:
        return None
    names = [name.removesuffix(".weight") for name, shape in shapes.items()
             if name.endswith(".weight") and len(shape) == 2 and not name.removesuffix(".weight").endswith(EMBEDDINGS)]
    if tied_head and "lm_head" not in names:
        names.append("lm_head")
    return tuple(sorted(names, key=_natural))


def _natural(name: str) -> list[Any]:
    """layers.2 before layers.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def from_config(path: Path) -> ModelInfo:
    config = json.loads((path / "config.json").read_text())
    hidden = int(config["hidden_size"])
    heads = int(config.get("num_attention_heads", 1))
    tokenizer_config = path / "tokenizer_config.json"
    template = (path / "chat_template.jinja").is_file() or (
        tokenizer_config.is_file() and bool(json.loads(tokenizer_config.read_text()).get("chat_template")))
    return ModelInfo(config.get("architectures", ["?"])[0], hidden, int(config.get("intermediate_size", hidden * 4)),
                     int(config["num_hidden_layers"]), int(config.get("head_dim") or hidden // heads), template,
                     int(config.get("num_key_value_heads") or heads),
                     linear_names(_readable_shapes(path), bool(config.get("tie_word_embeddings", False))))


def _readable_shapes(path: Path) -> dict[str, list[int]]:
    """The checkpoint's tensor shapes, or none when its files cannot be read as safetensors (the
    checks that need names then fall back; loading the weights says what is wrong with them)."""
    try:
        return tensor_shapes(path)
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return {}


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_metadata(path: Path, wanted: Callable[[str], bool]) -> dict[str, object]:
    """The metadata values of a GGUF file (v2/v3 header) whose keys `wanted` accepts; arrays are
    skipped (their values read as None). Read through a memory map, string arrays (a vocabulary's
    50k tokens and merges) stepped over without decoding: `quantgate validate` reads this."""
    found: dict[str, object] = {}
    with open(path, "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            data = b""
    try:
        if data[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        if len(data) < 24:
            raise ValueError(f"{path} is a truncated GGUF file (its header is cut short)")
        _version, _n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
        at = 24

        def read_str(decode: bool = True) -> str | None:
            nonlocal at
            (length,) = struct.unpack_from("<Q", data, at)
            at += 8 + length
            if at > len(data):
                raise struct.error("a string runs past the end of the file")
            return data[at - length:at].decode("utf-8", errors="replace") if decode else None

        def read_value(kind: int) -> object:
            nonlocal at
            if kind == 8:
                return read_str()
            if kind == 9:
                item_kind, count = struct.unpack_from("<IQ", data, at)
                at += 12
                if item_kind in _GGUF_SCALARS:  # arrays of scalars: one step
                    at += count * struct.calcsize("<" + _GGUF_SCALARS[item_kind])
                elif item_kind == 8:
                    for _ in range(count):
                        read_str(decode=False)
                else:
                    for _ in range(count):
                        read_value(item_kind)
                return None
            fmt = "<" + _GGUF_SCALARS[kind]
            (value,) = struct.unpack_from(fmt, data, at)
            at += struct.calcsize(fmt)
            return value

        try:
            for _ in range(n_kv):
                key = read_str()
                (kind,) = struct.unpack_from("<I", data, at)
                at += 4
                value = read_value(kind)
                if wanted(key):
                    found[key] = value
        except (struct.error, KeyError) as exc:  # cut short, or a value type GGUF does not have
            raise ValueError(f"{path} is a truncated or damaged GGUF file ({type(exc).__name__}: {exc})") from None
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
    return found


# llama.cpp's llama_ftype (include/llama.h): what `general.file_type` says a GGUF file mostly holds
GGUF_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
                   11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
                   18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
                   25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
                   32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0"}


def gguf_file_type(path: Path) -> str:
    """The type a GGUF file's metadata names (Q4_K_M, …), or "unknown" when it names none."""
    value = gguf_metadata(path, lambda key: key == "general.file_type").get("general.file_type")
    return GGUF_FILE_TYPES.get(int(value), f"file_type {value}") if isinstance(value, int) else "unknown"


def from_gguf(path: Path) -> ModelInfo:
    """The few metadata keys the plan needs, from a GGUF file's header."""
    wanted = gguf_metadata(path, lambda key: key in ("general.architecture", "tokenizer.chat_template") or key.endswith(
        (".embedding_length", ".feed_forward_length", ".block_count", ".attention.head_count",
         ".attention.head_count_kv")))
    arch = str(wanted["general.architecture"])
    hidden = int(wanted[f"{arch}.embedding_length"])  # type: ignore[arg-type]
    heads = int(wanted.get(f"{arch}.attention.head_count", 1))  # type: ignore[arg-type]
    architecture = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}.get(arch, arch)
    return ModelInfo(architecture, hidden, int(wanted[f"{arch}.feed_forward_length"]),  # type: ignore[arg-type]
                     int(wanted[f"{arch}.block_count"]), hidden // heads,  # type: ignore[arg-type]
                     bool(wanted.get("tokenizer.chat_template", False)),
                     int(wanted.get(f"{arch}.attention.head_count_kv", heads)))  # type: ignore[arg-type]


def divisors(n: int, minimum: int = 8) -> list[int]:
    return [d for d in range(minimum, n + 1) if n % d == 0]


def for_source(source: Any) -> ModelInfo | None:
    """Layer widths of a recipe's model source, or None for a hub model (known only once downloaded)."""
    if isinstance(source, LocalSource):
        return from_config(Path(source.path))
    if isinstance(source, GGUFSource):
        return from_gguf(Path(source.path))
    if isinstance(source, PackageFileSource):
        path = package_file(source)
        return from_gguf(path) if path else None
    return None
