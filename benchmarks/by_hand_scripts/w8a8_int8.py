"""W8A8 by hand, as llm-compressor's own example writes it (examples/quantization_w8a8_int8): load
the model, SmoothQuant then GPTQ on calibration texts, save compressed. Run in the llm-compressor
environment: python w8a8_int8.py MODEL_DIR TEXTS_JSONL MAX_SEQ_LEN OUT_DIR.

The same modifier settings as the pipeline's `w8a8_int8` defaults, and the same texts in the same
order (llm-compressor shuffles them otherwise), so both do the same work."""

import json
import sys

from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import GPTQModifier
from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, texts_path, max_seq_len, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="bfloat16")
tokenizer = AutoTokenizer.from_pretrained(model_dir)
texts = [json.loads(line)["text"] for line in open(texts_path)]
recipe = [
    SmoothQuantModifier(smoothing_strength=0.8),
    GPTQModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"], dampening_frac=0.01),
]
oneshot(model=model, tokenizer=tokenizer, recipe=recipe, dataset=Dataset.from_dict({"text": texts}),
        num_calibration_samples=len(texts), max_seq_length=max_seq_len, text_column="text",
        shuffle_calibration_samples=False)
model.save_pretrained(out, save_compressed=True)
tokenizer.save_pretrained(out)
