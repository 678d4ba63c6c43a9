import { cookies } from 'next/headers'
import { NextResponse } from 'next/server'
import {
  ACCESS_COOKIE,
  ACCESS_TTL,
  REFRESH_COOKIE,
  REFRESH_TTL,
  cookieOptions,
  signAccess,
  signRefresh,
} from '../../../lib/tokens'
import { checkPassword } from '../../../lib/users'

export async function POST(request: Request) {
  const form = await request.formData()
  const user = await checkPassword(String(form.get('username') ?? ''), String(form.get('password') ?? ''))
  if (!user) return NextResponse.redirect(new URL('/login?error=1', request.url), 303)

  const jar = await cookies()
  jar.set(ACCESS_COOKIE, await signAccess(user), { ...cookieOptions, maxAge: ACCESS_TTL })
  jar.set(REFRESH_COOKIE, await signRefresh(user), { ...cookieOptions, maxAge: REFRESH_TTL })
  return NextResponse.redirect(new URL(safeNext(form.get('next')), request.url), 303)
}

// only a path on this site: never //evil.com or /\evil.com
function safeNext(value: FormDataEntryValue | null): string {
  const next = typeof value === 'string' ? value : ''
  return next.startsWith('/') && !next.startsWith('//') && !next.includes('\\') ? next : '/dashboard'
}
