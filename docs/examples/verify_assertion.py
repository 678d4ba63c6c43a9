"""An upstream verifying the gateway's X-User-Assertion with PyJWT: trust a signature, not the network."""

import os

import jwt

JWKS = jwt.PyJWKClient(os.environ.get("GATEWAY_JWKS_URL", "http://127.0.0.1:9090/.well-known/jwks.json"))


def verified_user(method: str, raw_path: str, assertion: str) -> dict:
    key = JWKS.get_signing_key_from_jwt(assertion).key  # picked by the token's kid, cached
    claims = jwt.decode(assertion, key, algorithms=["ES256", "EdDSA"], audience="upstream", issuer="gateway")
    if claims["typ"] != "assertion" or claims["method"] != method or claims["path"] != raw_path:
        raise jwt.InvalidTokenError("this assertion was issued for another request")
    return claims  # sub, email, roles, ... as the gateway verified them
