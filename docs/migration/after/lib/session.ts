// getSession(): who is signed in. The gateway verified the session before the request got
// here and wrote the identity into X-User-* headers; it removes every client-sent X-User-*
// header on every route, so these can only come from it, as long as the app is reachable
// through the gateway alone (next start -H 127.0.0.1).
import 'server-only'
import { headers } from 'next/headers'

export type Session = { sub: string; email: string; name: string; roles: string[] }

export async function getSession(): Promise<Session | null> {
  const h = await headers()
  const sub = h.get('x-user-id')
  if (sub === null) return null // a public or optional route, without a session
  return {
    sub: decode(sub),
    email: decode(h.get('x-user-email') ?? ''),
    name: decode(h.get('x-user-name') ?? ''),
    roles: (h.get('x-user-roles') ?? '').split(',').filter(Boolean).map(decode),
  }
}

// For pages behind `auth: required`: the gateway never lets a request without a session
// through, so a missing identity means the app was reached around the gateway.
export async function requireSession(): Promise<Session> {
  const session = await getSession()
  if (!session) throw new Error('no X-User-Id header: is the app reachable around the gateway?')
  return session
}

// Printable ASCII arrives as it is; any other value the gateway percent-encodes as UTF-8,
// '%' included ("Zoë" arrives as "Zo%C3%AB"). A plain-ASCII value that merely looks
// encoded ("%41") cannot be told apart: lib/assertion.ts has no such ambiguity.
function decode(value: string): string {
  if (!value.includes('%')) return value
  try {
    return decodeURIComponent(value)
  } catch {
    return value
  }
}
