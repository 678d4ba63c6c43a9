// The app's own JWTs, signed and verified with jose. Used by middleware.ts (Edge runtime)
// and by the login route, so it imports nothing that needs Node.js.
import { SignJWT, jwtVerify, type JWTPayload } from 'jose'

export const ACCESS_COOKIE = 'app_session'
export const REFRESH_COOKIE = 'app_refresh'
export const ACCESS_TTL = 15 * 60 // seconds
export const REFRESH_TTL = 14 * 24 * 60 * 60

export const cookieOptions = {
  httpOnly: true,
  secure: process.env.NODE_ENV === 'production',
  sameSite: 'lax' as const,
  path: '/',
}

const ISSUER = 'notes-app'
const AUDIENCE = 'notes-app'
const secret = new TextEncoder().encode(process.env.JWT_SECRET)

export type Claims = { sub: string; email: string; name: string; roles: string[] }

export function signAccess(user: Claims): Promise<string> {
  return sign(user, {}, '15m')
}

export function signRefresh(user: Claims): Promise<string> {
  return sign(user, { kind: 'refresh' }, '14d')
}

function sign(user: Claims, extra: JWTPayload, expiresIn: string): Promise<string> {
  return new SignJWT({ email: user.email, name: user.name, roles: user.roles, ...extra })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(user.sub)
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(secret)
}

// null for a missing, expired, forged or wrong-kind token
export async function verify(token: string, kind: 'access' | 'refresh'): Promise<Claims | null> {
  try {
    const { payload } = await jwtVerify(token, secret, {
      algorithms: ['HS256'],
      issuer: ISSUER,
      audience: AUDIENCE,
      clockTolerance: 30,
    })
    if ((payload.kind === 'refresh') !== (kind === 'refresh')) return null
    return {
      sub: String(payload.sub),
      email: String(payload.email ?? ''),
      name: String(payload.name ?? ''),
      roles: Array.isArray(payload.roles) ? payload.roles.map(String) : [],
    }
  } catch {
    return null
  }
}
