"""The decode-bound benchmark's pure parts: bytes per token from GGUF and safetensors headers (tiny files
written here), the stream's decode rate, the bound and ratio, the table. No server is started."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from benchmarks import decode_bound


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(path: Path, tensors: dict[str, int], alignment: int = 32) -> None:
    """A GGUF v3 file: a few metadata values of the kinds a real one has (a string, a string array, a
    scalar array, the alignment), then `tensors` (name: data bytes), each at an aligned offset."""
    kv = [gguf_string("general.name") + struct.pack("<I", 8) + gguf_string("tiny"),
          gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + gguf_string("a") + gguf_string("bc"),
          gguf_string("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 3) + struct.pack("<3f", 0, 1, 2),
          gguf_string("general.alignment") + struct.pack("<II", 4, alignment)]
    infos, offset, blobs = [], 0, b""
    for name, size in tensors.items():
        infos.append(gguf_string(name) + struct.pack("<IQQIQ", 2, size, 1, 0, offset))
        padded = -(-size // alignment) * alignment
        blobs += b"\x01" * size + b"\x00" * (padded - size)
        offset += padded
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv) + b"".join(infos)
    header += b"\x00" * (-len(header) % alignment)
    path.write_bytes(header + blobs)


def test_gguf_tensor_sizes_come_from_the_table(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, {"token_embd.weight": 640, "blk.0.attn_q.weight": 96, "output_norm.weight": 20}, alignment=64)
    sizes = decode_bound.gguf_tensors(path)
    # sizes include the padding to the next boundary (here 64 bytes)
    assert sizes == {"token_embd.weight": 640, "blk.0.attn_q.weight": 128, "output_norm.weight": 64}
    counted = decode_bound.gguf_bytes_per_token(path)
    assert counted["weights_bytes"] == 832 and counted["tied_embeddings"] and counted["tensors"] == 3


def test_gguf_untied_model_leaves_the_input_embedding_out(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, {"token_embd.weight": 640, "output.weight": 640, "blk.0.ffn_up.weight": 64})
    counted = decode_bound.gguf_bytes_per_token(path)
    assert not counted["tied_embeddings"] and counted["weights_bytes"] == 704


def test_not_a_gguf_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(ValueError, match="not a GGUF file"):
        decode_bound.gguf_tensors(path)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    itemsize = {"F32": 4, "BF16": 2, "I8": 1}
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape) in tensors.items():
        size = itemsize[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\x00" * offset)


def test_safetensors_counted_at_the_serving_dtype(tmp_path: Path) -> None:
    # stored as float32, served as bfloat16: parameters x 2, across shards
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors",
                      {"model.embed_tokens.weight": ("F32", [10, 4]), "model.norm.weight": ("F32", [4])})
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors",
                      {"model.layers.0.mlp.up_proj.weight": ("BF16", [8, 4]), "scales": ("I8", [3])})
    counted = decode_bound.hf_bytes_per_token(tmp_path)
    assert counted["params"] == 40 + 4 + 32 + 3
    assert counted["weights_bytes"] == (40 + 4 + 32) * 2 + 3  # integer tensors keep their stored bytes
    assert counted["tied_embeddings"] and counted["stored_dtypes"] == ["BF16", "F32", "I8"]


def test_safetensors_untied_head_leaves_the_input_embedding_out(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model.safetensors",
                      {"model.embed_tokens.weight": ("BF16", [10, 4]), "lm_head.weight": ("BF16", [10, 4])})
    counted = decode_bound.hf_bytes_per_token(tmp_path)
    assert not counted["tied_embeddings"] and counted["weights_bytes"] == 80


def test_safetensors_folder_without_files_or_with_a_bad_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        decode_bound.safetensors_tensors(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(ValueError, match="exceeds the file"):
        decode_bound.safetensors_tensors(tmp_path)


def test_stream_decode_rate_leaves_the_prompt_token_out() -> None:
    # 5 tokens: the first from the prompt pass, then 4 decode steps over 2 s
    assert decode_bound.stream_decode_rate([10.0, 10.5, 11.0, 11.5, 12.0], 5) == pytest.approx(2.0)
    # tokens come from the usage count, so chunks holding several tokens are still counted right
    assert decode_bound.stream_decode_rate([10.0, 11.0, 12.0], 9) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="at least two tokens"):
        decode_bound.stream_decode_rate([10.0], 1)


def test_median_after_warmup_discards_the_first_request() -> None:
    rates = iter([1.0, 30.0, 10.0, 20.0])
    assert decode_bound.median_after_warmup(lambda: next(rates)) == (20.0, [30.0, 10.0, 20.0])


def test_row_bound_and_ratio() -> None:
    weights = {"weights_bytes": 100_000_000, "tied_embeddings": True}
    decode = {"measured_tokens_per_s": 75.0, "how": "x"}
    r = decode_bound.row("llama.cpp", "m.gguf", weights, decode, read_gb_s=15.0, seconds=3.21)
    assert r["bound_tokens_per_s"] == 150.0 and r["ratio"] == 0.5 and r["measured_tokens_per_s"] == 75.0
    assert r["engine"] == "llama.cpp" and r["how"] == "x" and r["seconds"] == 3.2


def test_table_shows_every_row() -> None:
    result = {"bandwidth": {"copy_gb_s": 26.7, "read_gb_s": 18.3},
              "rows": [{"engine": "llama.cpp", "model": "k/model.gguf", "weights_bytes": 103_668_480,
                        "bound_tokens_per_s": 176.5, "measured_tokens_per_s": 90.2, "ratio": 0.511},
                       {"engine": "vllm", "model": "ref", "weights_bytes": 269_030_016,
                        "bound_tokens_per_s": 68.0, "measured_tokens_per_s": 20.0, "ratio": 0.294}]}
    text = decode_bound.table(result)
    assert "read 18.3 GB/s" in text and "103.7" in text and "176.5" in text and "0.51" in text
    assert "vllm" in text and "269.0" in text and "0.29" in text


def test_bandwidth_reports_copy_and_the_fastest_read() -> None:
    bw = decode_bound.bandwidth(mib=4, repeats=1)  # tiny: only the arithmetic and the shape are checked
    assert bw["copy_gb_s"] > 0 and bw["threads"] == 1
    assert bw["read_gb_s"] == max(bw["read_by_kernel_gb_s"].values())
    json.dumps(bw)
