// Optional: verify the identity instead of trusting the network. With `identity_assertion`
// configured the gateway adds X-User-Assertion, a JWT signed with its private key, valid for
// 30 s and bound to the request's method and path; its public keys are served as JWKS on
// the gateway's admin listener (same pod or host: 127.0.0.1:9090).
import 'server-only'
import { createRemoteJWKSet, jwtVerify } from 'jose'

const jwks = createRemoteJWKSet(
  new URL(process.env.GATEWAY_JWKS_URL ?? 'http://127.0.0.1:9090/.well-known/jwks.json'),
)

export type Asserted = { sub: string; email?: string; name?: string; roles: string[] }

export async function verifyAssertion(request: Request, path: string): Promise<Asserted | null> {
  const token = request.headers.get('x-user-assertion')
  if (!token) return null
  try {
    const { payload } = await jwtVerify(token, jwks, {
      algorithms: ['ES256', 'EdDSA'],
      issuer: 'notes-app', // tokens.issuer
      audience: 'notes-app', // tokens.audience
      requiredClaims: ['sub', 'iat', 'exp', 'typ', 'method', 'path'],
    })
    if (payload.typ !== 'assertion' || payload.method !== request.method || payload.path !== path) {
      return null // signed by the gateway, but for another request
    }
    return {
      sub: String(payload.sub),
      email: typeof payload.email === 'string' ? payload.email : undefined,
      name: typeof payload.name === 'string' ? payload.name : undefined,
      roles: Array.isArray(payload.roles) ? payload.roles.map(String) : [],
    }
  } catch {
    return null
  }
}
