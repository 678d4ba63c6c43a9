"""Sign-in with OpenID Connect (SPEC 7.4): the gateway as a relying party.

    relying.py      the per-snapshot object: paths, redirect_uri, client auth
    home.py         process-wide: discovery and keys per provider, the client,
                    background retries while a provider is down
    discovery.py    discovery document and JWKS: checked, cached, refetched
    verify.py       ID and logout tokens, with PyJWT and the provider's keys
    http.py         calls to the provider, each within `timeout`
    flow.py         start (PKCE, state, nonce) and callback
    claims.py       provider claims -> gateway claims; who is admitted
    links.py        the provider link of a session; refresh at the provider
    backchannel.py  Back-Channel Logout 1.0
    logout.py       RP-initiated logout
    answers.py      what a person sees when a sign-in fails
    routes.py       dispatch of the paths

For a test harness: start the gateway with `login.providers` (SPEC 7.4 keys);
register `{scheme}://{Host}{login.path}/{id}/callback` as the redirect URI,
`{scheme}://{Host}{login.path}` as the post-logout redirect URI and
`{scheme}://{Host}{login.path}/{id}/backchannel-logout` as the back-channel
logout URI. The browser-binding cookie is `gateway_oidc` (Path:
`{login.path}/{id}`, the start and its callback). A provider on http:// is
accepted on loopback hosts only.

Nothing here is imported by this package's `__init__`: runtime.py imports
relying.py, and the modules with handlers import runtime.py.
"""
