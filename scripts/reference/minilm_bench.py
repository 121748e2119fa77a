#!/usr/bin/env python3
"""PyTorch side of the MiniLM benchmark (benches/minilm.rs is the candle side).

Same sentences (fixtures/minilm/bench-sentences.txt), same thread count (2),
tokenisation included, batch 1 and batch 16 in file order; median of REPS
passes after one warm-up pass. Two ways of running the reference:

- `sentence-transformers`: SentenceTransformer.encode(chunk, batch_size=16,
  normalize_embeddings=True) as applications call it;
- `transformers`: tokenizer(padding=True, truncation=True, max_length=256)
  + AutoModel forward + mean pooling + normalize, under torch.inference_mode()
  (no sentence-transformers overhead).

    OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 /tmp/minilm-ref/bin/python \
        scripts/reference/minilm_bench.py models/all-MiniLM-L6-v2
"""
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

THREADS = 2
REPS = int(os.environ.get("MINILM_BENCH_REPS", "7"))


def median_time(fn):
    fn()
    runs = []
    for _ in range(REPS):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    runs.sort()
    return runs[len(runs) // 2]


def main():
    model_dir = sys.argv[1]
    torch.set_num_threads(THREADS)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "fixtures/minilm/bench-sentences.txt"), encoding="utf-8") as f:
        sentences = [line.rstrip("\n") for line in f if line.strip()]
    st = SentenceTransformer(model_dir, device="cpu")
    st.eval()
    tok, bert = st.tokenizer, st[0].auto_model
    tokens = sum(min(len(tok(s, add_special_tokens=False)["input_ids"]), 254) + 2 for s in sentences)
    print(
        f"{len(sentences)} sentences, {tokens} tokens; torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, interop {torch.get_num_interop_threads()}"
    )

    def st_pass(batch):
        for i in range(0, len(sentences), batch):
            st.encode(
                sentences[i : i + batch],
                batch_size=16,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )

    def hf_pass(batch):
        with torch.inference_mode():
            for i in range(0, len(sentences), batch):
                enc = tok(
                    sentences[i : i + batch],
                    padding=True,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                )
                out = bert(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
                pooled = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
                torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()

    for batch in (1, 16):
        for name, fn in (("sentence-transformers", st_pass), ("transformers", hf_pass)):
            s = median_time(lambda: fn(batch))
            print(
                f"RESULT impl={name} batch={batch} ms_per_sentence={s * 1e3 / len(sentences):.3f} "
                f"tokens_per_s={tokens / s:.0f} total_ms={s * 1e3:.1f}"
            )


if __name__ == "__main__":
    main()
