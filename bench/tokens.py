"""L402 token checks per second on one core, as the gateway's chunk handler makes them.

    python -m bench.tokens [--reps 7] [--checks 20000] [--no-write]

- token_checks_repeat: the same Authorization value checked again and again (a download
  presents one token for every chunk of the range it bought), through TokenService.verify
  and its cache of verified credentials; baseline: the full check of that value without the
  cache (l402.verify_authorization, what every chunk cost before the cache).
- token_checks_fresh: a different token every time (every check misses the cache and is
  stored in it); baseline: only the hashing such a check cannot skip (the root key, the
  macaroon's HMAC chain and SHA-256 of the preimage, with hashlib's one-shot calls), so the
  ratio says how much the parsing and checking around the crypto costs.

Rates are per second of CPU time (time.thread_time), best of ``--reps`` turns, the cases in
turns. Writes both figures into bench/results.json,
keeping the figures other benches wrote there.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from typing import Any, cast

import l402
from bench.crypto import RESULTS_PATH, merge_results
from gateway.billing.tokens import TokenService
from l402.macaroon import to_base64
from l402.mint import ROOT_KEY_DOMAIN

FILE_ID = "mrswmz3infvgw3dnnzxxa4lsom"
NOW = 1_700_000_000


class _Clock:
    def __call__(self) -> float:
        return NOW


def make_tokens(secret: bytes, n: int) -> list[tuple[str, bytes, bytes]]:
    """``n`` paid tokens for chunks 0-63: (Authorization value, preimage, identifier)."""
    out = []
    for _ in range(n):
        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).digest()
        macaroon = l402.mint_token(secret, payment_hash, FILE_ID, 0, 63, NOW + 3600)
        out.append((f"L402 {to_base64(macaroon)}:{preimage.hex()}", preimage, macaroon.identifier))
    return out


def service(secret: bytes) -> TokenService:
    # verify() touches neither the database nor settlement.
    return TokenService(secret, cast(Any, None), cast(Any, None), 3600, _Clock())


def per_second(op: Callable[[int], object], calls: int) -> float:
    """Calls per second of this thread's CPU time: on a shared machine, time spent waiting
    for a core is not the check's cost."""
    started = time.thread_time()
    for i in range(calls):
        op(i)
    return calls / (time.thread_time() - started)


def main(reps: int, checks: int, write: bool) -> None:
    secret = os.urandom(32)
    tokens = make_tokens(secret, checks)
    repeated = [tokens[0][0]]
    cached = service(secret)
    caveats = [raw for raw in l402.macaroon.from_base64(tokens[0][0][5:].split(":")[0]).caveats]

    def crypto_floor(i: int) -> object:
        _, preimage, identifier = tokens[i]
        key = hmac.digest(secret, ROOT_KEY_DOMAIN + identifier, "sha256")
        sig = hmac.digest(
            hmac.digest(b"macaroons-key-generator", key, "sha256"), identifier, "sha256"
        )
        for caveat in caveats:
            sig = hmac.digest(sig, caveat, "sha256")
        return hashlib.sha256(preimage).digest(), sig

    fresh_service = [service(secret)]

    def fresh(i: int) -> object:
        return fresh_service[0].verify([tokens[i][0]], FILE_ID, i % 64)

    cases: dict[str, Callable[[int], object]] = {
        "repeat, cached": lambda i: cached.verify(repeated, FILE_ID, i % 64),
        "repeat, uncached": lambda i: l402.verify_authorization(
            repeated, secret, FILE_ID, i % 64, NOW
        ),
        "fresh": fresh,
        "crypto floor": crypto_floor,
    }
    best = dict.fromkeys(cases, 0.0)
    for _ in range(reps):
        for name, op in cases.items():  # in turns: a burst of load hits every case alike
            fresh_service[0] = service(secret)  # an empty cache for every fresh turn
            best[name] = max(best[name], per_second(op, checks))
    print(f"L402 token checks on one core, best of {reps} x {checks}:")
    for name, value in best.items():
        print(f"  {name:18} {value:10,.0f} /s")
    repeat, fresh_rate = best["repeat, cached"], best["fresh"]
    uncached, floor = best["repeat, uncached"], best["crypto floor"]
    print(f"  repeated: {repeat:,.0f}/s (target 50 000), {repeat / uncached:.1f}x uncached")
    print(f"  fresh:    {fresh_rate:,.0f}/s (target 20 000), {fresh_rate / floor:.2f}x the crypto")
    if write:
        figures = {
            "token_checks_repeat": {
                "value": round(repeat),
                "baseline": round(best["repeat, uncached"]),
                "ratio": round(repeat / best["repeat, uncached"], 3),
                "unit": "checks/s",
            },
            "token_checks_fresh": {
                "value": round(fresh_rate),
                "baseline": round(best["crypto floor"]),
                "ratio": round(fresh_rate / best["crypto floor"], 3),
                "unit": "checks/s",
            },
        }
        merge_results(RESULTS_PATH, figures)
        print(f"wrote {', '.join(figures)} to {RESULTS_PATH}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--no-write", action="store_true", help="do not touch results.json")
    args = parser.parse_args()
    main(args.reps, args.checks, not args.no_write)
