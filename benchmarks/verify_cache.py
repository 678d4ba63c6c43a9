"""What the verified-token cache in gateway/tokens.py buys, per algorithm.

For HS256, RS256 (2048-bit) and ES256 (P-256) keys made fresh with
`cryptography`, time on one valid access token:

  cached    Verifier.verify on the same token again and again (the cache-hit path,
            what every request of a session after its first takes)
  uncached  Verifier._decode on that token each time: the full PyJWT signature and
            claims check that a cache miss does

Each figure is the best of --repeats timed loops (time.perf_counter) of a fixed
number of calls, so the run is bounded. Prints ops/s and the speed-up.

Usage: ./benchmarks/run verify-cache [--hit-iterations 200000] [--decode-iterations 2000]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.keys import KeySet, Secret, VerificationKey
from gateway.tokens import ACCESS, Principal, Verifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import access_claims

RESULTS = Path(__file__).resolve().parent / "results" / "verify_cache.json"


def key_sets() -> dict[str, KeySet]:
    secret = Secret(secrets.token_bytes(64))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "HS256": KeySet(
            algorithm="HS256",
            signing_key=secret,
            verification_keys=(VerificationKey(secret, "HS256"),),
        ),
        "RS256": KeySet(
            algorithm="RS256",
            signing_key=rsa_key,
            verification_keys=(VerificationKey(rsa_key.public_key(), "RS256"),),
        ),
        "ES256": KeySet(
            algorithm="ES256",
            signing_key=ec_key,
            verification_keys=(VerificationKey(ec_key.public_key(), "ES256"),),
        ),
    }


def mint(key_set: KeySet) -> str:
    claims = access_claims()
    key = key_set.signing_key
    signing: Any = key.reveal() if isinstance(key, Secret) else key
    return jwt.encode(claims, signing, algorithm=key_set.algorithm)


def best_rate(call: Callable[[], Principal], iterations: int, repeats: int) -> float:
    """Calls per second, from the fastest of `repeats` loops of `iterations` calls."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(iterations):
            call()
        best = min(best, time.perf_counter() - started)
    return iterations / best


def measure(
    algorithm: str, key_set: KeySet, hit_iterations: int, decode_iterations: int, repeats: int
) -> dict[str, Any]:
    token = mint(key_set)
    verifier = Verifier(key_set, issuer="gateway", audience="upstream", leeway=30)
    first = verifier.verify(token)  # a miss: decodes and fills the cache
    if first.subject != "bench-user" or verifier.verify(token) is not first:
        raise SystemExit(f"{algorithm}: the second verify did not come from the cache")
    uncached = Verifier(key_set, issuer="gateway", audience="upstream", leeway=30)
    if uncached._decode(token, ACCESS).subject != "bench-user":
        raise SystemExit(f"{algorithm}: _decode did not verify the token")

    hit_rate = best_rate(lambda: verifier.verify(token), hit_iterations, repeats)
    decode_rate = best_rate(lambda: uncached._decode(token, ACCESS), decode_iterations, repeats)
    return {
        "algorithm": algorithm,
        "cached_ops_per_s": round(hit_rate),
        "uncached_ops_per_s": round(decode_rate),
        "cached_us": round(1e6 / hit_rate, 3),
        "uncached_us": round(1e6 / decode_rate, 2),
        "speedup": round(hit_rate / decode_rate, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run verify-cache",
        description="Verifier.verify cache hits vs a full decode, for HS256, RS256 and ES256",
    )
    parser.add_argument("--hit-iterations", type=int, default=200_000, help="(200000)")
    parser.add_argument("--decode-iterations", type=int, default=2_000, help="(2000)")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many loops (5)")
    parser.add_argument("--json", default=str(RESULTS), help=f"results file ({RESULTS})")
    args = parser.parse_args(argv)
    if min(args.hit_iterations, args.decode_iterations, args.repeats) < 1:
        parser.error("iterations and repeats must be positive")

    rows = [
        measure(alg, ks, args.hit_iterations, args.decode_iterations, args.repeats)
        for alg, ks in key_sets().items()
    ]
    print(f"{'algorithm':<10} {'cached ops/s':>13} {'uncached ops/s':>15} {'speed-up':>9}")
    for r in rows:
        print(
            f"{r['algorithm']:<10} {r['cached_ops_per_s']:>13,} {r['uncached_ops_per_s']:>15,}"
            f" {r['speedup']:>8.0f}x"
        )
    print(
        "\ncached: Verifier.verify on a token already in the cache;"
        " uncached: Verifier._decode (PyJWT signature + claims check) each time."
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": vars(args) | {"python": sys.version.split()[0]},
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
