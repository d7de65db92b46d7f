"""Chunk seal/open speed against raw XChaCha20-Poly1305 on the same 1 MiB chunk.

    python -m bench.crypto [--reps 15] [--mib-per-rep 16] [--no-write]

Prints, from one run, `seal_chunk` MiB/s beside raw AEAD encrypt MiB/s and `open_chunk`
beside raw AEAD decrypt (libsodium through PyNaCl's low-level bindings, the same calls the
format used before storage/aead.py), each the best of several repetitions, measured in turns so
that load from other processes hits all of them alike. For scale it also prints libsodium's own
speed, writing into one reused buffer (no allocation at all): the ceiling. Then the download
path's question: does handing `open` to worker threads (as the client does with
asyncio.to_thread) beat opening on the event loop?

Writes the figures `open_vs_aead` and `seal_vs_aead` into bench/results.json, keeping the
figures other benches wrote there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

from storage.crypto import (
    FORMAT_VERSION,
    NONCE_BYTES,
    chunk_associated_data,
    derive_keys,
    open_chunk,
    seal_chunk,
)

MIB = 1 << 20
RESULTS_PATH = Path(__file__).resolve().parent / "results.json"


def best_mibs(cases: dict[str, Callable[[], object]], reps: int, calls: int) -> dict[str, float]:
    """Best MiB/s of each 1-MiB operation over ``reps`` turns of ``calls`` calls each."""
    best = dict.fromkeys(cases, 0.0)
    for _ in range(reps):
        for name, op in cases.items():  # in turns: a burst of load hits every case alike
            started = time.perf_counter()
            for _ in range(calls):
                op()
            best[name] = max(best[name], calls / (time.perf_counter() - started))
    return best


async def _open_many(op: Callable[[], object], chunks: int, workers: int, threaded: bool) -> float:
    """MiB/s of ``chunks`` opens by ``workers`` tasks, inline or through asyncio.to_thread."""
    todo = iter(range(chunks))

    async def worker() -> None:
        for _ in todo:
            if threaded:
                await asyncio.to_thread(op)
            else:
                op()
                await asyncio.sleep(0)  # what an inline decrypt in a fetch task amounts to

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return chunks / (time.perf_counter() - started)


def merge_results(path: Path, figures: dict[str, dict[str, Any]]) -> None:
    """Add or replace ``figures`` in the JSON object at ``path``, keeping the other keys."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        current: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        current = {}
    current.update(figures)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # readers never see a half-written file


def main(reps: int, mib_per_rep: int, write: bool) -> None:
    file_id = os.urandom(16)
    keys = derive_keys(os.urandom(32), file_id)
    plaintext = os.urandom(MIB)
    index = 7
    ad = chunk_associated_data(file_id, index, False)
    sealed = seal_chunk(keys, file_id, index, False, plaintext)
    nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    assert open_chunk(keys, file_id, index, False, sealed) == plaintext

    cases: dict[str, Callable[[], object]] = {
        "raw encrypt": lambda: crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, ad, nonce, keys.chunk_key
        ),
        "seal_chunk": lambda: seal_chunk(keys, file_id, index, False, plaintext),
        "raw decrypt": lambda: crypto_aead_xchacha20poly1305_ietf_decrypt(
            body, ad, nonce, keys.chunk_key
        ),
        "open_chunk": lambda: open_chunk(keys, file_id, index, False, sealed),
    }
    try:  # the ceiling: the same libsodium calls, no allocation, nothing copied
        from nacl._sodium import ffi, lib
    except ImportError:  # pragma: no cover - PyNaCl moved its internals; skip the ceiling
        pass
    else:
        scratch = ffi.new("unsigned char[]", len(sealed))
        src_pt, src_ct = ffi.from_buffer(plaintext), ffi.from_buffer(body)
        cases["libsodium encrypt, reused buffer"] = lambda: (
            lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
                scratch, ffi.NULL, src_pt, MIB, ad, len(ad), ffi.NULL, nonce, keys.chunk_key
            )
        )
        cases["libsodium decrypt, reused buffer"] = lambda: (
            lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
                scratch, ffi.NULL, ffi.NULL, src_ct, len(body), ad, len(ad), nonce, keys.chunk_key
            )
        )
    r = best_mibs(cases, reps, mib_per_rep)
    seal_ratio = r["seal_chunk"] / r["raw encrypt"]
    open_ratio = r["open_chunk"] / r["raw decrypt"]
    print(f"1 MiB chunk (format v{FORMAT_VERSION}), best of {reps} x {mib_per_rep} calls:")
    print(f"  raw AEAD encrypt  {r['raw encrypt']:8.0f} MiB/s")
    print(f"  seal_chunk        {r['seal_chunk']:8.0f} MiB/s   {seal_ratio:.2f}x raw (target 0.6)")
    print(f"  raw AEAD decrypt  {r['raw decrypt']:8.0f} MiB/s")
    print(f"  open_chunk        {r['open_chunk']:8.0f} MiB/s   {open_ratio:.2f}x raw (target 0.9)")
    for what in ("encrypt", "decrypt"):
        ceiling = r.get(f"libsodium {what}, reused buffer")
        if ceiling:
            op = "seal_chunk" if what == "encrypt" else "open_chunk"
            print(
                f"  libsodium {what}, no allocation (ceiling) {ceiling:6.0f} MiB/s; "
                f"{op} reaches {r[op] / ceiling:.2f} of it"
            )

    def open_one() -> object:
        return open_chunk(keys, file_id, index, False, sealed)

    chunks = 8 * mib_per_rep
    best: dict[str, float] = {}
    for _ in range(max(1, reps // 5)):
        for name, workers, threaded in (("inline", 4, False), ("to_thread", 4, True)):
            mibs = asyncio.run(_open_many(open_one, chunks, workers, threaded))
            best[name] = max(best.get(name, 0.0), mibs)
    print(f"open_chunk from 4 async tasks, {os.cpu_count()} cores, best of {max(1, reps // 5)}:")
    print(f"  on the event loop {best['inline']:8.0f} MiB/s")
    print(
        f"  asyncio.to_thread {best['to_thread']:8.0f} MiB/s   "
        f"{best['to_thread'] / best['inline']:.2f}x inline"
    )

    if write:
        merge_results(
            RESULTS_PATH,
            {
                "open_vs_aead": {
                    "value": round(r["open_chunk"], 1),
                    "baseline": round(r["raw decrypt"], 1),
                    "ratio": round(open_ratio, 3),
                    "unit": "MiB/s",
                },
                "seal_vs_aead": {
                    "value": round(r["seal_chunk"], 1),
                    "baseline": round(r["raw encrypt"], 1),
                    "ratio": round(seal_ratio, 3),
                    "unit": "MiB/s",
                },
            },
        )
        print(f"wrote open_vs_aead, seal_vs_aead to {RESULTS_PATH}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=15, help="turns per case (best is kept)")
    parser.add_argument("--mib-per-rep", type=int, default=16, help="1 MiB calls per turn")
    parser.add_argument("--no-write", action="store_true", help="do not touch results.json")
    args = parser.parse_args()
    main(args.reps, args.mib_per_rep, not args.no_write)
