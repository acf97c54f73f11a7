"""PyTorch/transformers side of benches/text_vs_torch.sh: runs the token ids that
`multimat bench text --inputs-out` wrote through transformers' BertModel (MiniLM from the same
model directory, or a BERT-base-sized model with random weights), with the same batch size,
and prints one JSON line: texts, seconds, texts/s, peak RSS.

Usage: text_torch.py INPUTS.json minilm|base
"""
import json
import resource
import sys
import time

import torch
from transformers import AutoModel, BertConfig, BertModel


def main():
    inputs_path, which = sys.argv[1], sys.argv[2]
    with open(inputs_path) as f:
        inputs = json.load(f)
    batch = inputs["batch_size"]
    if which == "minilm":
        model = AutoModel.from_pretrained(inputs["minilm_model_dir"], local_files_only=True)
        ids = inputs["minilm_ids"]
    elif which == "base":
        torch.manual_seed(7)
        model = BertModel(BertConfig(), add_pooling_layer=False)
        ids = inputs["base_ids"]
    else:
        raise SystemExit(f"unknown model {which!r}: expected minilm or base")
    model.eval()
    ids = torch.tensor(ids, dtype=torch.long)
    with torch.inference_mode():
        model(input_ids=ids[:1], attention_mask=torch.ones_like(ids[:1]))  # warm-up
        start = time.perf_counter()
        for i in range(0, len(ids), batch):
            chunk = ids[i : i + batch]
            out = model(input_ids=chunk, attention_mask=torch.ones_like(chunk)).last_hidden_state
            _ = out[:, 0].clone()
        secs = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "model": which, "texts": len(ids), "seconds": secs, "texts_per_s": len(ids) / secs,
        "peak_rss_mib": peak_mib, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }))


if __name__ == "__main__":
    main()
