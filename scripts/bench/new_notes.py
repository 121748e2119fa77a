#!/usr/bin/env python3
"""Sequential latency of cachexia-risk hooks whose notes are all new, then of
the same hooks again with their notes cached (docs/benchmarks.md, "notes").

Called by `scripts/bench/hook-latency.sh --new-notes N`:
    new_notes.py URL BODY TOKENS N NOTES_PER_HOOK

Each hook carries NOTES_PER_HOOK DocumentReferences whose text is unique to
that hook (the fixture's note, four times, after a unique header), so none
is in the embedding cache; one client, one request at a time.
"""
import base64
import copy
import json
import statistics
import sys
import time
import urllib.request
import uuid


def stats(ms):
    ms = sorted(ms)
    q = lambda p: ms[min(len(ms) - 1, int(round(p * (len(ms) - 1))))]
    return "n %d  p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  max %.1f ms  mean %.1f ms" % (
        len(ms), q(0.5), q(0.9), q(0.99), ms[-1], statistics.mean(ms))


def main():
    url, body_path, tokens_path, n, k = sys.argv[1:6]
    n, k = int(n), int(k)
    base = json.load(open(body_path))
    tokens = iter(line.strip() for line in open(tokens_path) if line.strip())
    docs = base["prefetch"]["documents"]
    template = docs["entry"][0]["resource"]
    note = base64.b64decode(template["content"][0]["attachment"]["data"]).decode()
    bodies = []
    for i in range(n):
        b = copy.deepcopy(base)
        entries = []
        for j in range(k):
            r = copy.deepcopy(template)
            r["id"] = "bench-%d-%d" % (i, j)
            text = "Visit %d, note %d. " % (i, j) + " ".join([note] * 4)
            r["content"][0]["attachment"]["data"] = base64.b64encode(text.encode()).decode()
            entries.append({"fullUrl": "DocumentReference/" + r["id"], "resource": r})
        b["prefetch"]["documents"] = {**docs, "entry": entries, "total": k}
        bodies.append(b)

    def post(b):
        b = dict(b, hookInstance=str(uuid.uuid4()))
        req = urllib.request.Request(
            url, data=json.dumps(b).encode(), method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": "Bearer " + next(tokens)})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req) as resp:
            data = json.load(resp)
        ms = (time.perf_counter() - t0) * 1e3
        return ms, data["cards"][0]["detail"]

    for label in ("all notes new", "same hooks again, notes cached"):
        ms = []
        used = 0
        for b in bodies:
            t, detail = post(b)
            ms.append(t)
            used += "clinical notes." in detail.split("Modalities used:")[1].split("\n")[0]
        print("%-32s %s  (notes used on %d/%d cards)" % (label + ":", stats(ms), used, n))
        time.sleep(1)  # let the background cache writes land


if __name__ == "__main__":
    main()
