"""What each engine can serve and which quantization types exist, kept as data.

Plan-time refusals read these tables, so a variant an engine cannot load is refused before any work.
"""

# llama.cpp file types accepted by llama-quantize (and the unquantized conversions convert_hf_to_gguf
# writes). Effective bits per weight are measured per artifact: k-quants fall back on tensors whose
# width is not a multiple of 256.
GGUF_UNQUANTIZED = ("F32", "F16", "BF16")
GGUF_TYPES = GGUF_UNQUANTIZED + (
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_1",
    "Q5_0",
    "Q4_K_M",
    "Q4_K_S",
    "Q4_1",
    "Q4_0",
    "Q3_K_L",
    "Q3_K_M",
    "Q3_K_S",
    "Q2_K",
)

# variant kind -> artifact format
VARIANT_FORMATS = {
    "gguf": "gguf",
    "hf": "hf",
    "fp8_dynamic": "compressed-tensors",
    "w8a8_int8": "compressed-tensors",
    "w4a16_gptq": "compressed-tensors",
    "w4a16_awq": "compressed-tensors",
}

# engine -> artifact formats it serves here. vLLM's GGUF loader is experimental, GPU-only, and not
# part of this pipeline; its formats arrive with the vLLM leg.
ENGINE_FORMATS: dict[str, set[str]] = {
    "llamacpp": {"gguf"},
    "vllm": {"hf", "compressed-tensors"},
}
