"""FP8_DYNAMIC on Hopper: the demo artifact's FP8 weights (per-channel scales) and real per-token
activations through the FP8 tensor-core GEMM (torch._scaled_mm, row-wise scales), against the same
quantized operands multiplied in fp32 on the CPU (what the CPU build emulates) and against the
unquantized bf16 weights; then FP8 vs bf16 GEMM time at the demo's shapes and a large one."""
import json, os, sys
import torch
from safetensors.torch import load_file

FP8_MAX = torch.finfo(torch.float8_e4m3fn).max
dev = os.environ.get("DEV", "cuda")
tensors = load_file(sys.argv[1])
names = sorted({k.rsplit(".", 1)[0] for k in tensors if k.endswith(".input")})

def quant_rows(x):
    scale = (x.float().abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale

def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())

def fp8_mm(xq, xs, wq, ws):
    return torch._scaled_mm(xq, wq.t(), scale_a=xs, scale_b=ws.t(), out_dtype=torch.bfloat16)

rows = []
for name in names:
    x = tensors[f"{name}.input"]
    wq, ws, wb = tensors[f"{name}.weight_fp8"], tensors[f"{name}.weight_scale"].float(), tensors[f"{name}.weight_bf16"]
    xq, xs = quant_rows(x)
    cpu_emulated = (xq.float() * xs) @ (wq.float() * ws).t()  # fp32 on the CPU
    kernel = fp8_mm(xq.to(dev), xs.to(dev), wq.to(dev), ws.to(dev)).cpu()
    unquantized = x.float() @ wb.float().t()
    rows.append({"linear": name, "shape": [x.shape[0], wq.shape[1], wq.shape[0]],
                 "kernel_vs_cpu_emulation": rel(kernel, cpu_emulated),
                 "kernel_vs_unquantized": rel(kernel, unquantized),
                 "cpu_emulation_vs_unquantized": rel(cpu_emulated, unquantized)})

def timed(fn, iters=50):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record(); fn(); end.record(); torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]

speed = []
for m, k, n in [] if dev == "cpu" else [(256, 576, 1536), (4096, 576, 1536), (4096, 1536, 576), (16384, 576, 1536), (8192, 8192, 8192)]:
    a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
    aq, as_ = quant_rows(a)
    wq, ws = quant_rows(w)
    t_bf16 = timed(lambda: a @ w.t())
    t_fp8 = timed(lambda: fp8_mm(aq, as_, wq, ws))
    t_fp8_with_act_quant = timed(lambda: fp8_mm(*quant_rows(a), wq, ws))
    flops = 2 * m * k * n
    speed.append({"mkn": [m, k, n], "bf16_ms": t_bf16, "fp8_ms": t_fp8, "fp8_incl_dynamic_act_quant_ms": t_fp8_with_act_quant,
                  "bf16_tflops": flops / t_bf16 / 1e9, "fp8_tflops": flops / t_fp8 / 1e9})

out = {"gpu": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__, "cuda": torch.version.cuda,
       "accuracy": rows, "speed": speed}
json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "fp8_check.json"), "w"), indent=1)
for r in rows:
    print(f"{r['linear']:32s} {r['shape']} kernel~cpu {r['kernel_vs_cpu_emulation']:.2e}  kernel~bf16 {r['kernel_vs_unquantized']:.4f}  cpu~bf16 {r['cpu_emulation_vs_unquantized']:.4f}")
for s in speed:
    print(s)
