"""CRDT benchmark: our counter deltas against the same writes as Yrs (pycrdt) updates.

Prints one JSON object. Both sides run in the same process and the same run, so the ratios
compare like with like on whatever machine this is.

- apply: counter deltas merged through ``Replica.merge`` (already decoded, as the engine
  holds them after opening an entry) vs ``Doc.apply_update`` of the equivalent ``Map`` write
  (Yrs must decode; we also report our decode+merge for a fair reading).
- bytes per write: the CBOR of one counter write's delta group with the writer implicit
  (as in a feed entry) vs the Yrs update of the same key's transaction.
- full state: 10,000 SKUs each written by 20 replicas, both encodings.
"""

from __future__ import annotations

import argparse
import json
import time

import cbor2
import pycrdt

from crdt_types import DeltaGroup, Replica, Timestamp

BRANCH = "b01"
NOW_MS = 1_800_000_000_000  # a 2027 wall clock: stamps at their real encoded size


def sku(i: int) -> str:
    return f"sku-{i:05d}"


def our_deltas(writers: int, skus: int) -> list[DeltaGroup]:
    out = []
    for w in range(1, writers + 1):
        replica = Replica(w)
        for i in range(skus):
            with replica.transaction(Timestamp(NOW_MS + i)) as tx:
                tx.add(("stock", BRANCH, sku(i)), -(i % 7 + 1))
            out.append(tx.delta)
    return out


def yrs_updates(writers: int, skus: int) -> list[bytes]:
    out = []
    for w in range(1, writers + 1):
        doc = pycrdt.Doc(client_id=w)
        stock = doc.get("stock", type=pycrdt.Map)
        for i in range(skus):
            before = doc.get_state()
            stock[f"{BRANCH}/{sku(i)}"] = -(i % 7 + 1)
            out.append(doc.get_update(before))
    return out


def best_rate(count: int, run, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        elapsed = run()
        best = min(best, elapsed)
    return count / best


def bench_apply(writers: int, skus: int, repeat: int) -> dict:
    deltas = our_deltas(writers, skus)
    wires = [cbor2.dumps(d.to_wire()) for d in deltas]
    writer_of = [d.writer for d in deltas]
    updates = yrs_updates(writers, skus)

    def ours() -> float:
        replica = Replica(0)
        merge = replica.merge
        start = time.perf_counter()
        for delta in deltas:
            merge(delta)
        return time.perf_counter() - start

    def ours_decoded() -> float:
        replica = Replica(0)
        start = time.perf_counter()
        for wire, writer in zip(wires, writer_of):
            replica.merge(DeltaGroup.from_wire(cbor2.loads(wire), writer))
        return time.perf_counter() - start

    def yrs() -> float:
        doc = pycrdt.Doc(client_id=0)
        apply = doc.apply_update
        start = time.perf_counter()
        for update in updates:
            apply(update)
        return time.perf_counter() - start

    return {
        "writes": len(deltas),
        "ours_merge_per_s": round(best_rate(len(deltas), ours, repeat)),
        "ours_decode_and_merge_per_s": round(best_rate(len(deltas), ours_decoded, repeat)),
        "yrs_apply_update_per_s": round(best_rate(len(updates), yrs, repeat)),
    }


def bench_bytes_per_write() -> dict:
    replica = Replica(7)
    with replica.transaction(Timestamp(NOW_MS)) as tx:
        tx.add(("stock", BRANCH, sku(42)), -2)
    ours = len(cbor2.dumps(tx.delta.to_wire()))
    ours_explicit = len(cbor2.dumps(tx.delta.to_wire(implicit_writer=False)))
    doc = pycrdt.Doc(client_id=7)
    stock = doc.get("stock", type=pycrdt.Map)
    before = doc.get_state()
    stock[f"{BRANCH}/{sku(42)}"] = -2
    yrs = len(doc.get_update(before))
    return {"ours_bytes": ours, "ours_bytes_explicit_writer": ours_explicit, "yrs_bytes": yrs}


def bench_full_state(writers: int, skus: int) -> dict:
    replica = Replica(0)
    for delta in our_deltas(writers, skus):
        replica.merge(delta)
    doc = pycrdt.Doc(client_id=0)
    for update in yrs_updates(writers, skus):
        doc.apply_update(update)
    return {
        "skus": skus,
        "writers": writers,
        "ours_bytes": len(cbor2.dumps(replica.to_wire())),
        "yrs_bytes": len(doc.get_update()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    writers, skus = (4, 200) if args.quick else (20, 1_000)
    full_writers, full_skus = (4, 500) if args.quick else (20, 10_000)
    apply = bench_apply(writers, skus, repeat=3)
    per_write = bench_bytes_per_write()
    full = bench_full_state(full_writers, full_skus)
    result = {
        "benchmark": "crdt",
        "apply": apply,
        "bytes_per_counter_write": per_write,
        "full_state": full,
        "ratios": {
            "apply_vs_yrs": round(apply["ours_merge_per_s"] / apply["yrs_apply_update_per_s"], 3),
            "apply_with_decode_vs_yrs": round(apply["ours_decode_and_merge_per_s"] / apply["yrs_apply_update_per_s"], 3),
            "bytes_per_write_vs_yrs": round(per_write["ours_bytes"] / per_write["yrs_bytes"], 3),
            "full_state_bytes_vs_yrs": round(full["ours_bytes"] / full["yrs_bytes"], 3),
        },
        "goals": {"apply_vs_yrs": ">= 2", "bytes_per_write_vs_yrs": "<= 1"},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
