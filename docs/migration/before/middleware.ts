// Runs before every matched request: checks the access cookie, refreshes it from the
// refresh cookie when it has expired, sends strangers to /login, enforces the admin role.
import { NextResponse, type NextRequest } from 'next/server'
import {
  ACCESS_COOKIE,
  ACCESS_TTL,
  REFRESH_COOKIE,
  REFRESH_TTL,
  cookieOptions,
  signAccess,
  signRefresh,
  verify,
  type Claims,
} from './lib/tokens'

const PUBLIC_PATHS = new Set(['/', '/login', '/api/login', '/api/health'])

export async function middleware(request: NextRequest) {
  const { pathname, search } = request.nextUrl
  if (PUBLIC_PATHS.has(pathname)) return NextResponse.next()

  let user: Claims | null = await fromCookie(request, ACCESS_COOKIE, 'access')
  let fresh: { access: string; refresh: string } | null = null
  if (!user) {
    user = await fromCookie(request, REFRESH_COOKIE, 'refresh')
    if (user) fresh = { access: await signAccess(user), refresh: await signRefresh(user) }
  }

  if (!user) {
    if (pathname.startsWith('/api/')) {
      return NextResponse.json({ error: 'unauthorized' }, { status: 401 })
    }
    const login = new URL('/login', request.url)
    login.searchParams.set('next', pathname + search)
    return NextResponse.redirect(login)
  }
  if (pathname.startsWith('/admin') && !user.roles.includes('admin')) {
    return new NextResponse('Forbidden', { status: 403 })
  }
  if (!fresh) return NextResponse.next()

  // The page rendered for this very request must see the new access token too.
  request.cookies.set(ACCESS_COOKIE, fresh.access)
  const response = NextResponse.next({ request })
  response.cookies.set(ACCESS_COOKIE, fresh.access, { ...cookieOptions, maxAge: ACCESS_TTL })
  response.cookies.set(REFRESH_COOKIE, fresh.refresh, { ...cookieOptions, maxAge: REFRESH_TTL })
  return response
}

async function fromCookie(request: NextRequest, name: string, kind: 'access' | 'refresh') {
  const token = request.cookies.get(name)?.value
  return token ? verify(token, kind) : null
}

export const config = {
  // everything but the build output and the favicon
  matcher: ['/((?!_next/static|_next/image|favicon.ico).*)'],
}
