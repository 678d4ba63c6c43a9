import { cookies } from 'next/headers'
import { NextResponse } from 'next/server'
import { ACCESS_COOKIE, REFRESH_COOKIE } from '../../../lib/tokens'

// Forgets the cookies in this browser. The tokens themselves stay valid until they expire:
// nothing here can revoke them.
export async function POST(request: Request) {
  const jar = await cookies()
  jar.delete(ACCESS_COOKIE)
  jar.delete(REFRESH_COOKIE)
  return NextResponse.redirect(new URL('/login', request.url), 303)
}
