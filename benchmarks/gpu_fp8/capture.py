"""Capture real inputs of the demo model's Linear layers (bf16 reference, 256 tokens of difflib.py)
and the matching FP8_DYNAMIC weights + scales from the demo's fp8 artifact, for a GPU kernel check."""
import difflib, sys
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ref_dir, fp8_dir, out = sys.argv[1:4]
LAYERS = [0, 15, 29]
NAMES = ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"]
tok = AutoTokenizer.from_pretrained(ref_dir)
model = AutoModelForCausalLM.from_pretrained(ref_dir, torch_dtype=torch.bfloat16).eval()
ids = tok(open(difflib.__file__).read(), return_tensors="pt").input_ids[:, 1000:1256]
captured = {}
def hook(name):
    def fn(module, args):
        captured[f"{name}.input"] = args[0][0].detach().to(torch.bfloat16).contiguous()
    return fn
for layer in LAYERS:
    for n in NAMES:
        name = f"model.layers.{layer}.{n}"
        model.get_submodule(name).register_forward_pre_hook(hook(name))
with torch.no_grad():
    model(ids)
fp8 = load_file(f"{fp8_dir}/model.safetensors")
ref = {k: v for k, v in model.state_dict().items()}
for layer in LAYERS:
    for n in NAMES:
        name = f"model.layers.{layer}.{n}"
        captured[f"{name}.weight_fp8"] = fp8[f"{name}.weight"].contiguous()
        captured[f"{name}.weight_scale"] = fp8[f"{name}.weight_scale"].float().contiguous()
        captured[f"{name}.weight_bf16"] = ref[f"{name}.weight"].to(torch.bfloat16).contiguous()
save_file(captured, out)
print({k: (tuple(v.shape), str(v.dtype)) for k, v in list(captured.items())[:4]}, len(captured))
