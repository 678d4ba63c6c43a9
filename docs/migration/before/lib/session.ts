// getSession(): who is signed in, for Server Components, Server Actions and Route Handlers.
// Reads the access cookie that middleware.ts has already checked (and refreshed if needed).
import 'server-only'
import { cookies } from 'next/headers'
import { ACCESS_COOKIE, verify, type Claims } from './tokens'

export type Session = Claims

export async function getSession(): Promise<Session | null> {
  const token = (await cookies()).get(ACCESS_COOKIE)?.value
  return token ? verify(token, 'access') : null
}
